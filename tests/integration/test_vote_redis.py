"""A vote through real Celery worker processes on Redis, persisted in PostgreSQL, with the real
anthropic SDK calling the stub server."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from chorus.runs import wait_for_run
from chorus.vote import submit_vote
from models import Run, Session, WorkerOutcome
from settings import get_settings

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
POSITIVE = "I love this kettle. It is excellent, fast and quiet, and I would happily buy it again."


def calls_per_slot(stub, run_id: str) -> Counter[int]:
    return Counter(int(r["slot"]) for r in stub.requests() if r["run"] == run_id)


def test_a_five_voter_vote_yields_one_run_and_five_outcomes_with_usage_timestamps_and_a_tally(workers, stub):
    stub.reset()
    run_id = submit_vote(POSITIVE, LABELS, voters=5)
    run = wait_for_run(run_id, timeout=60)

    assert run.status == "succeeded"
    assert run.provider == "anthropic"
    assert run.answer == "positive"
    assert run.result is not None and sum(run.result["counts"].values()) == run.result["answered"]
    assert run.confidence == pytest.approx(run.result["counts"]["positive"] / run.result["answered"])

    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Run).where(Run.id == run_id)) == 1
        rows = s.scalars(select(WorkerOutcome).where(WorkerOutcome.run_id == run_id)).all()
    assert sorted(o.slot for o in rows) == [0, 1, 2, 3, 4]
    for o in run.outcomes:
        assert o.status == "succeeded"
        assert o.attempts == 1
        assert o.input_tokens > 0 and o.output_tokens > 0
        assert not o.usage_estimated  # measured by the provider (here: the stub), not estimated
        assert o.queued_at and o.started_at and o.finished_at and run.finished_at
        assert o.queued_at <= o.started_at <= o.finished_at <= run.finished_at
        assert o.hostname and o.hostname.startswith("llm-")
        assert o.task_id
    assert len({o.prompt_variant for o in run.outcomes}) == 5
    assert calls_per_slot(stub, run_id) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}


@pytest.mark.parametrize("status", [500, 400])
def test_one_failing_voter_neither_stops_the_run_nor_reruns_its_siblings(workers, stub, status):
    stub.reset()
    stub.set_rules([{"slot": "2", "status": status}])
    try:
        run_id = submit_vote(POSITIVE, LABELS, voters=5)
        run = wait_for_run(run_id, timeout=90)
        calls = calls_per_slot(stub, run_id)
    finally:
        stub.reset()

    assert run.status == "succeeded"  # four valid answers of five meet the quorum of three
    assert run.answer == "positive"
    assert run.result is not None and run.result["failed"] == 1
    failed = [o for o in run.outcomes if o.status == "failed"]
    assert [o.slot for o in failed] == [2]
    assert str(status) in (failed[0].error or "")

    max_attempts = get_settings().max_attempts
    expected_attempts = max_attempts if status == 500 else 1  # a 400 is permanent: never retried
    assert failed[0].attempts == expected_attempts
    if status == 500:
        assert f"gave up after {max_attempts} attempt(s)" in (failed[0].error or "")
    else:
        assert "not retried" in (failed[0].error or "")
    # Only the failing slot was retried; its siblings were each called exactly once.
    assert calls == {0: 1, 1: 1, 2: expected_attempts, 3: 1, 4: 1}
    assert all(o.attempts == 1 for o in run.outcomes if o.slot != 2)


def test_a_vote_where_every_voter_fails_ends_failed_with_the_reason(workers, stub):
    stub.reset()
    stub.set_rules([{"status": 401}])
    try:
        run_id = submit_vote(POSITIVE, LABELS, voters=3)
        run = wait_for_run(run_id, timeout=60)
    finally:
        stub.reset()
    assert run.status == "failed"
    assert run.error == "no voter gave a valid answer"
    assert all("ANTHROPIC_API_KEY" in (o.error or "") for o in run.outcomes)


def test_a_redelivered_call_for_a_finished_slot_does_not_call_the_provider_again(workers, stub):
    from tasks.vote import call

    stub.reset()
    run_id = submit_vote(POSITIVE, LABELS, voters=3)
    wait_for_run(run_id, timeout=60)
    before = calls_per_slot(stub, run_id)
    # Deliver slot 1's task a second time, as a broker would after a lost ack.
    summary = call.apply_async((run_id, 1, "claude-haiku-4-5"), queue="llm.claude-haiku-4-5").get(timeout=30)
    assert summary["status"] == "succeeded"
    assert calls_per_slot(stub, run_id) == before
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(WorkerOutcome).where(WorkerOutcome.run_id == run_id)) == 3


def test_on_redis_only_the_tally_keeps_a_result_the_calls_store_none(workers, stub, redis_db):
    """The Redis backend joins a chord from its own list, so the call tasks store no result of their own
    (the slot rows are the record); the chord must still reach its tally, whose result the client reads."""
    import redis

    from tasks.dispatch import joins_without_results
    from worker import make_app

    assert joins_without_results(make_app(get_settings(), set_as_current=False))
    client = redis.Redis.from_url(redis_db)

    def result_keys() -> set[str]:
        return {k.decode() if isinstance(k, bytes) else str(k) for k in client.keys("celery-task-meta-*")}

    before = result_keys()
    run_ids = [submit_vote(POSITIVE, LABELS, voters=5) for _ in range(2)]
    runs = [wait_for_run(r, timeout=60) for r in run_ids]
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    stored = {k.removeprefix("celery-task-meta-") for k in result_keys() - before}
    call_ids = {o.task_id for r in runs for o in r.outcomes}
    assert len(call_ids) == 10
    assert not stored & call_ids  # no call task's result was stored
    assert len(stored) >= 2  # the two tallies' results were (the client waited on them)
