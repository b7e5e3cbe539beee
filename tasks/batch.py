"""Batch tasks: `chorus.batch.dispatch` sends the chords of a group of stored runs."""

from __future__ import annotations

from celery import Task

from chorus.batch import send_stored
from models import get_engine
from worker import app


@app.task(name="chorus.batch.dispatch", bind=True)
def dispatch(self: Task, run_ids: list[str]) -> int:
    get_engine()
    return send_stored(run_ids)
