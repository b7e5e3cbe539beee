"""Token-bucket math shared by chorus's limiter and the stub server. Pure: the caller passes the clock.

Anthropic's documented algorithm: each limit (requests, input tokens, output tokens per minute) is
a bucket whose capacity is the per-minute limit and which is refilled *continuously* at
limit / 60 per second, never above capacity (no fixed window that resets on the minute).

A take spans several buckets and is all-or-nothing. It may leave a bucket in debt (negative) when
the caller accepts a wait: the debt is a reservation, so N waiting callers are spread out at the
refill rate instead of all waking at the same instant and racing for one token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DIMENSIONS = ("requests", "input_tokens", "output_tokens")
SPEC_KEYS = {"rpm": "requests", "itpm": "input_tokens", "otpm": "output_tokens"}


@dataclass(frozen=True)
class Limit:
    """One bucket refilled at `per_minute`; its capacity is `per_minute` too unless `burst` says less."""

    per_minute: float
    burst: float | None = None

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ValueError(f"a rate limit must be positive, got {self.per_minute}")
        if self.burst is not None and not 0 < self.burst <= self.per_minute:
            raise ValueError(f"a burst is between 0 and the per-minute limit, got {self.burst}")

    @property
    def capacity(self) -> float:
        return self.per_minute if self.burst is None else self.burst

    @property
    def per_s(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Level:
    tokens: float
    at: float


def refill(limit: Limit, level: Level | None, now: float) -> float:
    """Tokens in the bucket at `now`; a bucket never seen before is full."""
    if level is None:
        return limit.capacity
    return min(limit.capacity, level.tokens + limit.per_s * max(0.0, now - level.at))


@dataclass(frozen=True)
class Decision:
    granted: bool
    wait_s: float  # 0 = go now; >0 = the reserved (granted) or needed (refused) wait
    levels: dict[str, Level]  # the new levels (unchanged when refused)


def take(
    limits: Mapping[str, Limit],
    levels: Mapping[str, Level | None],
    costs: Mapping[str, float],
    now: float,
    *,
    max_wait_s: float = 0.0,
) -> Decision:
    """Take `costs` from every limited bucket at once, or from none.

    Granted when the longest wait is at most `max_wait_s` (0 = only if every bucket holds enough
    now, the way a server answers). A cost above a bucket's capacity is clamped to the capacity:
    otherwise the request could never pass.
    """
    new: dict[str, Level] = {}
    wait = 0.0
    for name, limit in limits.items():
        cost = min(max(0.0, float(costs.get(name, 0.0))), limit.capacity)
        after = refill(limit, levels.get(name), now) - cost
        new[name] = Level(after, now)
        if after < 0:
            wait = max(wait, -after / limit.per_s)
    if wait <= max_wait_s:
        return Decision(True, wait, new)
    return Decision(False, wait, {n: lv for n, lv in levels.items() if lv is not None})


def settle(limit: Limit, level: Level | None, delta: float, now: float) -> Level:
    """Give back (`delta` > 0) or charge more (< 0) once the real usage is known."""
    return Level(min(limit.capacity, refill(limit, level, now) + delta), now)


def empty(limit: Limit, level: Level | None, now: float) -> Level:
    """The provider answered 429: nothing is left as far as we are concerned. Not less the reserve, as
    `observe` does: a 429 need not be about this bucket (another client's burst, an overload), the slot's
    retry honours its `retry-after`, and the next answers' headers restore the reserve if it is gone."""
    return Level(min(refill(limit, level, now), 0.0), now)


def observe(limit: Limit, level: Level | None, remaining: float, now: float, *, low_share: float = 0.2) -> Level:
    """Learn from the provider's `remaining`: when it is low (what we may use of it is below `low_share`
    of our capacity), the provider knows better than we do (another client shares the key, our clock
    drifted, or both buckets ran dry together), so the bucket drops to what it says, less the reserve
    a `burst` below the limit keeps at the provider. Without that, a bucket that ran dry in step with
    the provider's would send each call the moment its token exists there, and calls that arrive a
    little unevenly would meet 429s. Above that level, the headers are older than our own count."""
    current = refill(limit, level, now)
    usable = remaining - (limit.per_minute - limit.capacity)
    if usable < low_share * limit.capacity:
        current = min(current, usable)
    return Level(current, now)


def seconds_until_full(limit: Limit, tokens: float) -> float:
    return max(0.0, (limit.capacity - tokens) / limit.per_s)


def retry_after_seconds(wait_s: float) -> int:
    """Whole seconds for a `retry-after` header: never 0 while the wait is real."""
    return max(1, math.ceil(wait_s - 1e-9)) if wait_s > 0 else 0


@dataclass(frozen=True)
class QueueLimits:
    """The limits of one model queue; None = unlimited in that dimension."""

    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None

    def buckets(self, burst_share: float = 1.0) -> dict[str, Limit]:
        """`burst_share` < 1 keeps part of the provider's bucket in reserve: calls reach the provider a
        little later than they took their token, and unevenly, so a client that mirrors the bucket
        exactly would now and then arrive at an empty one. The refill rate is not reduced."""
        pairs = (("requests", self.rpm), ("input_tokens", self.itpm), ("output_tokens", self.otpm))
        return {name: Limit(value, None if burst_share >= 1 else value * burst_share)
                for name, value in pairs if value}

    def describe(self) -> str:
        parts = [f"{key}={value:g}" for key, value in (("rpm", self.rpm), ("itpm", self.itpm),
                                                         ("otpm", self.otpm)) if value]
        return ",".join(parts) or "unlimited"


def parse_limits(spec: str) -> dict[str, QueueLimits]:
    """`MODEL:rpm=600,itpm=400000,otpm=80000;OTHER:rpm=50` → per-model limits (`*` = every model).

    Raises ValueError naming the bad part.
    """
    out: dict[str, QueueLimits] = {}
    for chunk in (c.strip() for c in spec.split(";")):
        if not chunk:
            continue
        model, sep, body = chunk.partition(":")
        model = model.strip()
        if not sep or not model:
            raise ValueError(f"{chunk!r}: expected MODEL:rpm=N[,itpm=N][,otpm=N]")
        values: dict[str, float] = {}
        for item in (i.strip() for i in body.split(",") if i.strip()):
            key, eq, raw = item.partition("=")
            key = key.strip().lower()
            if not eq or key not in SPEC_KEYS:
                raise ValueError(f"{item!r} in {chunk!r}: expected rpm=N, itpm=N or otpm=N")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{item!r} in {chunk!r}: {raw.strip()!r} is not a number") from None
            if not value > 0:
                raise ValueError(f"{item!r} in {chunk!r}: a limit must be positive")
            values[key] = value
        if not values:
            raise ValueError(f"{chunk!r}: give at least one of rpm, itpm, otpm")
        if model in out:
            raise ValueError(f"{model!r} is limited twice")
        out[model] = QueueLimits(**values)
    return out


def limits_for(table: Mapping[str, QueueLimits], model: str) -> QueueLimits:
    return table.get(model) or table.get("*") or QueueLimits()
