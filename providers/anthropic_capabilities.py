"""What Claude can do (`AnthropicProvider.capabilities`), in a module of its own: reading it must not
import the SDK (~2 s), and a submit decides lanes, caching and uploads before any call is made."""

from __future__ import annotations

from workflows.calls import ProviderCapabilities

ANTHROPIC_CAPABILITIES = ProviderCapabilities(counts_tokens=True, caches_prompts=True, batches_api=True,
                                              reads_documents=True, files_api=True)
