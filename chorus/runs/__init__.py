"""Runs as the client sees them: the Celery app for the settings given, views of stored runs, and
waiting for a run to finish.

Every function takes `settings=` (default: the environment's). The database, the broker and the
result backend all follow it: `celery_app(settings)` makes (once) an app from those settings, and
every message chorus sends goes through it.

The package: `app` (the Celery app, the store, the callbacks this process awaits), `views` (RunView,
OutcomeView), `cancel`, `workers` (the embedded worker), `waiting`. Every name is re-exported here."""

from __future__ import annotations

from chorus.runs.app import (
    MAX_PENDING,
    celery_app,
    folder_store_note,
    forget,
    not_found,
    prepare,
    remember,
    searched,
    store_exists,
)
from chorus.runs.cancel import CANCEL_CHUNK, cancel_runs
from chorus.runs.views import OutcomeView, RunView, get_run
from chorus.runs.waiting import wait_for_run
from chorus.runs.workers import embedded_workers, ensure_workers, start_embedded, stop_embedded

__all__ = [
    "CANCEL_CHUNK", "MAX_PENDING", "OutcomeView", "RunView", "cancel_runs", "celery_app", "embedded_workers",
    "ensure_workers", "folder_store_note", "forget", "get_run", "not_found", "prepare", "remember", "searched",
    "start_embedded", "stop_embedded", "store_exists", "wait_for_run",
]
