"""Beat sends the batch lane's collect and poll only while the lane has work of their kind, so Flower's
task list is not filled with empty `chorus.lane.collect` / `chorus.lane.poll` ticks when no lane run
exists. The check (`repo.lane_work`) on SQLite and PostgreSQL, the beat entry, and a real `celery beat`."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import worker
from models import OutcomeRole, Pattern, RunStatus, Session, ensure_schema, get_engine, repo
from models.tables import utcnow
from settings import load_settings
from tests.conftest import ROOT, clean_env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request, tmp_path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'chorus.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    ensure_schema(url)
    get_engine(url)
    yield url
    get_engine(os.environ["CHORUS_DATABASE_URL"])


def lane_run(lane: str | None = "batch") -> str:
    config: dict = {"labels": ["a", "b"], "dispatch": {"leaders": []}}
    if lane:
        config["lane"] = lane
    with Session.begin() as s:
        run = repo.create_run(s, text="t", external_id="d", pattern=Pattern.VOTE, provider="anthropic",
                              config=config, slots=[repo.SlotSpec(i, OutcomeRole.VOTER, "m") for i in range(2)])
        run.status = RunStatus.RUNNING
        return run.id


def lane_work() -> repo.LaneWork:
    with Session() as s:
        return repo.lane_work(s)


def put_in_provider_batch(run_id: str, batch_id: str) -> None:
    now = utcnow()
    with Session.begin() as s:
        repo.claim_lane_slots(s, [(run_id, 0), (run_id, 1)], marker=f"lane:{batch_id}", now=now, hold_s=300)
        repo.record_provider_batch(s, batch_id=batch_id, model="m", status="in_progress",
                                   slots=[(run_id, 0), (run_id, 1)], marker=f"lane:{batch_id}", now=now)


def test_the_lane_has_work_to_collect_while_a_released_call_waits_and_to_poll_while_a_batch_is_open(db_url):
    if db_url.startswith("postgresql"):  # the session's database holds other tests' lane runs: judge by change
        with Session.begin() as s:
            repo.cancel_runs(s, [r for r, _, _ in repo.lane_candidates(s, limit=100_000)], "cleared by a test")
            for pb in repo.open_provider_batches(s, limit=100_000):
                repo.note_provider_batch(s, pb.id, collected_at=utcnow())
    assert lane_work() == repo.LaneWork(collect=False, poll=False)

    lane_run(lane=None)  # a synchronous run is none of the lane's business
    assert lane_work() == repo.LaneWork(collect=False, poll=False)

    run_id = lane_run()
    assert lane_work() == repo.LaneWork(collect=True, poll=False)

    put_in_provider_batch(run_id, f"msgbatch_{run_id[:8]}")
    assert lane_work() == repo.LaneWork(collect=False, poll=True)

    with Session.begin() as s:
        repo.note_provider_batch(s, f"msgbatch_{run_id[:8]}", collected_at=utcnow())
    assert lane_work() == repo.LaneWork(collect=False, poll=False)


def test_the_beat_entries_skip_a_tick_with_no_work_send_one_with_work_and_keep_their_kind_when_saved(monkeypatch):
    app = worker.make_app(load_settings(lane_collect_s=7, lane_poll_s=11), set_as_current=False)
    collect = app.conf.beat_schedule["chorus-lane-collect"]["schedule"]
    poll = app.conf.beat_schedule["chorus-lane-poll"]["schedule"]
    long_ago = utcnow().replace(year=2000)

    monkeypatch.setattr(worker.repo, "lane_work", lambda s: repo.LaneWork(collect=False, poll=True))
    assert collect.is_due(long_ago) == (False, 7.0)  # asked again one interval later
    assert poll.is_due(long_ago) == (True, 11.0)

    restored = pickle.loads(pickle.dumps(collect))  # beat keeps its entries in a shelve
    assert isinstance(restored, worker.WhileLaneWork) and restored.work == "collect" and restored.seconds == 7.0


def test_a_lane_check_that_fails_sends_the_tick_as_a_plain_interval_would(monkeypatch):
    def down(s):
        raise OSError("connection refused")

    monkeypatch.setattr(worker.repo, "lane_work", down)
    assert worker.WhileLaneWork(5, work="poll").has_work() is True


# ----- a real beat ---------------------------------------------------------------------------------
def lane_messages(queue: Path) -> dict[str, int]:
    """How many messages of each lane task wait in the embedded broker's queue folder."""
    counts = {"chorus.lane.collect": 0, "chorus.lane.poll": 0}
    for path in queue.glob("*.msg"):
        body = path.read_bytes()
        for name in counts:
            counts[name] += f'"{name}"'.encode() in body
    return counts


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_a_real_beat_sends_no_lane_task_until_lane_work_exists_then_only_the_kind_that_has_work(tmp_path):
    """Beat on embedded mode's filesystem broker (nothing consumes: every message it sends stays in the
    folder to be counted), lane intervals of 0.3 s. Before: 10 collects and 10 polls in 3 s, no lane run."""
    data = tmp_path / "data"
    settings = load_settings(broker_url=None, result_backend=None, database_url=None, data_dir=data)
    ensure_schema(settings.effective_database_url)
    queue = data / "broker" / "queue"
    log = tmp_path / "beat.log"
    env = clean_env(CHORUS_DATA_DIR=str(data), CHORUS_LANE_COLLECT_S="0.3", CHORUS_LANE_POLL_S="0.3",
                    CHORUS_REAP_INTERVAL_S="3600")
    with log.open("wb") as out:
        beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
                                 "--schedule", str(tmp_path / "beat-schedule")],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        assert wait_for(lambda: b"beat: Starting" in log.read_bytes(), 60), log.read_text()
        time.sleep(3)  # ten lane intervals
        assert lane_messages(queue) == {"chorus.lane.collect": 0, "chorus.lane.poll": 0}, log.read_text()[-2000:]

        get_engine(settings.effective_database_url)
        try:
            run_id = lane_run()
            assert wait_for(lambda: lane_messages(queue)["chorus.lane.collect"] > 0, 30), log.read_text()[-2000:]
            assert lane_messages(queue)["chorus.lane.poll"] == 0  # no provider batch is open: nothing to poll

            put_in_provider_batch(run_id, "msgbatch_beat")
            assert wait_for(lambda: lane_messages(queue)["chorus.lane.poll"] > 0, 30), log.read_text()[-2000:]
        finally:
            get_engine(os.environ["CHORUS_DATABASE_URL"])
        assert beat.poll() is None, log.read_text()[-2000:]
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(20)
