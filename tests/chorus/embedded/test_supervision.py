"""The workers chorus starts itself are restarted when they die while a command still needs them,
within a budget, and a worker that keeps dying (or never starts) still fails `check()` fast.

Real `celery worker` processes on the embedded (filesystem) broker, killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from chorus.embedded import EMBEDDED_RESTARTS, WorkerProcess, embedded_worker
from settings import load_settings
from tests.conftest import clean_env, pids_matching
from workflows.errors import ChorusError

pytestmark = pytest.mark.integration


def worker(folder: Path, restarts: int, app: str = "worker") -> WorkerProcess:
    env = clean_env(CHORUS_DATA_DIR=str(folder))
    return WorkerProcess(["callbacks"], log_dir=folder, name="sup", pool="threads", concurrency=1, env=env,
                         extra_args=("--without-heartbeat",), app=app, restarts=restarts)


def kill(proc: WorkerProcess) -> int:
    assert proc.proc is not None
    pid = proc.proc.pid
    os.killpg(pid, signal.SIGKILL)  # the worker and its pool, no warm shutdown
    return pid


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_after_it_was_ready_is_started_again_and_the_log_says_why(tmp_path):
    proc = worker(tmp_path, restarts=2).start()
    try:
        proc.wait_ready()
        old = kill(proc)
        # Nobody calls check(): the supervising thread notices on its own.
        wait_for(lambda: proc.restarts and proc.pid not in (None, old))
        proc.wait_ready()
        proc.check()  # a restarted worker is not an error
        assert [(r.old_pid, r.returncode) for r in proc.restarts] == [(old, -signal.SIGKILL)]
        assert "restarting it (1 of 2 restarts allowed in 60 s)" in (tmp_path / "sup.log").read_text()
        assert proc.proc is not None and proc.proc.poll() is None
    finally:
        proc.stop(timeout=5)
    assert pids_matching(str(tmp_path)) == []  # stop() ends the supervision and every process


def test_a_worker_that_keeps_dying_is_given_up_and_check_fails_with_its_output(tmp_path):
    proc = worker(tmp_path, restarts=1).start()
    try:
        proc.wait_ready()
        first = kill(proc)
        wait_for(lambda: proc.pid not in (None, first))
        proc.wait_ready()
        kill(proc)
        with pytest.raises(ChorusError, match=r"exited with code -9; not restarted: it exited 2 times within 60 s"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the way wait_for_run(check=...) calls it
                proc.check()
                time.sleep(0.05)
        assert len(proc.restarts) == 1
    finally:
        proc.stop(timeout=5)
    assert pids_matching(str(tmp_path)) == []


def test_a_worker_that_dies_before_it_is_ready_is_not_restarted(tmp_path):
    proc = worker(tmp_path, restarts=3, app="no_such_module_anywhere").start()
    try:
        with pytest.raises(ChorusError, match=r"(?s)not restarted: it exited before it was ready.*no_such_module"):
            proc.wait_ready(timeout=60)
        assert proc.restarts == []
    finally:
        proc.stop(timeout=5)


def test_without_a_restart_budget_a_dead_worker_fails_check_as_before(tmp_path):
    proc = worker(tmp_path, restarts=0).start()
    try:
        proc.wait_ready()
        kill(proc)
        wait_for(lambda: proc.proc is not None and proc.proc.poll() is not None)
        with pytest.raises(ChorusError, match="exited with code -9"):
            proc.check()
        assert proc.restarts == []
    finally:
        proc.stop(timeout=5)


def test_the_embedded_worker_is_supervised(tmp_path):
    proc = embedded_worker(load_settings(data_dir=tmp_path))
    assert proc.max_restarts == EMBEDDED_RESTARTS >= 1
    assert proc.proc is None  # made, not started
