"""The embedded worker of this process, per data directory: started gated, stopped when done."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from chorus.embedded import WorkerProcess, embedded_worker, take_early
from chorus.embedded import commands as embedded_commands
from chorus.runs.app import prepare
from chorus.runs.cancel import cancel_runs
from models import in_session, repo
from settings import Settings

# The embedded worker running this process's work, per data directory: the CLI command's own, or one
# the Python API started (stopped when the process exits).
_workers: dict[Path, WorkerProcess] = {}


def start_embedded(settings: Settings) -> tuple[WorkerProcess, embedded_commands.Swept]:
    """Clear the stale work left in the embedded queue by commands that ended (cancelling their open
    runs, see `chorus.embedded.commands`), then let this process's worker take work. The worker boots (a
    second or more) while the schema is checked and the queue swept, gated until then; one the command
    launched earlier (`chorus.embedded.start_early`) is taken over."""
    process = take_early(settings) or embedded_worker(settings, gated=True).start()
    try:
        prepare(settings)
        embedded_commands.register(settings)
        since = embedded_commands.registered_at(settings)
        own_database = settings.database_url is None
        swept = embedded_commands.sweep(
            settings,
            since=since,
            terminal=lambda ids: {r for r, st in in_session(lambda s: repo.run_statuses(s, ids), write=False).items()
                                  if st.terminal},
            open_runs=(lambda: in_session(lambda s: repo.open_runs_before(s, dt.datetime.fromtimestamp(since, dt.UTC)),
                                          write=False)) if own_database else None,
            cancel=lambda ids, reason: cancel_runs(ids, reason, settings).cancelled,
        )
    except BaseException:
        process.stop()
        raise
    process.open_gate()
    _workers[settings.data_path] = process
    return process, swept


def stop_embedded(settings: Settings) -> None:
    process = _workers.pop(settings.data_path, None)
    if process is not None:
        process.stop()


def ensure_workers(settings: Settings) -> WorkerProcess | None:
    """In embedded mode, the worker that runs this process's work, started now (and ready) when none
    runs yet; the Python API's waits call it, so `submit_vote` then `wait_for_run` works with no broker.
    A worker started here is stopped when the process exits. None with a broker (your workers run it)."""
    if not settings.embedded:
        return None
    process = _workers.get(settings.data_path)
    if process is None:
        process, _ = start_embedded(settings)
        atexit.register(stop_embedded, settings)
        process.wait_ready()
    return process


@contextlib.contextmanager
def embedded_workers(settings: Settings) -> Iterator[tuple[WorkerProcess, embedded_commands.Swept] | None]:
    """For one command: in embedded mode, sweep, start the worker, and stop it at the end, however it ends."""
    if not settings.embedded:
        yield None
        return
    process, swept = start_embedded(settings)
    try:
        yield process, swept
    finally:
        stop_embedded(settings)
