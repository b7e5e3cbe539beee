"""Schema and idempotent outcome writes, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from models import OutcomeStatus, Pattern, RunStatus, Session, WorkerOutcome, ensure_schema, get_engine, repo
from models.tables import OutcomeRole


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'chorus.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    ensure_schema(url)
    get_engine(url)
    yield url
    get_engine(os.environ["CHORUS_DATABASE_URL"])  # rebind the sessionmaker to the session-wide database


def make_run(slots: int = 3) -> str:
    with Session.begin() as s:
        run = repo.create_run(
            s, text="some text", external_id="doc-1", pattern=Pattern.VOTE, provider="offline",
            config={"labels": ["a", "b"]},
            slots=[repo.SlotSpec(i, OutcomeRole.VOTER, "m", "direct", 0.0) for i in range(slots)],
        )
        return run.id


def test_the_migration_creates_every_table(db_url):
    assert {"batch", "document", "run", "worker_outcome", "alembic_version"} <= set(
        inspect(get_engine(db_url)).get_table_names()
    )


def test_a_new_run_has_one_pending_outcome_per_slot(db_url):
    run_id = make_run(3)
    with Session() as s:
        run = repo.load_run(s, run_id)
        assert run is not None and run.status is RunStatus.PENDING
        assert [(o.slot, o.status) for o in run.outcomes] == [(i, OutcomeStatus.PENDING) for i in range(3)]
        assert all(o.queued_at is not None for o in run.outcomes)


def test_claiming_a_slot_counts_attempts_and_a_terminal_slot_cannot_be_claimed_again(db_url):
    run_id = make_run(2)
    with Session.begin() as s:
        first = repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h1", lease_s=60)
    with Session.begin() as s:
        repo.update_slot(s, run_id, 0, status=OutcomeStatus.RETRYING)
    with Session.begin() as s:
        second = repo.claim_slot(s, run_id, 0, task_id="t2", hostname="h2", lease_s=60)  # a retry
    assert first is not None and second is not None
    assert (first.attempts, second.attempts) == (1, 2)
    assert second.started_at == first.started_at  # the slot's clock starts at its first attempt

    with Session.begin() as s:
        repo.update_slot(s, run_id, 0, status=OutcomeStatus.SUCCEEDED, answer="a")
    with Session.begin() as s:
        assert repo.claim_slot(s, run_id, 0, task_id="t3", hostname="h3", lease_s=60) is None  # a redelivery
        assert repo.claim_slot(s, run_id, 7, task_id="t4", hostname="h4", lease_s=60) is None  # no such slot
    with Session() as s:
        rows = s.scalars(select(WorkerOutcome).where(WorkerOutcome.run_id == run_id).order_by(WorkerOutcome.slot))
        assert [(o.slot, o.attempts, o.task_id) for o in rows] == [(0, 2, "t2"), (1, 0, None)]


def test_a_running_slot_is_held_by_its_lease_until_the_lease_ends(db_url):
    run_id = make_run(1)
    with Session.begin() as s:
        assert repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h1", lease_s=60) is not None
    with Session.begin() as s:
        assert repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h2", lease_s=60) is None  # a redelivered copy
        assert repo.lease_holder(s, run_id, 0) is not None
        assert repo.renew_lease(s, run_id, 0, task_id="t1", lease_s=-1)  # the holder stopped renewing: it ended
    with Session.begin() as s:
        assert repo.lease_holder(s, run_id, 0) is None
        taken = repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h2", lease_s=60)  # the copy takes over
    assert taken is not None and taken.attempts == 2


def test_no_slot_of_a_finished_run_is_claimed_again(db_url):
    run_id = make_run(2)
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        assert run is not None
        repo.finish_run(s, run, status=RunStatus.PARTIAL, result={})
    with Session.begin() as s:
        assert repo.claim_slot(s, run_id, 1, task_id="late", hostname="h", lease_s=60) is None
        assert repo.lease_holder(s, run_id, 1) is None


def test_the_database_refuses_a_second_row_for_the_same_slot(db_url):
    run_id = make_run(1)
    with pytest.raises(IntegrityError), Session.begin() as s:
        s.add(WorkerOutcome(run_id=run_id, slot=0, role=OutcomeRole.VOTER, model="m"))
    with Session() as s:
        assert s.scalar(select(func.count()).where(WorkerOutcome.run_id == run_id)) == 1


def test_ensure_schema_is_a_no_op_when_current(db_url):
    ensure_schema(db_url)
    ensure_schema(db_url)
    assert "worker_outcome" in inspect(get_engine(db_url)).get_table_names()


def test_usage_is_read_per_request_so_a_size_tier_sees_each_call(db_url):
    from chorus.analysis.export import _row, _usage

    run_id = make_run(2)
    with Session.begin() as s:
        for slot in (0, 1):  # two Haiku 5.5 calls of 60k prompt tokens each: both in the lower tier
            repo.update_slot(s, run_id, slot, model="claude-haiku-5-5", input_tokens=60_000, output_tokens=100)
    with Session() as s:
        run = repo.load_run(s, run_id)
        assert run is not None
        row = _row(run.document, run, _usage(s, [run_id]))
    lower_tier = 2 * (60_000 * 0.10 + 100 * 0.50) / 1e6  # $0.10 / $0.50 per MTok up to 100k a request
    assert row["cost_usd"] == pytest.approx(lower_tier)
    assert row["input_tokens"] == 120_000
