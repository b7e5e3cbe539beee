"""Scheduled jobs: a real `celery -A worker beat` process sends them, real workers run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chorus.batch import batch_counts, find_batch
from tests.conftest import ROOT
from workflows.errors import NotFoundError

pytestmark = pytest.mark.integration


@contextmanager
def beat(schedule: Path, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, CHORUS_SCHEDULE_FILE=str(schedule))
    log = (workdir / "beat.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
         "--schedule", str(workdir / "beat-schedule")],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"beat exited with {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}; beat log: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def succeeded(name: str) -> int:
    try:
        return batch_counts(find_batch(name).id).succeeded
    except NotFoundError:
        return 0


def test_beat_runs_an_inbox_job_and_its_batch_completes_then_picks_up_a_new_file(workers, stub, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"mail{i}.txt").write_text(f"Mail {i}: I love this, excellent service.\n")
    schedule = tmp_path / "jobs.json"
    schedule.write_text(json.dumps({"jobs": [{
        "name": "inbox", "kind": "inbox", "every_seconds": 1, "folder": str(inbox), "batch": "beat-inbox",
        "pattern": "vote", "options": {"labels": "positive,negative", "voters": 2},
    }]}))

    with beat(schedule, tmp_path) as proc:
        wait_until(lambda: succeeded("beat-inbox") == 3, 60, "the first 3 documents", proc, tmp_path / "beat.log")
        (inbox / "mail3.txt").write_text("Mail 3: terrible, a waste of money.\n")
        wait_until(lambda: succeeded("beat-inbox") == 4, 60, "the new file", proc, tmp_path / "beat.log")

    counts = batch_counts(find_batch("beat-inbox").id)
    assert (counts.total, counts.succeeded, counts.failed) == (4, 4, 0)


def test_a_scheduled_job_runs_the_task_file_it_names(workers, stub, tmp_path):
    from chorus.runs import get_run
    from models import Session, repo

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "ticket.txt").write_text("Since the update nobody on our team can log in; we are locked out.\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "urgency.toml").write_text((ROOT / "examples" / "ticket-urgency.toml").read_text())
    schedule = tmp_path / "jobs.toml"
    schedule.write_text(f'[[jobs]]\nname = "tickets"\nkind = "inbox"\nevery_seconds = 1\nfolder = "{inbox}"\n'
                        f'batch = "beat-tickets"\ntask = "tasks/urgency.toml"\n')

    with beat(schedule, tmp_path) as proc:
        wait_until(lambda: succeeded("beat-tickets") == 1, 60, "the ticket", proc, tmp_path / "beat.log")

    with Session() as s:
        (stored,) = repo.runs_of_batch(s, find_batch("beat-tickets").id)
    run = get_run(stored.id)
    assert run.task is not None and run.task["name"] == "ticket-urgency"
    assert sorted(str(o.prompt_variant) for o in run.outcomes) == ["cannot-do", "cannot-do", "money-data-outage"]
    assert run.answer == "urgent"


def test_beat_refuses_a_bad_schedule_file_at_start_up_naming_the_job_and_field(postgres, tmp_path):
    schedule = tmp_path / "jobs.toml"
    schedule.write_text('[[jobs]]\nname = "retry"\nkind = "retry_failed"\nbatch = "x"\n')
    with beat(schedule, tmp_path) as proc:
        code = proc.wait(60)
    assert code == 2
    log = (tmp_path / "beat.log").read_text()
    assert "job 1 (retry)" in log and "give exactly one of every_minutes, every_seconds or at" in log
