"""Cancelling runs: their open slots, their callbacks, their uploads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from chorus.embedded import commands as embedded_commands
from chorus.runs.app import celery_app, forget, prepare
from models import Pattern, in_session, repo
from settings import Settings
from tasks import dispatch, patterns
from tasks.files import release_files

log = logging.getLogger("chorus.runs")


CANCEL_CHUNK = 500


def cancel_runs(run_ids: Sequence[str], reason: str, settings: Settings) -> repo.Cancelled:
    """Cancel the open runs among `run_ids` (`repo.cancel_runs`: slots not yet taken are never called,
    calls in flight finish and are recorded), tally at once the votes whose voters had all finished
    (they keep their real result), and take the cancelled runs' messages out of the broker."""
    prepare(settings)
    cancelled: list[str] = []
    settled: list[str] = []
    kinds: dict[str, Pattern] = {}
    for i in range(0, len(run_ids), CANCEL_CHUNK):
        done = _cancel_chunk(list(run_ids[i:i + CANCEL_CHUNK]), reason)
        cancelled += done.cancelled
        settled += done.settled
        kinds.update(done.patterns)
    for run_id in settled:
        settle = patterns.entry(kinds[run_id]).settle
        if settle is not None:
            settle(run_id)
    for run_id in cancelled:
        forget(run_id)
    if cancelled:
        if settings.embedded:
            embedded_commands.purge_runs(settings, cancelled)
        else:
            with contextlib.suppress(Exception):  # best effort: a message left in the queue skips its call
                dispatch.purge_queued(celery_app(settings), cancelled)
    if cancelled or settled:
        try:
            release_files([*cancelled, *settled], settings)  # their Files API uploads end with them
        except Exception:  # noqa: BLE001 - the reaper's sweep deletes what is left; the cancel stands
            log.exception("deleting the uploads of cancelled runs failed")
    return repo.Cancelled(cancelled, settled, kinds)


def _cancel_chunk(run_ids: list[str], reason: str) -> repo.Cancelled:
    settles = patterns.settling()
    return in_session(lambda s: repo.cancel_runs(s, run_ids, reason, settles=settles))
