"""Anthropic-style rate limits for the stub: its own token buckets, the `anthropic-ratelimit-*`
response headers, and 429 `rate_limit_error`s with `retry-after`.

Source: "Rate limits", https://platform.claude.com/docs/en/api/rate-limits, read 2026-12-02:

* "About rate limits" / "Rate limits": requests (RPM), input tokens (ITPM) and output tokens
  (OTPM) per minute, each measured with the *token bucket algorithm*: capacity is continuously
  replenished up to the limit, rather than being reset at fixed intervals.
* "Cache-aware ITPM": `input_tokens` and `cache_creation_input_tokens` count towards ITPM;
  `cache_read_input_tokens` do not (for the current models). The stub knows at arrival whether a
  request reads its prefix from the cache, so a read is never charged.
* OTPM is estimated from `max_tokens` at the start of each request and adjusted at the end to the
  output tokens really used.
* Limits apply per model, and the page's tables pool some models: "Claude Opus 4.x (Opus 4.8, 4.7,
  4.6, 4.5 combined)", "Claude Sonnet 4.x (Sonnet 4.6 and 4.5 combined)", "Claude Fable 5.x"; every
  other model (Opus 5.5, Sonnet 5.5, Haiku 5.5, Opus 5, Sonnet 5, Haiku 4.5, ...) has a table of its
  own (the page as read on 2026-10-17 by a public digest of it). The stub pools buckets the same way
  (`POOLS`, `pool_of`).
* "Response headers": `retry-after` on a 429, and `anthropic-ratelimit-{requests,input-tokens,
  output-tokens,tokens}-{limit,remaining,reset}`, the reset an RFC 3339 time; the `tokens` headers
  show the most restrictive token limit at the moment.

Nothing here comes from chorus (`workflows.ratelimit`, `tasks.limiter`): the stub is the API that
chorus's limiter is checked against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chorus.testing.stub.faults import FaultMix

HEADER_NAMES = {"requests": "requests", "input_tokens": "input-tokens", "output_tokens": "output-tokens"}
UNITS = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
_DATED = re.compile(r"-(?:\d{8}|latest)$")
# The rate-limits page's combined tables; a model in none of them is a pool of its own. The retired
# Opus 4.1/4 and Sonnet 4 were in the same "4.x" tables while they were served.
POOLS: dict[str, tuple[str, ...]] = {
    "claude-opus-4": ("claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-opus-4-5", "claude-opus-4-1",
                      "claude-opus-4"),
    "claude-sonnet-4": ("claude-sonnet-4-6", "claude-sonnet-4-5", "claude-sonnet-4"),
    "claude-fable-5": ("claude-fable-5", "claude-fable-5-1", "claude-fable-5-2"),
}
_POOL_OF = {model: pool for pool, models in POOLS.items() for model in models}


def pool_of(model: str) -> str:
    """The bucket pool of a model: `claude-sonnet-4-6` and `claude-sonnet-4-5` share `claude-sonnet-4`;
    `claude-opus-5-5` is a pool of its own."""
    name = _DATED.sub("", model.strip().lower())
    return _POOL_OF.get(name, name)


@dataclass(frozen=True)
class StubLimits:
    """Per-minute limits of every pool; None = unlimited."""

    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None

    def per_minute(self) -> dict[str, float]:
        named = {"requests": self.rpm, "input_tokens": self.itpm, "output_tokens": self.otpm}
        return {k: float(v) for k, v in named.items() if v is not None}


class _Bucket:
    """Capacity `per_minute`, refilled continuously at per_minute/60 per second; starts full."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = per_minute
        self.level = per_minute
        self.at = now

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    def fill(self, now: float) -> float:
        self.level = min(self.per_minute, self.level + self.rate * max(0.0, now - self.at))
        self.at = max(self.at, now)
        return self.level

    def shortfall_s(self, cost: float, now: float) -> float:
        """Seconds until `cost` fits (0 = now). A cost above the capacity waits for a full bucket:
        a request bigger than the limit would otherwise never pass."""
        need = min(cost, self.per_minute) - self.fill(now)
        return max(0.0, need / self.rate)

    def until_full_s(self, now: float) -> float:
        return (self.per_minute - self.fill(now)) / self.rate


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]
    limited: str | None = None  # the dimension that refused the request
    message: str = ""


def _rfc3339(seconds_from_now: float, now_wall: float) -> str:
    when = dt.datetime.fromtimestamp(now_wall + seconds_from_now, dt.UTC).replace(microsecond=0)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class StubLimiter:
    def __init__(self, limits: StubLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._pools: dict[str, dict[str, _Bucket]] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.limits.per_minute())

    def _buckets(self, model: str, now: float) -> dict[str, _Bucket]:
        pool = pool_of(model)
        if pool not in self._pools:
            self._pools[pool] = {k: _Bucket(v, now) for k, v in self.limits.per_minute().items()}
        return self._pools[pool]

    def admit(self, model: str, input_tokens: int, max_tokens: int) -> Verdict:
        """Take one request, the ITPM-counted input (uncached input + cache writes, never cache reads)
        and `max_tokens` output tokens from the model's pool, all or nothing."""
        costs = {"requests": 1.0, "input_tokens": float(input_tokens), "output_tokens": float(max_tokens)}
        with self._lock:
            now = self.clock()
            buckets = self._buckets(model, now)
            waits = {name: b.shortfall_s(costs[name], now) for name, b in buckets.items()}
            refused = max(waits, key=lambda n: waits[n]) if waits and max(waits.values()) > 0 else None
            if refused is None:
                for name, b in buckets.items():
                    b.level -= min(costs[name], b.per_minute)
            headers = self._headers(buckets, now)
        if refused is None:
            return Verdict(True, headers)
        headers["retry-after"] = str(max(1, math.ceil(waits[refused])))
        message = (f"This request would exceed the rate limit for your organization of "
                   f"{buckets[refused].per_minute:g} {UNITS[refused]} per minute (stub). Wait for the time in "
                   f"the retry-after header, or lower the request rate.")
        return Verdict(False, headers, refused, message)

    def finish(self, model: str, output_tokens: int, max_tokens: int) -> None:
        """The response is done: the output tokens reserved but not used come back."""
        with self._lock:
            bucket = self._buckets(model, self.clock()).get("output_tokens")
            if bucket is not None:
                bucket.fill(self.clock())
                bucket.level = min(bucket.per_minute, bucket.level + max(0, max_tokens - output_tokens))

    def _headers(self, buckets: dict[str, _Bucket], now: float) -> dict[str, str]:
        wall = time.time()
        headers: dict[str, str] = {}
        tightest: tuple[float, _Bucket] | None = None
        for name, b in buckets.items():
            prefix = f"anthropic-ratelimit-{HEADER_NAMES[name]}"
            headers[f"{prefix}-limit"] = str(int(b.per_minute))
            headers[f"{prefix}-remaining"] = str(max(0, int(b.fill(now))))
            headers[f"{prefix}-reset"] = _rfc3339(b.until_full_s(now), wall)
            if name != "requests" and (tightest is None or b.level / b.per_minute < tightest[0]):
                tightest = (b.level / b.per_minute, b)
        if tightest is not None:
            b = tightest[1]
            headers["anthropic-ratelimit-tokens-limit"] = str(int(b.per_minute))
            headers["anthropic-ratelimit-tokens-remaining"] = str(max(0, int(b.level)))
            headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(b.until_full_s(now), wall)
        return headers


def add_reliability_options(parser: argparse.ArgumentParser) -> None:
    """The stub's fault-mix and rate-limit options (shared by `python -m chorus.testing.stub` and `chorus stub`)."""
    parser.add_argument("--fault", default="", metavar="MIX",
                        help="random faults, e.g. 429=0.2,529=0.05,500=0.05,hang=0.02 (shares of requests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault mix (same seed, same faults)")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a `hang` fault holds a request")
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry-after (s) of an injected 429")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute (token bucket, per model family)")
    parser.add_argument("--itpm", type=float, default=None,
                        help="input tokens per minute (uncached input + cache writes; cache reads are free)")
    parser.add_argument("--otpm", type=float, default=None, help="output tokens per minute (max_tokens up front)")


def reliability_from_args(args: argparse.Namespace) -> tuple[FaultMix | None, StubLimiter | None]:
    """Raises ValueError naming a bad option."""
    faults = None
    if args.fault:
        faults = FaultMix.parse(args.fault, seed=args.seed, hang_s=args.hang_s, retry_after_s=args.retry_after)
    for name in ("rpm", "itpm", "otpm"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value:g}")
    limits = StubLimits(args.rpm, args.itpm, args.otpm)
    return faults, (StubLimiter(limits) if limits.per_minute() else None)
