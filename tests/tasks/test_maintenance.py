"""The reaper finishes runs whose callback never fired, and gives up on runs past their time."""

from __future__ import annotations

import datetime as dt

import pytest

from chorus.runs import celery_app
from models import OutcomeStatus, Pattern, RunStatus, Session, ensure_schema, repo
from models.tables import OutcomeRole, utcnow
from settings import get_settings, load_settings
from tests.conftest import PG_URL

pytestmark = pytest.mark.integration
LABELS = ["positive", "negative", "neutral"]


def reap(settings, **options):
    """The reaper's check with these settings; lost calls are re-sent on the environment's app."""
    from tasks.maintenance import reap_stalled

    return reap_stalled(celery_app(get_settings()), settings, **options)


@pytest.fixture
def db(postgres: str) -> str:
    ensure_schema(PG_URL)
    return PG_URL


def stored_run(slots: list[tuple[OutcomeStatus, str | None]], age_s: float, *, lane: bool = False) -> str:
    """A vote run left `running` with its slots in the given states, submitted `age_s` ago (`lane`: a run
    of the batch lane, its slots released to the collector then)."""
    from models import get_engine

    get_engine(PG_URL)
    config = {"labels": LABELS, "voters": [], "quorum": 2, "tie_policy": "none", "low_agreement_below": 0.6,
              **({"lane": "batch"} if lane else {})}
    specs = [repo.SlotSpec(i, OutcomeRole.VOTER, "claude-haiku-4-5") for i in range(len(slots))]
    with Session.begin() as s:
        run = repo.create_run(s, text="A fine kettle.", external_id="reaper-test", pattern=Pattern.VOTE,
                              provider="offline", config=config, slots=specs)
        run.status = RunStatus.RUNNING
        run.submitted_at = utcnow() - dt.timedelta(seconds=age_s)
        for outcome, (status, answer) in zip(run.outcomes, slots, strict=True):
            outcome.status = status
            outcome.answer = answer
            if lane:
                outcome.queued_at = run.submitted_at
        return run.id


def load(run_id: str):
    with Session() as s:
        return repo.load_run(s, run_id)


DONE = OutcomeStatus.SUCCEEDED


def test_a_run_whose_slots_all_finished_but_whose_tally_never_ran_is_tallied_from_what_was_stored(db):

    run_id = stored_run([(DONE, "positive"), (DONE, "positive"), (DONE, "negative")], age_s=120)
    done = reap(load_settings(reap_grace_s=30), run_ids=[run_id])
    assert done == {"lost_callback": [run_id], "expired": [], "resent": []}
    run = load(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.answer == "positive"
    again = reap(load_settings(reap_grace_s=30), run_ids=[run_id])
    assert again == {"lost_callback": [], "expired": [], "resent": []}


def test_a_run_within_its_grace_or_its_time_is_left_alone(db):

    fresh = stored_run([(DONE, "positive")] * 3, age_s=5)
    waiting = stored_run([(DONE, "positive"), (OutcomeStatus.RETRYING, None), (OutcomeStatus.PENDING, None)],
                         age_s=120)
    done = reap(load_settings(reap_grace_s=30, reap_after_s=900), run_ids=[fresh, waiting])
    assert done == {"lost_callback": [], "expired": [], "resent": []}
    assert load(fresh).status is RunStatus.RUNNING and load(waiting).status is RunStatus.RUNNING


def test_a_run_past_its_time_fails_its_open_slots_with_a_reason_and_ends(db):

    run_id = stored_run([(DONE, "positive"), (OutcomeStatus.RUNNING, None), (OutcomeStatus.PENDING, None)],
                        age_s=1000)
    done = reap(load_settings(reap_after_s=900), run_ids=[run_id])
    assert done["expired"] == [run_id]
    run = load(run_id)
    assert run.status is RunStatus.PARTIAL  # one answer, quorum two
    reaped = [o for o in run.outcomes if o.slot in (1, 2)]
    assert all(o.status is OutcomeStatus.FAILED for o in reaped)
    assert all("never finished: the reaper gave up on it 900 s after submit" in (o.error or "") for o in reaped)
    assert run.outcomes[0].status is OutcomeStatus.SUCCEEDED


def test_a_batch_lane_run_waits_for_its_provider_batch_until_the_lane_expiry_and_is_never_resent(db):
    # A provider batch may take up to 24 h: the lane's slots wait for it (or for a collector), so the
    # reaper neither sends them as calls of their own (that would pay twice) nor gives up at
    # CHORUS_REAP_AFTER_S; it gives up at CHORUS_LANE_EXPIRE_S.
    settings = load_settings(reap_grace_s=30, reap_after_s=900, reap_resend_after_s=60, lane_expire_s=7200)
    waiting = stored_run([(DONE, "positive"), (OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)],
                         age_s=3600, lane=True)
    done = reap(settings, run_ids=[waiting])
    assert done == {"lost_callback": [], "expired": [], "resent": []}
    run = load(waiting)
    assert run.status is RunStatus.RUNNING
    assert [o.task_id for o in run.outcomes] == [None, None, None]  # nothing marked for a re-send

    old = stored_run([(DONE, "positive"), (OutcomeStatus.PENDING, None), (OutcomeStatus.PENDING, None)],
                     age_s=7300, lane=True)
    done = reap(settings, run_ids=[old])
    assert done["expired"] == [old] and done["resent"] == []
    run = load(old)
    assert run.status is RunStatus.PARTIAL
    assert all("7200 s after submit" in (o.error or "") for o in run.outcomes if o.slot in (1, 2))


def test_waiting_in_embedded_mode_runs_the_reaper_check_itself(db):
    from chorus.runs import wait_for_run

    run_id = stored_run([(DONE, "negative")] * 3, age_s=60)
    embedded = load_settings(broker_url=None, result_backend=None, database_url=PG_URL, reap_grace_s=0.2)
    assert embedded.embedded
    run = wait_for_run(run_id, timeout=15, settings=embedded)
    assert run.status == "succeeded" and run.answer == "negative"


@pytest.mark.parametrize("interval_s", [7.5, 13.0])  # neither is the default of 60 s
def test_beat_runs_the_reaper_on_the_callbacks_queue_every_reap_interval(interval_s):
    from worker import make_app
    from workflows.queues import CALLBACK_QUEUE

    app = make_app(load_settings(reap_interval_s=interval_s), set_as_current=False)
    entry = app.conf.beat_schedule["chorus-reaper"]
    assert entry["task"] == "chorus.maintenance.reap" and entry["task"] in app.tasks
    assert entry["schedule"] == interval_s
    assert app.amqp.router.route({}, "chorus.maintenance.reap")["queue"].name == CALLBACK_QUEUE


def test_a_slot_whose_task_was_lost_is_sent_again_once_and_its_run_then_ends(db, workers, stub):
    import time

    from sqlalchemy import update

    from models import WorkerOutcome

    stub.reset()
    run_id = stored_run([(DONE, "positive"), (DONE, "positive"), (OutcomeStatus.PENDING, None)], age_s=600)
    with Session.begin() as s:  # queued ten minutes ago and never claimed: its message was lost
        s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == 2)
                  .values(queued_at=utcnow() - dt.timedelta(seconds=600)))
    settings = load_settings(reap_grace_s=30, reap_resend_after_s=300, reap_after_s=900)

    assert reap(settings, run_ids=[run_id]) == {"lost_callback": [], "expired": [], "resent": [run_id]}
    second = reap(settings, run_ids=[run_id])
    assert second["resent"] == []  # once per slot, never again
    deadline = time.monotonic() + 60
    while load(run_id).outcomes[2].status is not OutcomeStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "the re-sent call never ran"
        time.sleep(0.1)
    # The re-sent call is not part of the chord: a later pass finishes the run from what was stored.
    # The stub answers fast, so that pass may already be the second one; either way exactly once.
    third = reap(settings, run_ids=[run_id])
    assert second["lost_callback"] + third["lost_callback"] == [run_id]
    run = load(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outcomes[2].attempts == 1
    assert [r["slot"] for r in stub.requests() if r["run"] == run_id] == ["2"]


def test_an_embedded_worker_started_for_other_settings_takes_no_work_from_the_environments_broker(db, monkeypatch):
    """The Python API with an embedded `settings=` while the environment names a Redis broker: the worker
    it starts reads embedded settings on the caller's database, so it cannot take tasks from that Redis."""
    from chorus.embedded import embedded_worker

    monkeypatch.setenv("CHORUS_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("CHORUS_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/elsewhere")
    embedded = load_settings(broker_url=None, result_backend=None, database_url=PG_URL)
    env = embedded_worker(embedded).env
    for name in ("CHORUS_BROKER_URL", "CHORUS_RESULT_BACKEND", "CHORUS_DATABASE_URL"):
        monkeypatch.setenv(name, env[name])  # what the worker process will read
    assert load_settings().embedded and load_settings().effective_database_url == PG_URL


def killed_mid_call(run_id: str, slot: int, *, attempts: int, lease_age_s: float = 60) -> None:
    """Leave `slot` as a worker killed with kill -9 during its call leaves it: running, its attempt counted,
    its lease no longer renewed, and no message of its task left in the broker."""
    with Session.begin() as s:
        repo.update_slot(s, run_id, slot, status=OutcomeStatus.RUNNING, attempts=attempts, task_id="killed-task",
                         hostname="dead@host", started_at=utcnow() - dt.timedelta(seconds=lease_age_s + 20),
                         lease_until=utcnow() - dt.timedelta(seconds=lease_age_s))


def test_a_slot_whose_worker_was_killed_mid_call_is_sent_again_by_one_of_two_reapers_and_called_once(
        db, workers, stub):
    import threading
    import time

    stub.reset()
    run_id = stored_run([(DONE, "positive"), (DONE, "positive"), (OutcomeStatus.PENDING, None)], age_s=120)
    killed_mid_call(run_id, 2, attempts=1)
    settings = load_settings(reap_grace_s=30, reap_resend_after_s=300, reap_after_s=900)

    # Beat's reaper and a waiting CLI's StallWatch look at the same moment: one of them sends it.
    results: list[dict[str, list[str]]] = []
    reapers = [threading.Thread(target=lambda: results.append(reap(settings, run_ids=[run_id]))) for _ in range(2)]
    for thread in reapers:
        thread.start()
    for thread in reapers:
        thread.join(30)
    assert sorted(r["resent"] for r in results) == [[], [run_id]]
    deadline = time.monotonic() + 60
    while load(run_id).outcomes[2].status is not OutcomeStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "the re-sent call never ran"
        time.sleep(0.1)
    # Not part of the chord: a reaper pass finishes the run from what was stored, once: a later pass, or the
    # second of the two reapers when the re-sent call had already answered before it looked (a busy machine).
    later = reap(settings, run_ids=[run_id])
    assert [r["lost_callback"] for r in [*results, later] if r["lost_callback"]] == [[run_id]], (results, later)
    run = load(run_id)
    assert run.status is RunStatus.SUCCEEDED
    slot = run.outcomes[2]
    assert slot.attempts == 2 and slot.task_id not in ("killed-task", "resent-by-reaper")  # the killed try counts
    assert [r["slot"] for r in stub.requests() if r["run"] == run_id] == ["2"]  # one call, by the re-sent task


def test_a_slot_whose_worker_was_killed_within_the_grace_or_at_its_last_attempt_is_not_sent_again(db):
    settings = load_settings(reap_grace_s=30, reap_resend_after_s=300, reap_after_s=900, max_attempts=4)
    recent = stored_run([(DONE, "positive"), (DONE, "positive"), (OutcomeStatus.PENDING, None)], age_s=120)
    killed_mid_call(recent, 2, attempts=1, lease_age_s=5)  # a copy of its task may still take it over
    last = stored_run([(DONE, "positive"), (DONE, "positive"), (OutcomeStatus.PENDING, None)], age_s=120)
    killed_mid_call(last, 2, attempts=4)

    done = reap(settings, run_ids=[recent, last])
    assert done == {"lost_callback": [last], "expired": [], "resent": []}
    assert load(recent).outcomes[2].status is OutcomeStatus.RUNNING
    run = load(last)
    assert run.status is RunStatus.SUCCEEDED and run.answer == "positive"  # two answers meet the quorum
    assert run.outcomes[2].status is OutcomeStatus.FAILED
    assert run.outcomes[2].error == ("its worker was lost (killed or stopped) during attempt 4 of 4, "
                                     "and no attempt is left: not sent again")
