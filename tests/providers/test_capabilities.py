"""What each provider can do, read from the settings without making the provider or importing the SDK."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import providers
from providers.offline import OfflineProvider
from settings import Settings
from workflows.calls import ProviderCapabilities
from workflows.errors import ConfigError


def claude(key: str | None = "sk-test") -> Settings:
    # The key given (its alias) wins over the environment's.
    return Settings(ANTHROPIC_API_KEY=key, provider="anthropic")  # type: ignore[call-arg]


def test_claude_counts_caches_batches_reads_documents_and_uploads_files():
    assert providers.provider_capabilities(claude()) == ProviderCapabilities(
        counts_tokens=True, caches_prompts=True, batches_api=True, reads_documents=True, files_api=True)


def test_the_offline_provider_can_do_none_of_those():
    assert providers.provider_capabilities(Settings(provider="offline")) == ProviderCapabilities()
    assert OfflineProvider.capabilities == ProviderCapabilities()


def test_without_a_key_claude_cannot_count_tokens():
    assert not providers.provider_capabilities(claude(key=None)).counts_tokens
    assert providers.provider_capabilities(claude(key=None)).batches_api


def test_the_anthropic_class_declares_what_the_settings_say():
    from providers.anthropic_provider import AnthropicProvider  # the SDK: only this test needs it

    assert AnthropicProvider.capabilities == providers.provider_capabilities(claude())
    assert providers.get_provider(claude()).capabilities == providers.provider_capabilities(claude())


@pytest.mark.integration  # a fresh interpreter
def test_reading_capabilities_neither_imports_the_sdk_nor_makes_a_provider():
    code = textwrap.dedent("""
        import sys
        import providers
        from settings import Settings
        made = []
        providers._anthropic = lambda *args: made.append(args)
        caps = providers.provider_capabilities(Settings(ANTHROPIC_API_KEY="sk-test", provider="anthropic"))
        assert caps.batches_api and not made, made
        assert "anthropic" not in sys.modules and "providers.anthropic_provider" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_offline_provider_refuses_to_size_a_batch_entry_naming_the_fix():
    from workflows.calls import CallRequest

    with pytest.raises(ConfigError, match="CHORUS_PROVIDER=anthropic"):
        OfflineProvider().entry_size("a-0", CallRequest(model="claude-haiku-4-5", system="", user_blocks=("x",)))
