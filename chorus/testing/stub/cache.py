"""Prompt-cache emulation for the stub, following Anthropic's documented rules.

* The cacheable prefix is everything up to and including the last block marked `cache_control`
  (system blocks first, then the message blocks in order). Only that exact prefix is looked up.
* A prefix shorter than the model's minimum (`workflows.tokens.min_cacheable_tokens`) is silently
  not cached: no write, no read, all of it billed as plain input.
* A new entry becomes readable only once the response that wrote it *begins*; requests that
  arrive before then miss and pay a cache write of their own (so N calls sent at once all miss).
* An entry lives `ttl` (5 minutes by default, or `"ttl": "1h"`) after its last use; a hit
  refreshes it.

Usage is reported the way Anthropic reports it: `input_tokens` counts only what comes after the
breakpoint, plus `cache_creation_input_tokens` (with its `cache_creation` split by TTL) and
`cache_read_input_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflows.tokens import estimate_tokens, min_cacheable_tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


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


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def find_prefix(body: dict[str, Any]) -> Prefix | None:
    """The cacheable prefix of a Messages request, or None when nothing is marked."""
    ordered = _blocks(body.get("system", ""))
    for message in body.get("messages", []):
        ordered += [dict(b, _role=message.get("role")) for b in _blocks(message.get("content"))]
    marked = [i for i, b in enumerate(ordered) if b.get("cache_control")]
    if not marked:
        return None
    last = marked[-1]
    control = ordered[last]["cache_control"]
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise CacheRequestError("cache_control: type must be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise CacheRequestError("cache_control.ttl: Input should be '5m' or '1h'")
    head = [{k: v for k, v in b.items() if k != "cache_control"} for b in ordered[: last + 1]]
    key = hashlib.sha256(json.dumps([body.get("model"), head], sort_keys=True).encode()).hexdigest()
    tokens = sum(estimate_tokens(b.get("text", "")) for b in head)
    return Prefix(key, tokens, ttl)


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

    def lookup(self, body: dict[str, Any]) -> CacheUsage:
        """Called when the request arrives: a hit reads the prefix, a miss writes it."""
        prefix = find_prefix(body)
        if prefix is None or prefix.tokens < min_cacheable_tokens(str(body.get("model", ""))):
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
