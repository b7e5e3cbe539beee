"""Anthropic-style rate limits for the stub: token buckets for requests, input tokens and output
tokens per minute, the `anthropic-ratelimit-*` response headers, and 429 `rate_limit_error`s.

Following Anthropic's description: the buckets refill continuously; output tokens are charged
`max_tokens` when a request starts and the unused part is given back when it ends; the `tokens`
headers show whichever of the input and output limits is most restrictive right now.
"""

from __future__ import annotations

import argparse
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chorus.testing.stub.faults import FaultMix
from workflows.ratelimit import (
    Level,
    Limit,
    QueueLimits,
    refill,
    retry_after_seconds,
    seconds_until_full,
    settle,
    take,
)

HEADER_NAMES = {"requests": "requests", "input_tokens": "input-tokens", "output_tokens": "output-tokens"}
UNITS = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}


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
    def __init__(self, limits: QueueLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = limits.buckets()
        self.clock = clock
        self._levels: dict[str, Level | None] = {name: None for name in self.buckets}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.buckets)

    def admit(self, input_tokens: int, max_tokens: int) -> Verdict:
        costs = {"requests": 1.0, "input_tokens": float(input_tokens), "output_tokens": float(max_tokens)}
        with self._lock:
            now = self.clock()
            decision = take(self.buckets, self._levels, costs, now)
            if decision.granted:
                self._levels.update(decision.levels)
                return Verdict(True, self._headers(now))
            refused = self._refused_by(now, costs)
            headers = self._headers(now)
        headers["retry-after"] = str(retry_after_seconds(decision.wait_s))
        unit = UNITS[refused]
        message = (f"This request would exceed the rate limit for your organization of "
                   f"{self.buckets[refused].per_minute:g} {unit} per minute (stub). Wait for the time in the "
                   f"retry-after header, or lower the request rate.")
        return Verdict(False, headers, refused, message)

    def finish(self, output_tokens: int, max_tokens: int) -> None:
        limit = self.buckets.get("output_tokens")
        if limit is None:
            return
        with self._lock:
            now = self.clock()
            self._levels["output_tokens"] = settle(limit, self._levels["output_tokens"],
                                                   max(0, max_tokens - output_tokens), now)

    def _refused_by(self, now: float, costs: dict[str, float]) -> str:
        worst, worst_wait = next(iter(self.buckets)), -1.0
        for name, limit in self.buckets.items():
            d = take({name: limit}, {name: self._levels[name]}, costs, now)
            if not d.granted and d.wait_s > worst_wait:
                worst, worst_wait = name, d.wait_s
        return worst

    def _headers(self, now: float) -> dict[str, str]:
        wall = time.time()
        headers: dict[str, str] = {}
        token_dims: list[tuple[float, str, Limit, float]] = []
        for name, limit in self.buckets.items():
            tokens = refill(limit, self._levels[name], now)
            prefix = f"anthropic-ratelimit-{HEADER_NAMES[name]}"
            headers[f"{prefix}-limit"] = str(int(limit.per_minute))
            headers[f"{prefix}-remaining"] = str(max(0, int(tokens)))
            headers[f"{prefix}-reset"] = _rfc3339(seconds_until_full(limit, tokens), wall)
            if name != "requests":
                token_dims.append((tokens / limit.capacity, name, limit, tokens))
        if token_dims:
            _, name, limit, tokens = min(token_dims)
            headers["anthropic-ratelimit-tokens-limit"] = str(int(limit.per_minute))
            headers["anthropic-ratelimit-tokens-remaining"] = str(max(0, int(tokens)))
            headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(seconds_until_full(limit, tokens), wall)
        return headers


def add_reliability_options(parser: argparse.ArgumentParser) -> None:
    """The stub's fault-mix and rate-limit options (shared by `python -m chorus.testing.stub` and `chorus stub`)."""
    parser.add_argument("--fault", default="", metavar="MIX",
                        help="random faults, e.g. 429=0.2,529=0.05,500=0.05,hang=0.02 (shares of requests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault mix (same seed, same faults)")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a `hang` fault holds a request")
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry-after (s) of an injected 429")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute (token bucket)")
    parser.add_argument("--itpm", type=float, default=None, help="input tokens per minute")
    parser.add_argument("--otpm", type=float, default=None, help="output tokens per minute")


def reliability_from_args(args: argparse.Namespace) -> tuple[FaultMix | None, StubLimiter | None]:
    """Raises ValueError naming a bad option."""
    faults = None
    if args.fault:
        faults = FaultMix.parse(args.fault, seed=args.seed, hang_s=args.hang_s, retry_after_s=args.retry_after)
    for name in ("rpm", "itpm", "otpm"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value:g}")
    limits = QueueLimits(args.rpm, args.itpm, args.otpm)
    return faults, (StubLimiter(limits) if limits.buckets() else None)
