"""The cluster-wide token buckets of each rate-limit pool (requests, input and output tokens per minute).

Anthropic pools rate limits per model family (its rate-limits page has one table per family, e.g.
Opus 4.5, 4.6 and 4.7 combined), so the buckets are keyed by the model's family
(`workflows.registry.family`): two Opus 4.x queues draw from one set of buckets. A limit configured
for a model (CHORUS_RATE_LIMITS) is its family's limit; a family name works as a key too, and `*`
gives every family a pool of its own with that limit (docs/decisions.md).

With a Redis broker the buckets live in Redis and every worker process on every host shares them:
one Lua script takes from all of a queue's buckets atomically, on Redis's own clock. In embedded
mode (no Redis) the same math (`workflows.ratelimit`) runs on a SQLite file under CHORUS_DATA_DIR,
locked across the processes of this host.

A slot that must wait gets a *reservation* keyed by (run, slot): its token is already taken, the
task is re-sent with a countdown, and when it comes back it spends the reservation instead of
queueing again. So waiting never sleeps inside a worker (other queues' work goes on), N waiting
slots are spread at the refill rate instead of all waking at once, and a wait is not an attempt.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from workflows.calls import CallRequest, CallResult
from workflows.queues import queue_for_model
from workflows.ratelimit import DIMENSIONS, Level, Limit, QueueLimits, empty, observe, refill, settle, take
from workflows.registry import family, pooled
from workflows.tokens import request_tokens

log = logging.getLogger("chorus.ratelimit")

GRACE_S = 0.05  # a reservation this close to due is spent now (ETA timers are not exact)


@dataclass(frozen=True)
class Grant:
    wait_s: float  # 0: call now
    reserved: bool  # True: the token is held for this slot; come back after wait_s


class Limiter(Protocol):
    def acquire(self, queue: str, key: str, limits: QueueLimits, costs: Mapping[str, float],
                max_wait_s: float) -> Grant: ...

    def adjust(self, queue: str, limits: QueueLimits, mode: str, values: Mapping[str, float]) -> None: ...

    def levels(self, queue: str, limits: QueueLimits) -> dict[str, float]: ...


# Redis's clock, and workflows.ratelimit.refill: a bucket never seen is full, refilled continuously.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function refill(name, rate, cap)
  local tokens = tonumber(redis.call('HGET', KEYS[1], name .. ':tokens'))
  local at = tonumber(redis.call('HGET', KEYS[1], name .. ':at'))
  if tokens and at then
    return math.min(cap, tokens + rate * math.max(0, now - at))
  end
  return cap
end
"""

_ACQUIRE = _PRELUDE + """
local grace = tonumber(ARGV[2])
local held = redis.call('GET', KEYS[2])
if held then
  local due = tonumber(held) - now
  if due <= grace then
    redis.call('DEL', KEYS[2])
    return {'0', '1'}
  end
  return {tostring(due), '1'}
end
local max_wait = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local wait = 0
local after = {}
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4]) / 60
  local cap = tonumber(ARGV[6 + i * 4])
  local cost = math.max(0, math.min(tonumber(ARGV[7 + i * 4]), cap))
  local level = refill(name, rate, cap)
  after[i + 1] = level - cost
  if after[i + 1] < 0 then
    wait = math.max(wait, -after[i + 1] / rate)
  end
end
if wait > max_wait then
  return {tostring(wait), '0'}
end
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  redis.call('HSET', KEYS[1], name .. ':tokens', tostring(after[i + 1]), name .. ':at', tostring(now))
end
redis.call('EXPIRE', KEYS[1], 86400)
if wait > grace then
  redis.call('SET', KEYS[2], tostring(now + wait), 'PX', math.ceil((wait + 3600) * 1000))
  return {tostring(wait), '1'}
end
return {'0', '1'}
"""

_ADJUST = _PRELUDE + """
local mode = ARGV[1]
local low_share = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local name = ARGV[4 + i * 4]
  local rate = tonumber(ARGV[5 + i * 4]) / 60
  local cap = tonumber(ARGV[6 + i * 4])
  local value = tonumber(ARGV[7 + i * 4])
  local level = refill(name, rate, cap)
  local write = true
  -- workflows.ratelimit.observe: what we may use of the provider's `remaining` keeps its reserve
  local usable = value - (tonumber(ARGV[5 + i * 4]) - cap)
  if mode == 'settle' then
    level = math.min(cap, level + value)
  elseif mode == 'empty' then
    level = math.min(level, 0)
  elseif usable < low_share * cap then
    level = math.min(level, usable)
  else
    write = false
  end
  if write then
    redis.call('HSET', KEYS[1], name .. ':tokens', tostring(level), name .. ':at', tostring(now))
  end
end
return 1
"""

_LEVELS = _PRELUDE + """
local out = {}
for i = 1, #ARGV, 3 do
  local rate = tonumber(ARGV[i + 1]) / 60
  local cap = tonumber(ARGV[i + 2])
  out[#out + 1] = tostring(refill(ARGV[i], rate, cap))
end
return out
"""

LOW_SHARE = 0.2
BURST_SHARE = 0.9  # see QueueLimits.buckets: 10 % of the provider's bucket stays in reserve


def _buckets(limits: QueueLimits) -> dict[str, Limit]:
    return limits.buckets(BURST_SHARE)


def _quads(limits: QueueLimits, values: Mapping[str, float]) -> list[str]:
    args: list[str] = []
    for name, limit in _buckets(limits).items():
        if name in values:
            args += [name, repr(float(limit.per_minute)), repr(float(limit.capacity)), repr(float(values[name]))]
    return args


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "chorus:ratelimit") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix
        self._acquire = self.client.register_script(_ACQUIRE)
        self._adjust = self.client.register_script(_ADJUST)
        self._levels = self.client.register_script(_LEVELS)

    def _bucket(self, queue: str) -> str:
        return f"{self.prefix}:{queue}"

    def acquire(self, queue: str, key: str, limits: QueueLimits, costs: Mapping[str, float],
                max_wait_s: float) -> Grant:
        args = _quads(limits, {n: costs.get(n, 0.0) for n in DIMENSIONS})
        wait, reserved = self._acquire(
            keys=[self._bucket(queue), f"{self._bucket(queue)}:held:{key}"],
            args=[repr(float(max_wait_s)), repr(GRACE_S), len(args) // 4, *args],
        )
        return Grant(float(wait), reserved in (b"1", "1"))

    def adjust(self, queue: str, limits: QueueLimits, mode: str, values: Mapping[str, float]) -> None:
        args = _quads(limits, values)
        if args:
            self._adjust(keys=[self._bucket(queue)], args=[mode, repr(LOW_SHARE), len(args) // 4, *args])

    def levels(self, queue: str, limits: QueueLimits) -> dict[str, float]:
        buckets = _buckets(limits)
        args = [x for name, limit in buckets.items()
                for x in (name, repr(float(limit.per_minute)), repr(float(limit.capacity)))]
        if not args:
            return {}
        values = self._levels(keys=[self._bucket(queue)], args=args)
        return {name: float(v) for name, v in zip(buckets, values, strict=True)}


class SQLiteLimiter:
    """The same buckets on one SQLite file: correct across the processes of one host."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS bucket (queue TEXT, name TEXT, tokens REAL, at REAL, "
                       "PRIMARY KEY (queue, name))")
            db.execute("CREATE TABLE IF NOT EXISTS held (key TEXT PRIMARY KEY, due REAL)")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @staticmethod
    def _read(db: sqlite3.Connection, queue: str, names: list[str]) -> dict[str, Level | None]:
        rows = {n: Level(t, a) for n, t, a in db.execute("SELECT name, tokens, at FROM bucket WHERE queue = ?",
                                                         (queue,))}
        return {n: rows.get(n) for n in names}

    @staticmethod
    def _write(db: sqlite3.Connection, queue: str, levels: Mapping[str, Level]) -> None:
        db.executemany("INSERT OR REPLACE INTO bucket (queue, name, tokens, at) VALUES (?, ?, ?, ?)",
                       [(queue, n, lv.tokens, lv.at) for n, lv in levels.items()])

    def acquire(self, queue: str, key: str, limits: QueueLimits, costs: Mapping[str, float],
                max_wait_s: float) -> Grant:
        buckets = _buckets(limits)
        held_key = f"{queue}:{key}"
        with self._tx() as db:
            now = time.time()
            row = db.execute("SELECT due FROM held WHERE key = ?", (held_key,)).fetchone()
            if row is not None:
                if row[0] - now <= GRACE_S:
                    db.execute("DELETE FROM held WHERE key = ?", (held_key,))
                    return Grant(0.0, True)
                return Grant(row[0] - now, True)
            decision = take(buckets, self._read(db, queue, list(buckets)), costs, now, max_wait_s=max_wait_s)
            if not decision.granted:
                return Grant(decision.wait_s, False)
            self._write(db, queue, decision.levels)
            if decision.wait_s > GRACE_S:
                db.execute("INSERT OR REPLACE INTO held (key, due) VALUES (?, ?)", (held_key, now + decision.wait_s))
                return Grant(decision.wait_s, True)
            return Grant(0.0, True)

    def adjust(self, queue: str, limits: QueueLimits, mode: str, values: Mapping[str, float]) -> None:
        buckets = {n: lim for n, lim in _buckets(limits).items() if n in values}
        if not buckets:
            return
        with self._tx() as db:
            now = time.time()
            current = self._read(db, queue, list(buckets))
            new: dict[str, Level] = {}
            for name, limit in buckets.items():
                if mode == "settle":
                    new[name] = settle(limit, current[name], values[name], now)
                elif mode == "empty":
                    new[name] = empty(limit, current[name], now)
                else:
                    new[name] = observe(limit, current[name], values[name], now, low_share=LOW_SHARE)
            self._write(db, queue, new)

    def levels(self, queue: str, limits: QueueLimits) -> dict[str, float]:
        buckets = _buckets(limits)
        if not buckets:
            return {}
        with self._tx() as db:
            current = self._read(db, queue, list(buckets))
        now = time.time()
        return {n: refill(lim, current[n], now) for n, lim in buckets.items()}


def get_limiter(settings: Any) -> Limiter:
    """Redis when the broker is Redis (shared by every host); otherwise SQLite in the data dir."""
    return _limiter(settings.broker_url or "", str(settings.data_path), os.getpid())


@functools.lru_cache(maxsize=4)
def _limiter(broker_url: str, data_dir: str, pid: int) -> Limiter:
    # The pid is part of the key: a connection opened before a fork must not be shared by children.
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimiter(broker_url)
    return SQLiteLimiter(Path(data_dir) / "ratelimit.db")


# ----- what a slot's task calls ------------------------------------------------------------------
def pool_key(model: str) -> str:
    """The buckets' key: the model's rate-limit family (`family:claude-opus-4`)."""
    return f"family:{family(model)}"


def pool_limits(table: Mapping[str, QueueLimits], model: str) -> QueueLimits:
    """The limits of the model's pool: its own entry, its family's (by family name or by another model
    of the family), else `*`, else none. Settings refuse two different limits within one family."""
    return pooled(table, model) or table.get("*") or QueueLimits()


def request_costs(request: CallRequest) -> dict[str, float]:
    """What one call takes before it is sent: one request, the prompt's estimated input tokens (in the
    model's tokenizer), and `max_tokens` output tokens (Anthropic charges output up front, then settles)."""
    prompt = request_tokens(request)
    return {"requests": 1.0, "input_tokens": float(prompt), "output_tokens": float(request.max_tokens)}


def take_token(settings: Any, model: str, key: str, request: CallRequest) -> float | None:
    """None: call now. A number: wait that many seconds first (the token may already be reserved).

    If the limiter itself is unreachable the call goes ahead: the provider's own 429s are still
    handled by the slot's retries, and a stalled limiter must not stall every run."""
    limits = pool_limits(settings.queue_limits, model)
    if not limits.buckets():
        return None
    try:
        grant = get_limiter(settings).acquire(pool_key(model), key, limits, request_costs(request),
                                              settings.rate_limit_max_wait_s)
    except Exception as exc:  # noqa: BLE001 - Redis/SQLite can fail in many ways; fail open
        log.warning("rate limiter unavailable (%s); calling without it", exc)
        return None
    if grant.wait_s <= 0:
        return None
    return grant.wait_s if grant.reserved else min(grant.wait_s, settings.rate_limit_max_wait_s)


def settle_call(settings: Any, model: str, request: CallRequest, result: CallResult) -> None:
    """Give back what the estimate over-charged, charge what it missed, and learn from the headers."""
    limits = pool_limits(settings.queue_limits, model)
    if not limits.buckets():
        return
    costs = request_costs(request)
    used_in = result.usage.input_tokens + result.usage.cache_creation_input_tokens  # cache reads are free
    deltas = {"input_tokens": costs["input_tokens"] - used_in,
              "output_tokens": costs["output_tokens"] - result.usage.output_tokens}
    try:
        limiter = get_limiter(settings)
        limiter.adjust(pool_key(model), limits, "settle", deltas)
        if result.rate_limit:
            limiter.adjust(pool_key(model), limits, "observe", result.rate_limit)
    except Exception as exc:  # noqa: BLE001 - bookkeeping only
        log.warning("rate limiter unavailable (%s); usage not settled", exc)


def note_rate_limited(settings: Any, model: str) -> None:
    """The provider answered 429: every bucket of the model's pool is empty as far as we are concerned."""
    limits = pool_limits(settings.queue_limits, model)
    if not limits.buckets():
        return
    try:
        get_limiter(settings).adjust(pool_key(model), limits, "empty", dict.fromkeys(limits.buckets(), 0.0))
    except (redis.RedisError, sqlite3.Error, OSError) as exc:  # the limiter is down: fail open, as take_token does
        log.warning("rate limiter unavailable (%s); the 429 did not empty the %s buckets", exc, pool_key(model))
    except Exception:  # noqa: BLE001 - a bug here must not stop the slot's retry from being sent
        log.exception("could not record the 429 on the %s buckets", pool_key(model))


def limits_view(settings: Any) -> list[dict[str, Any]]:
    """Per model queue: its pool, the pool's configured limits and what its buckets hold now (for
    `chorus status`); queues of one family show the same, shared, buckets."""
    rows = []
    for model in settings.model_list:
        limits = pool_limits(settings.queue_limits, model)
        row: dict[str, Any] = {"queue": queue_for_model(model), "pool": family(model), "limits": limits.describe(),
                               "available": {}}
        if limits.buckets():
            try:
                row["available"] = {n: round(v, 1) for n, v in get_limiter(settings).levels(pool_key(model),
                                                                                           limits).items()}
            except Exception as exc:  # noqa: BLE001 - a status view must not fail on a down limiter
                row["error"] = f"limiter unavailable: {exc}"
        rows.append(row)
    return rows
