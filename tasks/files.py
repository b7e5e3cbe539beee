"""Files API uploads end with their run: a document uploaded once for a run's calls (chorus.native)
is deleted as soon as the run is terminal (the worker's postrun hook on a finishing callback, a cancel,
and the reaper's sweep for any left behind, e.g. by a killed worker)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import signals

from models import in_session, repo
from providers import get_provider
from settings import Settings
from workflows.errors import ChorusError

log = logging.getLogger("chorus.files")


def release_files(run_ids: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Delete the uploads of terminal runs (of `run_ids`, or of every run); returns how many were
    deleted. A delete that fails stays recorded with its error and is tried again by the next sweep."""
    pending = in_session(lambda s: repo.files_to_delete(s, run_ids), write=False)
    if not pending:
        return 0
    provider = get_provider(settings)
    deleted = 0
    for file_id, run_id in pending:
        error: str | None = None
        try:
            provider.delete_file(file_id)  # type: ignore[attr-defined]
            deleted += 1
        except ChorusError as exc:
            error = f"delete failed: {exc}"
            log.warning("could not delete file %s of run %s: %s", file_id, run_id, exc)
        in_session(lambda s, f=file_id, e=error: repo.mark_file_deleted(s, f, e))  # type: ignore[misc]
    return deleted


def release_if_finished(retval: object) -> None:
    """The postrun hook's half: a callback that returned a terminal run releases that run's uploads."""
    if not isinstance(retval, dict):
        return
    run_id = retval.get("run_id")
    if isinstance(run_id, str) and retval.get("status") in ("succeeded", "partial", "failed", "cancelled"):
        try:
            release_files([run_id])
        except Exception:  # noqa: BLE001 - a cleanup must never fail the task that finished the run
            log.exception("releasing the uploads of run %s failed; the reaper's sweep will try again", run_id)


# The callbacks that can end a run (a tally, a section's finish or reduce, the reaper's finisher).
FINISHING_TASKS = frozenset({"chorus.vote.tally", "chorus.section.finish", "chorus.section.reduce"})


@signals.task_postrun.connect
def _release_after_callback(task: Any = None, retval: Any = None, **_: Any) -> None:
    if getattr(task, "name", "") in FINISHING_TASKS:
        release_if_finished(retval)
