"""Prompt-cache emulation for the stub, written from Anthropic's prompt-caching guide.

Source: "Prompt caching", https://platform.claude.com/docs/en/build-with-claude/prompt-caching
(sections "How prompt caching works", "Cache limitations", "Understanding cache breakpoints",
"Tracking cache performance" and "Pricing"), read 2026-12-02. The rules the stub follows:

* The cacheable prefix is everything up to and including the block marked `cache_control` (the
  last one when several are marked), in the order the model reads the request: system, then the
  messages. A top-level `cache_control` ("automatic caching") puts the breakpoint on the last block.
  The entry's key is that exact content and the model: one character more is another prefix. A
  document or image block enters the key by the SHA-256 of its content (and its other fields), so the
  same PDF sent again, as base64 or by `file_id`, makes the same prefix.
* "Cache limitations": a prefix shorter than the model's *minimum cacheable prompt length* is not
  cached, and the request still succeeds: no write, no read, all of it billed as plain input.
  The per-model minimums are `MIN_CACHEABLE_TOKENS`, from the guide's table.
* "How prompt caching works": a prefix not found is processed and cached *once the response
  begins*; a request that arrives before then misses too and pays a write of its own, so N
  requests sent at once all miss.
* The entry lives 5 minutes (or 1 hour with `"ttl": "1h"`) after its last use; a hit refreshes it.
* "Tracking cache performance": `input_tokens` counts only what comes after the last breakpoint;
  `cache_creation_input_tokens` (split by TTL in `cache_creation`) and `cache_read_input_tokens`
  count the prefix.

Token counts come from the stub's own tokenizer (`chorus.testing.stub.tokenizer`), never from
chorus's estimate, and the minimums are the stub's own table, never chorus's registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chorus.testing.stub.tokenizer import MediaReader, segments

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}

# "Cache limitations", minimum cacheable prompt length (tokens), as the guide lists them. Claude
# Sonnet 4.6 is listed at 1,024: chorus's own registry takes 2,048 after a reported measurement
# (anthropic-sdk-python#1194); the stub follows the documentation, so a test can see the difference.
# Claude Opus 4.7 is 2,048 in the guide's table as summarized in July 2026 (an older digest says 4,096).
# The guide read lists no 5.5 model (nor Fable 5.1/5.2); until it does, each takes the figure of the
# model it succeeds (Haiku 4.5, Sonnet 5, Opus 5, Fable 5). That is the stub's guess, not chorus's:
# chorus's registry takes 4,096 for them, so a run on the stub shows what that caution costs.
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    "claude-haiku-5-5": 4096,
    "claude-sonnet-5-5": 1024,
    "claude-opus-5-5": 512,
    "claude-fable-5-2": 512,
    "claude-fable-5-1": 512,
    "claude-fable-5": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5": 1024,
    "claude-opus-4-8": 1024,
    "claude-opus-4-7": 2048,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
# A model the table does not list (the stub accepts any name) gets the common minimum.
DEFAULT_MIN_CACHEABLE = 1024

_DATED = re.compile(r"-(?:\d{8}|latest)$")


def min_cacheable(model: str) -> int:
    """The minimum cacheable prefix of a model, a dated snapshot ("...-20251001") as its model."""
    return MIN_CACHEABLE_TOKENS.get(_DATED.sub("", model.strip().lower()), DEFAULT_MIN_CACHEABLE)


class CacheRequestError(ValueError):
    """The request's cache_control is malformed (the server answers 400)."""


@dataclass(frozen=True)
class Prefix:
    key: str
    tokens: int
    ttl: str


@dataclass(frozen=True)
class CacheUsage:
    write_tokens: int = 0
    read_tokens: int = 0
    ttl: str = "5m"
    prefix: Prefix | None = None  # set when this request wrote (and must publish) an entry

    def usage_fields(self, prompt_tokens: int) -> dict[str, Any]:
        cached = self.write_tokens + self.read_tokens
        return {
            "input_tokens": max(0, prompt_tokens - cached),
            "cache_creation_input_tokens": self.write_tokens,
            "cache_read_input_tokens": self.read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.write_tokens if self.ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": self.write_tokens if self.ttl == "1h" else 0,
            },
        }


def _control(value: Any) -> str:
    """The TTL of a valid cache_control, or CacheRequestError."""
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise CacheRequestError("cache_control: type must be 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise CacheRequestError("cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _keyed(block: dict[str, Any], digest: str | None) -> dict[str, Any]:
    """A block as the cache key sees it: without its cache_control, and a media block's source as the
    digest of its content."""
    kept = {k: v for k, v in block.items() if k != "cache_control"}
    if digest is not None:
        kept["source"] = {"sha256": digest}
    return kept


def find_prefix(body: dict[str, Any], media: MediaReader | None = None) -> Prefix | None:
    """The cacheable prefix of a Messages request, or None when nothing is marked. `media` reads its
    document and image blocks (see `tokenizer.segments`)."""
    parts = list(segments(body, media))
    marked = [i for i, p in enumerate(parts) if p.block is not None and p.block.get("cache_control")]
    if marked:
        last = marked[-1]
        block = parts[last].block
        assert block is not None
        ttl = _control(block["cache_control"])
    elif body.get("cache_control"):
        ttl = _control(body["cache_control"])
        content = [i for i, p in enumerate(parts) if p.block is not None]
        if not content:
            return None
        last = content[-1]
    else:
        return None
    head = [(p.where, _keyed(p.block, p.digest) if p.block else None) for p in parts[: last + 1]]
    key = hashlib.sha256(json.dumps([body.get("model"), head], sort_keys=True).encode()).hexdigest()
    return Prefix(key, sum(p.tokens for p in parts[: last + 1]), ttl)


@dataclass
class _Entry:
    readable_at: float
    expires_at: float


class PromptCache:
    """Entries by prefix key; thread-safe (the stub answers on many threads). `clock` is for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def lookup(self, body: dict[str, Any], media: MediaReader | None = None) -> CacheUsage:
        """Called when the request arrives: a hit reads the prefix, a miss will write it. A lookup
        changes nothing but a hit's expiry (a request refused afterwards has written nothing)."""
        prefix = find_prefix(body, media)
        if prefix is None or prefix.tokens < min_cacheable(str(body.get("model", ""))):
            return CacheUsage()
        now = self.clock()
        with self._lock:
            entry = self._entries.get(prefix.key)
            if entry is not None and entry.readable_at <= now < entry.expires_at:
                entry.expires_at = max(entry.expires_at, now + TTL_SECONDS[prefix.ttl])
                return CacheUsage(read_tokens=prefix.tokens, ttl=prefix.ttl)
        return CacheUsage(write_tokens=prefix.tokens, ttl=prefix.ttl, prefix=prefix)

    def response_started(self, usage: CacheUsage) -> None:
        """The response of a writing request begins: its entry becomes readable from now."""
        if usage.prefix is None:
            return
        now = self.clock()
        with self._lock:
            entry = self._entries.get(usage.prefix.key)
            expires = now + TTL_SECONDS[usage.prefix.ttl]
            if entry is None or entry.expires_at <= now:
                self._entries[usage.prefix.key] = _Entry(readable_at=now, expires_at=expires)
            else:
                entry.readable_at = min(entry.readable_at, now)
                entry.expires_at = max(entry.expires_at, expires)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
