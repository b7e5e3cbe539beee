"""run_slot's two kinds of waiting: a provider's retry-after (an attempt) and a rate-limit token (not
one). Both re-send the task with a countdown that stays below the broker's visibility timeout."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models import OutcomeStatus, Session, repo
from settings import get_settings, load_settings
from tests.tasks.test_maintenance import db, stored_run  # noqa: F401  (fixture and helper)

pytestmark = pytest.mark.integration


class Retry(Exception):
    pass


class FakeTask:
    """The little of a bound Celery task that run_slot uses; `retry` records its countdown."""

    def __init__(self) -> None:
        self.request = SimpleNamespace(id="task-1", hostname="test@host")
        self.countdowns: list[float] = []

    def retry(self, countdown: float, max_retries: int | None = None) -> Retry:
        self.countdowns.append(countdown)
        return Retry()


def outcome(run_id: str, slot: int):
    with Session() as s:
        run = repo.load_run(s, run_id)
        assert run is not None
        return next(o for o in run.outcomes if o.slot == slot)


def test_a_retry_after_of_two_hours_is_capped_below_the_visibility_timeout(db, stub, monkeypatch):  # noqa: F811
    from tasks import calls

    run_id = stored_run([(OutcomeStatus.PENDING, None)], age_s=0)
    monkeypatch.setattr(calls, "get_settings", lambda: load_settings(visibility_timeout_s=600))
    stub.reset()
    stub.set_rules([{"status": 429, "retry_after": 7200}])
    task = FakeTask()
    try:
        with pytest.raises(Retry):
            calls.run_slot(task, run_id, 0)
    finally:
        stub.reset()
    assert task.countdowns == [300.0]  # half the visibility timeout, not 7200 s
    row = outcome(run_id, 0)
    assert row.status is OutcomeStatus.RETRYING and row.attempts == 1  # a real call: an attempt


def test_waiting_for_a_rate_limit_token_re_sends_the_task_without_counting_an_attempt(db, stub, redis_db,  # noqa: F811
                                                                                      monkeypatch):
    import redis

    from tasks import calls

    redis.Redis.from_url(redis_db).delete("chorus:ratelimit:family:claude-haiku-4-5")
    limited = load_settings(rate_limits="claude-haiku-4-5:rpm=1")
    monkeypatch.setattr(calls, "get_settings", lambda: limited)
    run_id = stored_run([(OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)], age_s=0)
    stub.reset()
    first, second = FakeTask(), FakeTask()
    assert calls.run_slot(first, run_id, 0)["status"] == "succeeded"  # the bucket's one token
    with pytest.raises(Retry):
        calls.run_slot(second, run_id, 1)
    assert second.countdowns == [pytest.approx(54.0, abs=1.0)]  # 0.9 token at 1 per minute
    waiting = outcome(run_id, 1)
    assert waiting.status is OutcomeStatus.PENDING and waiting.attempts == 0 and waiting.started_at is None
    assert "rate-limit token" in (waiting.error or "")
    assert [r["slot"] for r in stub.requests() if r["run"] == run_id] == ["0"]
    assert get_settings().rate_limits == ""  # the workers of other tests are unlimited
