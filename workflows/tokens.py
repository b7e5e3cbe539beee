"""Token estimates and the prompt-cache minimum per model.

The estimate is the usual ~4 characters per token heuristic: deterministic, cheap, and close enough
to decide whether a prefix can be cached or to show a cost estimate labelled as such. Real counts
come from the provider's `usage`.
"""

from __future__ import annotations

import math
import re

# Anthropic's documented minimum cacheable prompt lengths; a shorter prefix marked with
# cache_control is silently not cached. Claude Sonnet 4.6 is listed at 1024 by Anthropic's table,
# but third-party tables and a reported measurement (anthropic-sdk-python#1194) put it at 2048;
# we take the larger so we never claim a saving that does not happen.
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
    "claude-sonnet-4-6": 2048,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
UNKNOWN_MODEL_MIN_CACHEABLE = 4096

# A dated snapshot ("claude-sonnet-4-5-20250929") or "-latest" belongs to its family; any other
# suffix ("claude-opus-4-7") is a different model and must not inherit "claude-opus-4".
_SNAPSHOT = re.compile(r"^(?P<family>.+?)(?:-\d{8}|-latest)?$")


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters; 0 for empty text, at least 1 otherwise."""
    return math.ceil(len(text) / 4) if text else 0


def model_family(model: str) -> str:
    """`claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5` (the key of per-model tables)."""
    family = _SNAPSHOT.match(model.strip().lower())
    return family.group("family") if family else model


def min_cacheable_tokens(model: str) -> int:
    return MIN_CACHEABLE_TOKENS.get(model_family(model), UNKNOWN_MODEL_MIN_CACHEABLE)
