"""The shared limiter on real Redis (Lua) and on SQLite (embedded mode): the same behaviour."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path

import pytest

from providers.anthropic_provider import remaining_from_headers
from tasks.limiter import BURST_SHARE, RedisLimiter, SQLiteLimiter
from workflows.ratelimit import QueueLimits

RPM = QueueLimits(rpm=60)  # client capacity 54 (the reserve), refilled at 1 per second
CAPACITY = 60 * BURST_SHARE
ONE = {"requests": 1.0}


def make(kind: str, where: str):
    if kind == "redis":
        return RedisLimiter(where, prefix=f"chorus-test:{uuid.uuid4().hex}")
    return SQLiteLimiter(Path(where) / "ratelimit.db")


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "sqlite"])
def limiter(request, tmp_path):
    if request.param == "redis":
        return make("redis", request.getfixturevalue("redis_db"))
    return make("sqlite", str(tmp_path))


def test_a_full_bucket_lets_its_capacity_go_at_once_then_reserves_turns_a_second_apart(limiter):
    began = time.monotonic()
    grants = [limiter.acquire("q", f"r:{i}", RPM, ONE, max_wait_s=30) for i in range(int(CAPACITY) + 3)]
    refilled = time.monotonic() - began  # at 1 token per second, the bucket refilled this much meanwhile
    assert all(g.wait_s == 0 for g in grants[: int(CAPACITY)])
    waits = [g.wait_s for g in grants[int(CAPACITY):]]
    assert all(g.reserved for g in grants[int(CAPACITY):])
    for turn, wait in enumerate(waits, start=1):
        assert turn - refilled - 0.05 <= wait <= turn + 0.05


def drain(limiter) -> None:
    """Empty the bucket in one take (a cost above the capacity is clamped to it)."""
    assert limiter.acquire("q", "drain", RPM, {"requests": 1000}, max_wait_s=0).wait_s == 0


def test_a_slot_that_comes_back_spends_its_reservation_instead_of_taking_again(limiter):
    drain(limiter)
    first = limiter.acquire("q", "late:1", RPM, ONE, max_wait_s=30)
    again = limiter.acquire("q", "late:1", RPM, ONE, max_wait_s=30)  # back too early
    assert first.reserved and again.reserved
    assert 0 < again.wait_s <= first.wait_s
    other = limiter.acquire("q", "late:2", RPM, ONE, max_wait_s=30)
    # The early return did not take a second token: the next slot is one turn behind, not two.
    assert other.wait_s - first.wait_s == pytest.approx(1.0, abs=0.1)


def test_a_wait_longer_than_allowed_is_refused_without_taking_anything(limiter):
    drain(limiter)
    before = limiter.levels("q", RPM)["requests"]
    refused = limiter.acquire("q", "x", RPM, {"requests": 1.0}, max_wait_s=0.5)
    assert not refused.reserved and 0.5 < refused.wait_s <= 1.0
    assert limiter.levels("q", RPM)["requests"] == pytest.approx(before, abs=0.1)  # only refill since


def test_settling_gives_back_unused_output_and_low_remaining_headers_slow_down(limiter):
    limits = QueueLimits(rpm=600, otpm=6000)
    limiter.acquire("q", "a", limits, {"requests": 1, "output_tokens": 1000}, max_wait_s=0)
    assert limiter.levels("q", limits)["output_tokens"] == pytest.approx(5400 - 1000, abs=5)
    limiter.adjust("q", limits, "settle", {"output_tokens": 900})
    assert limiter.levels("q", limits)["output_tokens"] == pytest.approx(5300, abs=5)
    limiter.adjust("q", limits, "observe", {"requests": 400})  # plenty left: ignored
    assert limiter.levels("q", limits)["requests"] == pytest.approx(539, abs=1)
    limiter.adjust("q", limits, "observe", {"requests": 3})  # nearly out: believe the provider, less
    assert limiter.levels("q", limits)["requests"] == pytest.approx(3 - 60, abs=1)  # the reserve (600 - 540)


def test_queues_have_separate_buckets(limiter):
    for i in range(int(CAPACITY)):
        limiter.acquire("llm.a", f"r:{i}", RPM, ONE, max_wait_s=0)
    assert limiter.acquire("llm.b", "r:0", RPM, ONE, max_wait_s=0).wait_s == 0


def _hammer(kind: str, where: str, prefix: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RedisLimiter(where, prefix=prefix) if kind == "redis" else make(kind, where)
    out.put(sum(limiter.acquire("q", uuid.uuid4().hex, RPM, ONE, max_wait_s=0).wait_s == 0 for _ in range(40)))


@pytest.mark.integration  # processes of its own
@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_four_processes_together_never_take_more_than_the_bucket_holds(kind, request, tmp_path):
    where = request.getfixturevalue("redis_db") if kind == "redis" else str(tmp_path)
    prefix = f"chorus-test:{uuid.uuid4().hex}"  # one bucket shared by every process
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(kind, where, prefix, out)) for _ in range(4)]
    began = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    elapsed = time.monotonic() - began
    granted = sum(out.get(timeout=5) for _ in procs)
    # 160 attempts against 54 tokens: the bucket plus what refilled meanwhile (1 per second), no more.
    assert CAPACITY <= granted <= CAPACITY + elapsed + 1


def test_remaining_headers_are_read_per_dimension():
    headers = {"anthropic-ratelimit-requests-remaining": "7", "anthropic-ratelimit-output-tokens-remaining": "90",
               "anthropic-ratelimit-input-tokens-remaining": "n/a"}
    assert remaining_from_headers(headers) == {"requests": 7.0, "output_tokens": 90.0}
