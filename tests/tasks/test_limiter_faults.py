"""The shared limiter when things go wrong, end to end through a slot's task (`run_slot`): its Redis is
down (the call goes ahead), the provider answers 429 (the pool's bucket is emptied), and the
provider's `anthropic-ratelimit-*-remaining` headers say it is nearly out (the bucket follows them).
"""

from __future__ import annotations

import logging

import pytest
import redis

from chorus.testing.stub.testing import running_stub
from models import OutcomeStatus
from settings import load_settings
from tasks import calls, limiter
from tests.conftest import free_port
from tests.tasks.test_calls_ratelimit import FakeTask, Retry, outcome
from tests.tasks.test_maintenance import db, stored_run  # noqa: F401  (fixture and helper)

pytestmark = pytest.mark.integration

MODEL = "claude-haiku-4-5"  # stored_run's slots are on this model
POOL = f"chorus:ratelimit:{limiter.pool_key(MODEL)}"
# rpm=60: chorus's bucket holds 54 (the 10 % reserve) and refills one request a second.
RPM60 = f"{MODEL}:rpm=60"


@pytest.fixture
def empty_pool(redis_db):
    """The Haiku pool's buckets and reservations on the session's Redis, cleared before and after (the
    session's workers run unlimited and never touch them)."""
    client = redis.Redis.from_url(redis_db)

    def clear() -> None:
        for key in client.scan_iter(f"{POOL}*"):
            client.delete(key)

    clear()
    yield redis_db
    clear()
    client.close()


def requests_level(settings) -> float:
    return limiter.get_limiter(settings).levels(limiter.pool_key(MODEL), limiter.pool_limits(
        settings.queue_limits, MODEL))["requests"]


def test_with_its_redis_down_the_limiter_lets_the_call_go_ahead_and_says_so(db, stub, monkeypatch,  # noqa: F811
                                                                            caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # a loopback port nothing listens on
    settings = load_settings(broker_url=closed, result_backend=closed, rate_limits=RPM60)
    monkeypatch.setattr(calls, "get_settings", lambda: settings)
    run_id = stored_run([(OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)], age_s=0)
    stub.reset()
    with caplog.at_level(logging.WARNING, logger="chorus.ratelimit"):
        assert calls.run_slot(FakeTask(), run_id, 0)["status"] == "succeeded"
    assert [r["slot"] for r in stub.requests() if r["run"] == run_id] == ["0"]
    assert outcome(run_id, 0).attempts == 1
    warned = [r.getMessage() for r in caplog.records if r.name == "chorus.ratelimit"]
    assert any("rate limiter unavailable" in m and "calling without it" in m for m in warned), warned

    # A 429 met with the limiter down: recorded nowhere, said in a warning, nothing raised.
    caplog.clear()
    stub.set_rules([{"status": 429, "retry_after": 0.5}])
    try:
        with caplog.at_level(logging.WARNING, logger="chorus.ratelimit"), pytest.raises(Retry):
            calls.run_slot(FakeTask(), run_id, 1)
    finally:
        stub.reset()
    assert outcome(run_id, 1).status is OutcomeStatus.RETRYING
    warned = [r.getMessage() for r in caplog.records if r.name == "chorus.ratelimit"]
    assert any("429" in m and "rate limiter unavailable" in m for m in warned), warned


def test_a_429_from_the_provider_empties_the_bucket_so_the_next_slot_waits(db, stub, empty_pool,  # noqa: F811
                                                                           monkeypatch):
    settings = load_settings(broker_url=empty_pool, rate_limits=RPM60)
    monkeypatch.setattr(calls, "get_settings", lambda: settings)
    run_id = stored_run([(OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)], age_s=0)
    stub.reset()
    stub.set_rules([{"run": run_id, "slot": "0", "status": 429, "retry_after": 0.5, "times": 1}])
    try:
        with pytest.raises(Retry):
            calls.run_slot(FakeTask(), run_id, 0)  # the call's own retry: an attempt
        assert requests_level(settings) < 1.0  # 53 were left after that call's token; the 429 took them
        waiting = FakeTask()
        with pytest.raises(Retry):
            calls.run_slot(waiting, run_id, 1)
    finally:
        stub.reset()
    # Slot 1 was never sent: it holds a reservation one refill (1 s at rpm=60) away.
    assert waiting.countdowns == [pytest.approx(1.0, abs=0.3)]
    assert outcome(run_id, 1).attempts == 0 and outcome(run_id, 0).attempts == 1


def test_without_a_429_the_next_slot_goes_at_once(db, stub, empty_pool, monkeypatch):  # noqa: F811
    # The control of the test above: the same two slots, no 429, and nobody waits.
    settings = load_settings(broker_url=empty_pool, rate_limits=RPM60)
    monkeypatch.setattr(calls, "get_settings", lambda: settings)
    run_id = stored_run([(OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)], age_s=0)
    stub.reset()
    assert [calls.run_slot(FakeTask(), run_id, s)["status"] for s in (0, 1)] == ["succeeded", "succeeded"]
    assert requests_level(settings) == pytest.approx(52, abs=0.5)


def test_low_remaining_headers_from_the_api_draw_the_shared_bucket_down(db, empty_pool, monkeypatch):  # noqa: F811
    # chorus is told 60 requests a minute; the API (a stub limited to 1 a minute) says otherwise in its
    # `anthropic-ratelimit-requests-remaining` header, and the shared bucket believes the API.
    with running_stub(extra_args=("--rpm", "1")) as strict:
        settings = load_settings(broker_url=empty_pool, rate_limits=RPM60, anthropic_base_url=strict.base_url)
        monkeypatch.setattr(calls, "get_settings", lambda: settings)
        run_id = stored_run([(OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)], age_s=0)
        assert calls.run_slot(FakeTask(), run_id, 0)["status"] == "succeeded"
        log = strict.requests(bodies=False)
        waiting = FakeTask()
        with pytest.raises(Retry):
            calls.run_slot(waiting, run_id, 1)
        assert len(strict.requests(bodies=False)) == 1  # slot 1 waited instead of meeting a 429

    assert [e["status"] for e in log] == [200]
    # 53 would be left by chorus's own count; the header said 0, and 6 of 60 stay at the provider in reserve.
    assert waiting.countdowns == [pytest.approx(7.0, abs=0.3)]
    assert outcome(run_id, 1).status is OutcomeStatus.PENDING and outcome(run_id, 1).attempts == 0


class Broken:
    """A limiter whose adjust fails with an error that is no outage (a bug in the bookkeeping)."""

    def adjust(self, *args, **kwargs) -> None:
        raise TypeError("adjust() got an unexpected keyword argument 'mode'")


def test_a_bookkeeping_bug_on_a_429_is_logged_with_its_traceback_not_swallowed(monkeypatch, caplog):
    settings = load_settings(rate_limits=RPM60)
    monkeypatch.setattr(limiter, "get_limiter", lambda s: Broken())
    with caplog.at_level(logging.WARNING, logger="chorus.ratelimit"):
        limiter.note_rate_limited(settings, MODEL)  # never raises: the slot's retry must still be sent
    [record] = [r for r in caplog.records if r.name == "chorus.ratelimit"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "429" in record.getMessage() and limiter.pool_key(MODEL) in record.getMessage()

