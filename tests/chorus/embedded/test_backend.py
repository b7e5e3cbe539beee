"""The embedded result backend: an atomic counter shared by processes, so chords join natively."""

from __future__ import annotations

import multiprocessing

import pytest
from celery import Celery

from chorus.embedded.backend import SQLiteKVBackend


def backend_at(path: str) -> SQLiteKVBackend:
    app = Celery("t", backend=f"chorus.embedded.backend:SQLiteKVBackend://{path}")
    backend = app.backend
    assert isinstance(backend, SQLiteKVBackend)
    return backend


def _bump(path: str, times: int) -> None:
    backend = backend_at(path)
    for _ in range(times):
        backend.incr(b"counter")


@pytest.mark.integration  # processes of its own
def test_incr_is_atomic_across_processes(tmp_path):
    path = str(tmp_path / "results.db")
    backend_at(path)  # create the table first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(path, 200)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert backend_at(path).get(b"counter") == 800


def test_results_round_trip_and_expire(tmp_path):
    backend = backend_at(str(tmp_path / "results.db"))
    backend.store_result("task-1", {"answer": "a"}, "SUCCESS")
    assert backend.get_task_meta("task-1")["result"] == {"answer": "a"}
    backend.expire(backend.get_key_for_task("task-1"), -1)
    assert backend.get(backend.get_key_for_task("task-1")) is None


def test_the_backend_says_it_joins_chords_natively(tmp_path):
    backend = backend_at(str(tmp_path / "results.db"))
    assert backend.implements_incr and backend.supports_native_join
    # Celery swaps in the counter-based chord join for backends that implement incr.
    assert backend.apply_chord == backend._apply_chord_incr
