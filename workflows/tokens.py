"""Token estimates and the prompt-cache minimum per model (from the model registry).

The estimate is the usual ~4 characters per token heuristic: deterministic, cheap, and close enough
to decide whether a prefix can be cached or to show a cost estimate labelled as such. Real counts
come from the provider's `usage`. Models from Opus 4.7 on use a newer tokenizer that counts more
tokens for the same text; `estimate_tokens_for` scales by the registry's ratio for the model.
"""

from __future__ import annotations

import math

from workflows import registry
from workflows.calls import Attachment, CallRequest

# Anthropic's minimum cacheable prompt lengths, per model (workflows/models.toml); a shorter prefix
# marked with cache_control is silently not cached. Sonnet 4.6 is 2048 there, not the documented
# 1024, and models the caching guide does not list take 4096: never claim a saving that does not happen.
MIN_CACHEABLE_TOKENS: dict[str, int] = {m.id: m.min_cacheable_tokens for m in registry.all_models()}
UNKNOWN_MODEL_MIN_CACHEABLE = 4096


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters; 0 for empty text, at least 1 otherwise."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_tokens_for(text: str, model: str) -> int:
    """`estimate_tokens` in the model's own tokenizer (x1.35 for the newer tokenizer, the upper figure)."""
    info = registry.model_info(model)
    ratio = info.tokenizer_ratio if info else 1.0
    return math.ceil(estimate_tokens(text) * ratio)


def model_family(model: str) -> str:
    """`claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5` (the key of per-model tables).

    Not the rate-limit family: that is `workflows.registry.family`."""
    return registry.canonical_id(model)


def min_cacheable_tokens(model: str) -> int:
    info = registry.model_info(model)
    return info.min_cacheable_tokens if info else UNKNOWN_MODEL_MIN_CACHEABLE


# A document's text layer is counted at one token per 2 characters (the estimate above takes 4): a
# PDF page's text is a small share of its price next to the page image, and a document estimate must
# stay an upper bound on text that tokenizes densely (tables of digits, short words, non-Latin script).
DOCUMENT_CHARS_PER_TOKEN = 2


def attachment_tokens(attachment: Attachment, model: str) -> int:
    """Upper bound of what a natively read document costs in the model's tokenizer: its page or
    picture images (`image_tokens`, by Anthropic's documented rules) plus its text layer."""
    info = registry.model_info(model)
    ratio = info.tokenizer_ratio if info else 1.0
    text = math.ceil(len(attachment.text) / DOCUMENT_CHARS_PER_TOKEN * ratio) if attachment.text else 0
    return attachment.image_tokens + text


def request_tokens(request: CallRequest, *, prefix_only: bool = False) -> int:
    """Estimated prompt tokens of a request in its model's tokenizer: system, attachments and text
    blocks (with `prefix_only`, only what its cacheable prefix spans)."""
    if prefix_only:
        if request.prefix_blocks == 0:
            return 0
        request = request.prefix_request()
    blocks = request.user_blocks
    return (estimate_tokens_for(request.system, request.model)
            + sum(attachment_tokens(a, request.model) for a in request.attachments)
            + sum(estimate_tokens_for(b, request.model) for b in blocks))
