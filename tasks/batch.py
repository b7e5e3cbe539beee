"""Batch tasks: `chorus.batch.dispatch` sends the chords of a group of stored runs, so a batch's
submitter is not bounded by one process publishing every voter's message."""

from __future__ import annotations

from celery import Task, shared_task

from tasks import db, dispatch


@shared_task(name=dispatch.BATCH_DISPATCH, bind=True)
def send_group(self: Task, run_ids: list[str]) -> int:
    db.bind()
    return dispatch.send_stored(self.app, run_ids)
