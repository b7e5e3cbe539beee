"""Schema and idempotent outcome writes, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from models import OutcomeStatus, Pattern, RunStatus, Session, WorkerOutcome, ensure_schema, get_engine, repo
from models.tables import OutcomeRole


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
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


def test_slots_added_to_a_run_under_way_are_added_once_however_often_asked(db_url):
    run_id = make_run(2)
    extra = [repo.SlotSpec(2, OutcomeRole.VOTER, "strong", title="escalated"),
             repo.SlotSpec(3, OutcomeRole.SECTION, "m", held=True)]
    with Session.begin() as s:
        assert repo.add_slots(s, run_id, extra) == [2, 3]
    with Session.begin() as s:  # a callback that runs twice, or two at once
        assert repo.add_slots(s, run_id, [*extra, repo.SlotSpec(4, OutcomeRole.VOTER, "m")]) == [4]
        assert repo.add_slots(s, run_id, []) == []
    with Session() as s:
        run = repo.load_run(s, run_id)
        assert run is not None
        rows = {o.slot: o for o in run.outcomes}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert (rows[2].model, rows[2].title, rows[2].status, rows[2].attempts) == ("strong", "escalated",
                                                                               OutcomeStatus.PENDING, 0)
    assert rows[2].queued_at is not None and rows[3].queued_at is None  # held: not sent yet


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


# ----- the reaper: slots whose holder is gone ---------------------------------------------------------------
MARK = "resent-by-reaper"
REASON = "its worker was lost during attempt {attempts} of 4"


def take_abandoned(run_id: str, *, waiting: bool = True):
    """The reaper's query with a 30 s grace after a lease ends, and 300 s for a slot waiting for a message
    (`waiting=False`: the broker still holds a message of the run)."""
    import datetime as dt

    from models.tables import utcnow

    now = utcnow()
    with Session.begin() as s:
        return repo.take_abandoned_slots(s, run_id, held_before=now - dt.timedelta(seconds=30),
                                         waiting_before=now - dt.timedelta(seconds=300) if waiting else None,
                                         marker=MARK, max_attempts=4, reason=REASON)


def slot_in_state(*, status: OutcomeStatus, lease_age_s: float | None, attempts: int = 1, task_id: str | None = "t1",
                  role: OutcomeRole = OutcomeRole.VOTER, lane: bool = False) -> str:
    """A run of one slot left as a task left it: `lease_age_s` ago its lease ended (negative: still live)."""
    import datetime as dt

    from models.tables import utcnow

    run_id = make_run(1)
    lease = None if lease_age_s is None else utcnow() - dt.timedelta(seconds=lease_age_s)
    with Session.begin() as s:
        repo.update_slot(s, run_id, 0, status=status, lease_until=lease, attempts=attempts, task_id=task_id, role=role)
        run = repo.load_run(s, run_id)
        assert run is not None
        run.status = RunStatus.RUNNING
        if lane:
            run.config = {**run.config, "lane": "batch"}
    return run_id


RUNNING, RETRYING, PENDING = OutcomeStatus.RUNNING, OutcomeStatus.RETRYING, OutcomeStatus.PENDING


@pytest.mark.parametrize(("state", "waiting", "expected"), [
    (dict(status=RUNNING, lease_age_s=60), True, "resend"),  # its holder was killed: nobody renews the lease
    (dict(status=RUNNING, lease_age_s=60), False, "resend"),  # a message of its run queued cannot finish it sooner
    (dict(status=RUNNING, lease_age_s=10), True, None),  # within the grace: a copy of its task may take it over
    (dict(status=RUNNING, lease_age_s=-10), True, None),  # its holder renews the lease: alive
    (dict(status=RUNNING, lease_age_s=60, attempts=4), True, "fail"),  # lost at its last attempt
    (dict(status=RUNNING, lease_age_s=60, task_id=MARK), True, None),  # already re-sent, not yet taken over
    (dict(status=RUNNING, lease_age_s=60, role=OutcomeRole.PREWARM), True, None),  # not a voter or a section
    (dict(status=RUNNING, lease_age_s=60, lane=True), True, None),  # the batch lane sends no messages
    (dict(status=RETRYING, lease_age_s=600), True, "resend"),  # its retry's message is gone
    (dict(status=RETRYING, lease_age_s=600), False, None),  # its run's messages are still in the broker
    (dict(status=RETRYING, lease_age_s=60), True, None),  # may still be counting down
    (dict(status=PENDING, lease_age_s=600, attempts=0), True, "resend"),  # released for a rate-limit wait, then lost
    (dict(status=PENDING, lease_age_s=None, attempts=0, task_id=None), True, None),  # never claimed: mark_lost_slots'
    (dict(status=OutcomeStatus.SUCCEEDED, lease_age_s=600), True, None),
    (dict(status=OutcomeStatus.FAILED, lease_age_s=600), True, None),
])
def test_the_reaper_takes_only_a_slot_whose_holder_is_gone_and_fails_it_at_its_attempt_limit(
        db_url, state, waiting, expected):
    run_id = slot_in_state(**state)
    taken = take_abandoned(run_id, waiting=waiting)
    assert (taken.resend, taken.failed) == {
        "resend": ([(0, "m", state.get("role", OutcomeRole.VOTER))], []),
        "fail": ([], [(0, 4)]),
        None: ([], []),
    }[expected]
    with Session() as s:
        row = repo.outcomes_by_slot(s, run_id)[0]
        if expected == "fail":
            assert (row.status, row.error) == (OutcomeStatus.FAILED, "its worker was lost during attempt 4 of 4")
            assert row.finished_at is not None
        else:
            assert row.status is state["status"]
            assert row.task_id == (MARK if expected == "resend" else state.get("task_id", "t1"))


def test_a_slot_whose_holder_died_is_re_sent_once_taken_over_by_one_claim_and_never_called_by_a_late_copy(db_url):
    run_id = slot_in_state(status=RUNNING, lease_age_s=60)  # claimed by task t1, whose worker was then killed
    assert take_abandoned(run_id).resend == [(0, "m", OutcomeRole.VOTER)]
    assert take_abandoned(run_id).resend == []  # a second reaper (beat and a StallWatch) sends nothing
    with Session.begin() as s:  # the re-sent task takes the expired lease and counts its attempt
        resent = repo.claim_slot(s, run_id, 0, task_id="r1", hostname="h2", lease_s=60)
    assert resent is not None and resent.attempts == 2
    with Session.begin() as s:  # t1's message comes back (Redis restored it) while r1 calls: held, no call
        assert repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h3", lease_s=60) is None
        assert repo.lease_holder(s, run_id, 0) is not None
    assert take_abandoned(run_id).resend == []  # a live holder is never taken from
    with Session.begin() as s:
        assert not repo.renew_lease(s, run_id, 0, task_id="t1", lease_s=60)  # t1 holds nothing any more
        repo.update_slot(s, run_id, 0, status=OutcomeStatus.SUCCEEDED, answer="a")
    with Session.begin() as s:  # and after r1 answered: finished, no call, no attempt
        assert repo.claim_slot(s, run_id, 0, task_id="t1", hostname="h3", lease_s=60) is None
        assert repo.lease_holder(s, run_id, 0) is None
    with Session() as s:
        row = repo.outcomes_by_slot(s, run_id)[0]
        assert (row.status, row.attempts, row.task_id) == (OutcomeStatus.SUCCEEDED, 2, "r1")


def test_a_slot_is_re_sent_once_per_holder_it_loses_until_its_last_attempt(db_url):
    run_id = slot_in_state(status=RUNNING, lease_age_s=60)
    for attempt in (2, 3, 4):
        assert take_abandoned(run_id).resend == [(0, "m", OutcomeRole.VOTER)]
        with Session.begin() as s:
            claim = repo.claim_slot(s, run_id, 0, task_id=f"r{attempt}", hostname="h", lease_s=60)
            assert claim is not None and claim.attempts == attempt
            assert repo.renew_lease(s, run_id, 0, task_id=f"r{attempt}", lease_s=-60)  # and this holder dies too
    assert take_abandoned(run_id).failed == [(0, 4)]


def test_a_slot_whose_re_send_the_broker_refused_loses_its_mark_and_is_found_again(db_url):
    run_id = slot_in_state(status=RUNNING, lease_age_s=60)
    assert take_abandoned(run_id).resend
    with Session.begin() as s:
        repo.drop_resend_marks(s, run_id, [0], marker=MARK)
    assert take_abandoned(run_id).resend == [(0, "m", OutcomeRole.VOTER)]
