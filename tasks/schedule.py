"""Scheduled jobs: `chorus.schedule.run_job` (sent by beat), and the beat start-up hook that loads
and checks CHORUS_SCHEDULE_FILE."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Task, signals
from pydantic import ValidationError

from chorus.schedule import Job, beat_entries, load_jobs, run_job
from providers.errors import ConfigError
from settings import get_settings
from worker import CALLBACK_QUEUE, app

log = logging.getLogger("chorus.schedule")


@app.task(name="chorus.schedule.run_job", bind=True)
def run_scheduled_job(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    name = str(job.get("name"))
    try:
        return run_job(Job.model_validate(job))
    except (ConfigError, ValidationError) as exc:  # a job that cannot run says why in its result and the log
        log.error("scheduled job %s: %s", name, exc)
        return {"job": name, "error": str(exc)}


@signals.beat_init.connect
def _load_schedule(sender: Any = None, **_: Any) -> None:
    path = get_settings().schedule_file
    if path is None:
        return
    try:
        jobs = load_jobs(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None  # not an Exception: celery's signal dispatch does not swallow it
    sender.scheduler.update_from_dict(beat_entries(jobs, CALLBACK_QUEUE))
    for job in jobs:
        log.info("scheduled job %s: %s", job.name, job.describe())
