"""Scheduled jobs for Celery beat, read from the file named by CHORUS_SCHEDULE_FILE (JSON or TOML).

    # TOML                                   // JSON: {"jobs": [{...}, ...]}
    [[jobs]]
    name = "inbox"
    kind = "inbox"              # every N minutes: new files of a folder into a named batch
    every_minutes = 5
    folder = "/srv/inbox"
    batch = "inbox"
    pattern = "vote"
    options = { labels = "positive,negative,neutral", voters = 3 }
    lane = "batch"              # optional: the Message Batches API, half price, results within hours
    # or your own task file (relative to this file); options then override its fields:
    # task = "tasks/ticket-urgency.toml"

    [[jobs]]
    name = "nightly-retry"
    kind = "retry_failed"       # re-run the failed (and partial) documents of a batch
    batch = "inbox"
    at = "03:00"                # every day at this UTC time (or every_minutes / every_seconds)

The file is checked when beat starts; a bad file stops it with a message naming the job and field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from celery import Task, shared_task, signals
from celery.schedules import crontab
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from settings import get_settings
from workflows.errors import ConfigError
from workflows.queues import CALLBACK_QUEUE
from workflows.taskfile import TaskFileError, task_from_json

log = logging.getLogger("chorus.schedule")


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    kind: Literal["inbox", "retry_failed"]
    batch: str = Field(min_length=1, max_length=200)
    every_minutes: float | None = Field(default=None, gt=0)
    every_seconds: float | None = Field(default=None, gt=0)
    at: str | None = None
    folder: Path | None = None
    pattern: Literal["vote", "section", "orchestrate"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    task: Path | None = None  # a task file; read when the schedule is loaded, sent resolved (`task_spec`)
    task_spec: dict[str, Any] | None = None
    # "batch": the job's calls go through Anthropic's Message Batches API at half price (results within
    # hours); needs the anthropic provider (beat is running anyway).
    lane: Literal["sync", "batch"] = "sync"

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("expected a UTC time of day as HH:MM, e.g. 03:00")
        return value

    @model_validator(mode="after")
    def _check(self) -> Job:
        timings = [t for t in (self.every_minutes, self.every_seconds, self.at) if t is not None]
        if len(timings) != 1:
            raise ValueError("give exactly one of every_minutes, every_seconds or at (\"HH:MM\", UTC)")
        if self.kind == "inbox":
            if self.folder is None or (self.pattern is None and self.task is None and self.task_spec is None):
                raise ValueError("an inbox job needs folder and pattern (or a task file)")
        elif self.folder is not None or self.pattern is not None or self.options or self.task is not None \
                or self.lane != "sync":
            raise ValueError("a retry_failed job takes only batch and its timing (the batch keeps its pattern "
                             "and lane)")
        return self

    def schedule(self) -> Any:
        if self.at is not None:
            hour, minute = self.at.split(":")
            return crontab(hour=int(hour), minute=int(minute))
        seconds = self.every_seconds if self.every_seconds is not None else (self.every_minutes or 0) * 60
        return timedelta(seconds=seconds)

    def describe(self) -> str:
        when = f"daily at {self.at} UTC" if self.at else (
            f"every {self.every_seconds:g} s" if self.every_seconds else f"every {self.every_minutes:g} min")
        if self.kind == "inbox":
            what = f"task {self.task_spec['name']!r}" if self.task_spec else self.pattern
            lane = ", batch lane" if self.lane == "batch" else ""
            return f"{when}: new files of {self.folder} into batch {self.batch!r} ({what}{lane})"
        return f"{when}: re-run the failed documents of batch {self.batch!r}"


def load_jobs(path: Path) -> list[Job]:
    """The jobs of a schedule file; ConfigError names the file, the job and the problem."""
    where = f"schedule file {path} (CHORUS_SCHEDULE_FILE)"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8")) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") \
            from None
    items = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected a non-empty list under \"jobs\"")
    jobs: list[Job] = []
    for n, item in enumerate(items, 1):
        label = f"job {n}" + (f" ({item.get('name')})" if isinstance(item, dict) and item.get("name") else "")
        try:
            job = Job.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise ConfigError(f"{where}: {label}: {problems}") from None
        jobs.append(with_task(job, path.parent, f"{where}: {label}: task"))
    names = [j.name for j in jobs]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ConfigError(f"{where}: job names must be unique; repeated: {', '.join(dupes)}")
    return jobs


def with_task(job: Job, base: Path, where: str) -> Job:
    """The job with its task file read and resolved (so beat sends the task itself, and workers need
    no copy of the file); a relative path is read from the schedule file's folder."""
    if job.task is None:
        return job
    path = job.task if job.task.is_absolute() else base / job.task
    try:
        from chorus.taskfile import load_task  # heavy: see run_job

        task = load_task(path)
    except TaskFileError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if job.pattern is not None and job.pattern != task.pattern:
        raise ConfigError(f"{where}: {path} is a {task.pattern} task but the job says pattern = {job.pattern!r}")
    return job.model_copy(update={"task": path, "task_spec": task.to_json(), "pattern": task.pattern})


def _problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    field = ".".join(str(p) for p in error["loc"])
    return f"{field}: {message}" if field else message


def beat_entries(jobs: list[Job], queue: str) -> dict[str, dict[str, Any]]:
    """Beat sends the checked job itself (a small JSON object), so workers need no schedule file."""
    return {f"chorus-job-{j.name}": {"task": "chorus.schedule.run_job", "schedule": j.schedule(),
                                     "args": [j.model_dump(mode="json")], "options": {"queue": queue}} for j in jobs}


def run_job(job: Job) -> dict[str, Any]:
    """Run one job now: submit its documents and return (the runs finish on the workers)."""
    # heavy (the document readers, the client library): every worker imports this module, few run a job
    from chorus.batch import retry_failed, run_batch

    if job.kind == "inbox":
        assert job.folder is not None and job.pattern is not None
        task = task_from_json(job.task_spec) if job.task_spec else None
        sub = run_batch(job.folder, pattern=job.pattern, options=job.options, name=job.batch, max_in_flight=None,
                        task=task, lane=job.lane)
    else:
        sub = retry_failed(job.batch)
    return {"job": job.name, **sub.to_json()}


# A scheduled job submits a batch: client work (read the inbox, plan, store, send), so its task lives
# here, with the client library, and worker.py registers it by name. See docs/decisions.md.
@shared_task(name="chorus.schedule.run_job", bind=True)
def run_scheduled_job(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    name = str(job.get("name"))
    try:
        return run_job(Job.model_validate(job))
    except (ConfigError, ValidationError) as exc:  # a job that cannot run says why in its result and the log
        log.error("scheduled job %s: %s", name, exc)
        return {"job": name, "error": str(exc)}


@signals.beat_init.connect
def _load_schedule(sender: Any = None, **_: Any) -> None:
    """Beat checks CHORUS_SCHEDULE_FILE as it starts; a bad file stops it, naming the job and field."""
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
