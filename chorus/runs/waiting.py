"""Waiting for a run to finish: on its callback when this process sent it, else by polling the database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from celery.exceptions import TimeoutError as CeleryTimeout

from chorus.runs.app import celery_app, forget, not_found, prepare, store_exists
from chorus.runs.views import RunView, get_run
from chorus.runs.workers import ensure_workers
from models import in_session, repo
from settings import Settings, get_settings
from tasks.maintenance import StallWatch
from workflows.errors import RunTimeout


def wait_for_run(
    run_id: str,
    *,
    timeout: float | None = None,
    settings: Settings | None = None,
    check: Callable[[], None] | None = None,
) -> RunView:
    """Wait until the run is terminal and return it. `check` is called while waiting (the embedded
    workers use it to fail fast when their process died). Raises RunTimeout (a TimeoutError) after
    `timeout` seconds (default CHORUS_RUN_TIMEOUT_S); the run goes on. A run that failed is returned
    with its `reason`; `wait_for_run(...).raise_for_status()` raises RunFailed instead.

    The database is the truth. With a broker, the tally's result message wakes us first; with no
    result to wait on (embedded mode, or a run submitted by another process) we poll the run row.
    """
    settings = settings or get_settings()
    accepts = "give the id that `submit_vote` or `submit_section` returned"
    if not store_exists(settings):
        raise not_found("run", run_id, accepts, settings)
    prepare(settings)
    limit = timeout if timeout is not None else settings.run_timeout_s
    deadline = time.monotonic() + limit
    pending = forget(run_id)
    if pending is not None and not settings.embedded:
        with contextlib.suppress(CeleryTimeout):
            pending.get(timeout=limit, interval=0.02, propagate=False)
    started = False
    delay = 0.005
    # No beat runs the reaper in embedded mode: the waiting process checks its run itself.
    stall = StallWatch(celery_app(settings), run_id, settings) if settings.embedded else None
    while True:
        status = in_session(lambda s: repo.run_status(s, run_id), write=False)
        if status is None:
            raise not_found("run", run_id, accepts, settings)
        if status.terminal:
            return get_run(run_id, settings=settings)
        if not started:
            started = True
            own = ensure_workers(settings)
            if check is None and own is not None:
                check = own.check
        if check is not None:
            check()
        if stall is not None:
            stall()
        if time.monotonic() > deadline:
            raise RunTimeout(f"run {run_id} is still {status.value} after {limit:.0f} s; "
                             f"`chorus status {run_id}` shows it later")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.025)
