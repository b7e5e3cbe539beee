"""The batch lane's pieces: splitting by count and bytes, the follower rule, what a result line means for
its slot, and the claims on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from models import OutcomeStatus, Pattern, RunStatus, Session, ensure_schema, get_engine, repo
from models.tables import OutcomeRole, utcnow
from providers.anthropic_provider import BatchLine
from settings import load_settings
from tasks.lane import custom_id, parse_custom_id, ready_slots, result_fields, split_batches
from workflows.errors import PermanentError, RetryableError


def test_parts_hold_at_most_the_request_limit_in_order():
    items = [(i, 10) for i in range(7)]
    assert split_batches(items, max_requests=3, max_bytes=10_000) == [[0, 1, 2], [3, 4, 5], [6]]


def test_parts_hold_at_most_the_byte_limit_in_order():
    items = [("a", 40), ("b", 40), ("c", 30), ("d", 90), ("e", 5)]
    assert split_batches(items, max_requests=100, max_bytes=100) == [["a", "b"], ["c"], ["d", "e"]]


def test_an_item_above_the_byte_limit_goes_alone_and_nothing_is_empty():
    assert split_batches([("a", 5), ("big", 500), ("b", 5)], max_requests=10, max_bytes=100) == [
        ["a"], ["big"], ["b"]]
    assert split_batches([], max_requests=3, max_bytes=10) == []


def test_a_custom_id_names_run_and_slot_and_reads_back():
    run_id = "0123456789abcdef0123456789abcdef"
    assert custom_id(run_id, 12) == f"{run_id}-12"
    assert parse_custom_id(custom_id(run_id, 12)) == (run_id, 12)
    assert parse_custom_id("no-slot-here") is None


def test_followers_wait_until_their_runs_leaders_are_done():
    config: dict = {"dispatch": {"leaders": [0], "followers": [1, 2]}}
    candidates: list[tuple[str, int, dict]] = [("r1", 0, config), ("r1", 1, config), ("r2", 1, config),
                                               ("r3", 1, {"dispatch": {"leaders": []}}), ("r4", 2, {})]
    statuses = {"r1": {0: OutcomeStatus.PENDING, 1: OutcomeStatus.PENDING},
                "r2": {0: OutcomeStatus.SUCCEEDED, 1: OutcomeStatus.PENDING}}
    assert ready_slots(candidates, statuses) == [("r1", 0), ("r2", 1), ("r3", 1), ("r4", 2)]


def slot(attempts: int = 1, run_status: RunStatus = RunStatus.RUNNING) -> repo.LaneSlot:
    claim = repo.Claim("r1", 0, OutcomeRole.VOTER, "claude-haiku-4-5", "direct", None, attempts, utcnow())
    return repo.LaneSlot(claim, OutcomeStatus.RUNNING, run_status, "cancelled by the user"
                         if run_status is RunStatus.CANCELLED else None)


SETTINGS = load_settings(max_attempts=3)


@pytest.mark.parametrize("line", [BatchLine("r1-0", "expired"), BatchLine("r1-0", "canceled"),
                                  BatchLine("r1-0", "errored", error=RetryableError("api_error"))])
def test_a_request_that_may_be_tried_again_goes_back_to_pending_out_of_its_batch(line):
    fields = result_fields(slot(attempts=2), line, SETTINGS)
    assert fields["status"] is OutcomeStatus.PENDING and fields["provider_batch"] is None
    assert "attempt 2 of 3" in fields["error"]


def test_a_request_out_of_attempts_fails_with_the_reason():
    fields = result_fields(slot(attempts=3), BatchLine("r1-0", "expired"), SETTINGS)
    assert fields["status"] is OutcomeStatus.FAILED and "gave up after 3 attempt(s)" in fields["error"]
    assert "expired" in fields["error"]


def test_a_permanent_error_fails_at_once():
    fields = result_fields(slot(attempts=1), BatchLine("r1-0", "errored", error=PermanentError("bad request")),
                           SETTINGS)
    assert fields["status"] is OutcomeStatus.FAILED and "bad request" in fields["error"]


def test_a_canceled_request_of_a_cancelled_run_ends_cancelled_and_is_not_sent_again():
    fields = result_fields(slot(run_status=RunStatus.CANCELLED), BatchLine("r1-0", "canceled"), SETTINGS)
    assert fields["status"] is OutcomeStatus.CANCELLED and fields["error"] == "cancelled by the user"
    expired = result_fields(slot(run_status=RunStatus.CANCELLED), BatchLine("r1-0", "expired"), SETTINGS)
    assert expired["status"] is OutcomeStatus.FAILED and "not retried" in expired["error"]


# ----- the claims, on both databases ----------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'chorus.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    ensure_schema(url)
    get_engine(url)
    yield url
    get_engine(os.environ["CHORUS_DATABASE_URL"])


def lane_run(lane: str | None = "batch", leaders: tuple[int, ...] = ()) -> str:
    config = {"labels": ["a", "b"], "dispatch": {"leaders": list(leaders)}}
    if lane:
        config["lane"] = lane
    with Session.begin() as s:
        run = repo.create_run(s, text="t", external_id="d", pattern=Pattern.VOTE, provider="anthropic",
                              config=config, slots=[repo.SlotSpec(i, OutcomeRole.VOTER, "m") for i in range(3)])
        run.status = RunStatus.RUNNING
        return run.id


def test_only_released_slots_of_running_lane_runs_are_candidates(db_url):
    lane, sync = lane_run(), lane_run(lane=None)
    with Session.begin() as s:
        repo.update_slot(s, lane, 2, queued_at=None)  # an adaptive voter not released yet
    with Session() as s:
        found = [(r, sl) for r, sl, _ in repo.lane_candidates(s, limit=10_000) if r in (lane, sync)]
    assert sorted(found) == [(lane, 0), (lane, 1)]


def test_a_slot_is_claimed_once_and_a_recorded_batch_makes_it_running(db_url):
    run_id = lane_run()
    now = utcnow()
    with Session.begin() as s:
        first = repo.claim_lane_slots(s, [(run_id, 0), (run_id, 1)], marker="lane:a", now=now, hold_s=300)
    with Session.begin() as s:
        second = repo.claim_lane_slots(s, [(run_id, 0), (run_id, 1)], marker="lane:b", now=now, hold_s=300)
    assert [(c.slot, c.attempts) for c in first] == [(0, 1), (1, 1)] and second == []
    with Session.begin() as s:
        taken = repo.record_provider_batch(s, batch_id="msgbatch_1", model="m", status="in_progress",
                                           slots=[(run_id, 0), (run_id, 1)], marker="lane:a", now=now)
    assert taken == 2
    with Session() as s:
        rows = repo.outcomes_by_slot(s, run_id)
        assert [rows[i].provider_batch for i in range(3)] == ["msgbatch_1", "msgbatch_1", None]
        assert rows[0].status is OutcomeStatus.RUNNING and rows[0].task_id is None
        assert [(r, sl) for r, sl, _ in repo.lane_candidates(s, limit=10_000) if r == run_id] == [(run_id, 2)]


def test_a_failed_create_gives_the_claims_back_and_a_stale_claim_is_released(db_url):
    run_id = lane_run()
    now = utcnow()
    with Session.begin() as s:
        repo.claim_lane_slots(s, [(run_id, 0)], marker="lane:a", now=now, hold_s=300)
        repo.claim_lane_slots(s, [(run_id, 1)], marker="lane:b", now=now, hold_s=300)
    with Session.begin() as s:
        repo.release_lane_claims(s, [(run_id, 0)], marker="lane:a", note="HTTP 500")
        assert repo.release_stale_lane_claims(s, now=now + dt.timedelta(seconds=10)) == []
    with Session.begin() as s:
        # Each released claim's deadline: where the lane looks for a batch its collector may have created.
        assert now + dt.timedelta(seconds=300) in repo.release_stale_lane_claims(s, now=now + dt.timedelta(seconds=301))
    with Session() as s:
        rows = repo.outcomes_by_slot(s, run_id)
    assert [(rows[i].task_id, rows[i].attempts) for i in range(2)] == [(None, 0), (None, 0)]
    assert rows[0].error == "HTTP 500"


def test_a_result_is_written_only_while_the_slot_is_open_and_names_the_batch(db_url):
    run_id = lane_run()
    now = utcnow()
    with Session.begin() as s:
        repo.claim_lane_slots(s, [(run_id, 0)], marker="lane:a", now=now, hold_s=300)
        repo.record_provider_batch(s, batch_id="msgbatch_2", model="m", status="in_progress",
                                   slots=[(run_id, 0)], marker="lane:a", now=now)
    with Session.begin() as s:
        assert not repo.write_lane_result(s, run_id, 0, "msgbatch_other", status=OutcomeStatus.SUCCEEDED)
        assert repo.write_lane_result(s, run_id, 0, "msgbatch_2", status=OutcomeStatus.SUCCEEDED, answer="a")
        assert not repo.write_lane_result(s, run_id, 0, "msgbatch_2", status=OutcomeStatus.FAILED)
    with Session() as s:
        assert repo.outcomes_by_slot(s, run_id)[0].status is OutcomeStatus.SUCCEEDED


def test_a_provider_batch_is_cancellable_once_every_run_it_carries_is_cancelled(db_url):
    first, second = lane_run(), lane_run()
    now = utcnow()
    with Session.begin() as s:
        repo.claim_lane_slots(s, [(first, 0), (second, 0)], marker="lane:a", now=now, hold_s=300)
        repo.record_provider_batch(s, batch_id="msgbatch_3", model="m", status="in_progress",
                                   slots=[(first, 0), (second, 0)], marker="lane:a", now=now)
    with Session.begin() as s:
        repo.cancel_runs(s, [first], "stop")
    with Session() as s:
        assert "msgbatch_3" not in repo.cancellable_provider_batches(s)
    with Session.begin() as s:
        repo.cancel_runs(s, [second], "stop")
    with Session() as s:
        assert "msgbatch_3" in repo.cancellable_provider_batches(s)


def test_an_adopted_provider_batch_is_stored_once_never_cancelled_and_a_late_recorder_joins_it(db_url):
    """A batch a stopped collector created is adopted with no slot (the poller then records what it paid);
    it may be another program's, so it is never cancelled; if its own collector was only stalled and
    records it after all, its slots join the adopted row instead of failing on the duplicate id."""
    run_id = lane_run()
    now = utcnow()
    with Session.begin() as s:
        assert repo.adopt_provider_batch(s, batch_id="msgbatch_adopted", status="in_progress", created_at=now,
                                         note="adopted")
    with Session.begin() as s:
        assert not repo.adopt_provider_batch(s, batch_id="msgbatch_adopted", status="in_progress", created_at=now,
                                             note="adopted")
        assert repo.known_provider_batches(s, ["msgbatch_adopted", "msgbatch_unknown"]) == {"msgbatch_adopted"}
        assert "msgbatch_adopted" not in repo.cancellable_provider_batches(s)
    with Session.begin() as s:
        repo.claim_lane_slots(s, [(run_id, 0)], marker="lane:late", now=now, hold_s=300)
    with Session.begin() as s:
        assert repo.record_provider_batch(s, batch_id="msgbatch_adopted", model="m", status="in_progress",
                                          slots=[(run_id, 0)], marker="lane:late", now=now) == 1
    with Session() as s:
        assert repo.outcomes_by_slot(s, run_id)[0].provider_batch == "msgbatch_adopted"
