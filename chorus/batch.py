"""Batches: many documents, one run each, submitted as a stream with back-pressure, resumable.

A batch is identified by its name (`--name`; by default the input's file or folder name plus a
short hash of its absolute path, so running the same command again finds the same batch). Running
a batch again skips documents that already succeeded with the same content, retries the ones
that failed, ended partial or never got sent, and leaves alone the ones still in flight.

Memory stays flat: records are read one at a time, written in chunks, and at most
`max_in_flight` runs are sent and unfinished at any moment.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session as OrmSession

from chorus.inputs import input_kind, read_records
from chorus.runs import celery_app, prepare
from chorus.section import plan_section
from chorus.vote import plan_vote
from models import Batch, Pattern, RunStatus, Session, in_session, repo
from models.repo import content_hash
from models.tables import OutcomeRole, OutcomeStatus, new_id, utcnow
from settings import Settings, get_settings
from tasks import dispatch
from workflows.errors import ConfigError, NotFoundError, RunTimeout
from workflows.intake import Record
from workflows.taskfile import SectionTask, VoteTask, task_from_json, task_hash

CHUNK = 200
POLL_S = 0.02
DISPATCH_GROUP = 100


# ----- the batch row --------------------------------------------------------------------------
def default_name(path: Path) -> str:
    resolved = path.expanduser().resolve()
    return f"{resolved.stem or 'batch'}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class BatchSpec:
    """What a batch runs: the pattern and its options (the same every time the batch runs)."""

    pattern: Pattern
    options: dict[str, Any]

    def plan(self, text: str, external_id: str, label: str | None, batch_id: str, settings: Settings) -> Any:
        options = dict(self.options)
        if isinstance(options.get("task"), dict):  # a task stored resolved (task.to_json())
            options["task"] = task_from_json(options["task"])
        if self.pattern is Pattern.VOTE:
            return plan_vote(text, external_id=external_id, batch_id=batch_id, gold_label=label, settings=settings,
                             **options)
        return plan_section(text, external_id=external_id, batch_id=batch_id, settings=settings, **options)

    @property
    def task_hash(self) -> str | None:
        task = self.options.get("task")
        return task_hash(task_from_json(task)) if isinstance(task, dict) else None

    def describe(self) -> str:
        task = self.options.get("task")
        if isinstance(task, dict):
            return f"task {task.get('name')!r} (hash {(self.task_hash or '')[:12]})"
        return f"options {self.options}"


def make_spec(pattern: str, options: dict[str, Any], settings: Settings) -> BatchSpec:
    """Check the pattern and its options on a probe document, before anything is written."""
    try:
        kind = Pattern(pattern)
    except ValueError:
        raise ConfigError(f"unknown pattern {pattern!r}; use vote or section") from None
    clean = {k: v for k, v in options.items() if v is not None}
    task = clean.get("task")
    if isinstance(task, VoteTask | SectionTask):
        if task.pattern != kind.value:
            raise ConfigError(f"the task {task.name!r} is a {task.pattern} task; run it with --pattern {task.pattern}")
        clean["task"] = task.to_json()  # stored with the batch, so a resume runs the very same task
    if kind is Pattern.VOTE and "labels" not in clean and "task" not in clean:
        raise ConfigError("--pattern vote needs --labels (e.g. --labels positive,negative,neutral) or --task FILE")
    spec = BatchSpec(kind, clean)
    try:
        spec.plan("probe text", "probe", None, "probe", settings)
    except TypeError as exc:
        raise ConfigError(f"an option does not apply to --pattern {pattern}: {exc}") from None
    return spec


def check_batch(name: str, spec: BatchSpec, *, new_version: bool = False) -> str:
    """The name to run the batch under: `name` when no batch has it or the stored one runs the same
    pattern and options (the same task hash); with `new_version`, the next free `name.vN` (or the
    version that runs this very task). Otherwise a stored batch is never mixed with another task."""
    candidates = [name] + [f"{name}.v{n}" for n in range(2, 1000)] if new_version else [name]
    with Session() as s:
        for candidate in candidates:
            batch = repo.batch_named(s, candidate)
            if batch is None or (batch.pattern is spec.pattern and batch.config.get("options") == spec.options):
                return candidate
            if not new_version:
                stored = BatchSpec(batch.pattern, dict(batch.config.get("options") or {}))
                raise ConfigError(
                    f"batch {name!r} already exists with pattern {batch.pattern.value} and {stored.describe()}; "
                    f"this run has pattern {spec.pattern.value} and {spec.describe()}. Give --new-version to start "
                    f"{name}.v2 with it (the stored batch stays as it is), or another --name")
    raise ConfigError(f"batch {name!r} has 999 versions; give another --name")


def open_batch(source: Path, spec: BatchSpec, name: str) -> tuple[str, bool]:
    """(batch id, created): find the batch by name (as `check_batch` chose it) or create it."""
    if check_batch(name, spec) != name:
        raise ConfigError(f"batch {name!r} now runs other options; prepare the batch again")
    with Session.begin() as s:
        batch = repo.batch_named(s, name)
        if batch is not None:
            batch.source = str(source.expanduser().resolve())
            return batch.id, False
        batch = repo.create_batch(s, name=name, pattern=spec.pattern, config={"options": spec.options},
                                  source=str(source.expanduser().resolve()))
        return batch.id, True


@dataclass(frozen=True)
class Prepared:
    """A batch whose whole input and options passed every check; nothing is written yet."""

    source: Path
    spec: BatchSpec
    name: str
    max_in_flight: int | None


def prepare_batch(source: Path, *, pattern: str, options: dict[str, Any], name: str | None = None,
                  max_in_flight: int | None = 64, settings: Settings | None = None,
                  new_version: bool = False) -> Prepared:
    """Check everything about the input as a whole (path, format, pattern, options, name).

    `options` are those of `plan_vote` / `plan_section`; `task` may be a task object (stored with the
    batch, resolved). A batch name that already ran another task is refused, unless `new_version`
    picks the next `name.vN`."""
    settings = settings or get_settings()
    source = Path(source)
    input_kind(source)
    spec = make_spec(pattern, options, settings)
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    prepare(settings)
    batch_name = check_batch(name or default_name(source), spec, new_version=new_version)
    return Prepared(source, spec, batch_name, max_in_flight)


def find_batch(ref: str, *, settings: Settings | None = None) -> Batch:
    """A batch by id, unique id prefix, or name."""
    prepare(settings or get_settings())
    with Session() as s:
        found = repo.find_batches(s, ref)
    if not found:
        raise NotFoundError(f"no batch {ref!r}; give a batch id or name printed by `chorus batch`")
    if len(found) > 1:
        raise NotFoundError(f"batch reference {ref!r} is ambiguous; give more characters")
    return found[0]


# ----- submission -----------------------------------------------------------------------------
@dataclass
class Counts:
    total: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.partial + self.failed

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "succeeded": self.succeeded, "partial": self.partial, "failed": self.failed,
                "running": self.running, "pending": self.pending}


def batch_counts(batch_id: str, *, settings: Settings | None = None) -> Counts:
    """Documents per status, from the database (what the progress bar shows)."""
    prepare(settings or get_settings())
    rows = in_session(lambda s: repo.document_counts(s, batch_id), write=False)
    counts = Counts()
    for status, n in rows:
        setattr(counts, status.value, n)
        counts.total += n
    return counts


@dataclass
class Submission:
    batch_id: str
    name: str
    created: bool
    read: int = 0
    sent: int = 0
    skipped: int = 0
    rejected: int = 0
    already_running: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)  # the first few bad documents

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "name": self.name, "created": self.created, "read": self.read,
                "sent": self.sent, "skipped": self.skipped, "rejected": self.rejected,
                "already_running": self.already_running}


class Submitter:
    """Streams records into stored runs and sends them, keeping at most `max_in_flight` unfinished."""

    def __init__(self, batch_id: str, spec: BatchSpec, settings: Settings, *, max_in_flight: int | None,
                 on_tick: Callable[[], None] | None = None, send_here: bool = False) -> None:
        self.batch_id, self.spec, self.settings = batch_id, spec, settings
        self.max_in_flight = max_in_flight
        self.send_here = send_here  # send every chord from this process (the benchmark's baseline)
        self.on_tick = on_tick or (lambda: None)
        self.in_flight: set[str] = set()
        self.sent = 0
        self._last_tick = 0.0

    def run(self, records: Iterator[tuple[int, Record]], result: Submission) -> Submission:
        """`records` are (position in the input, record) pairs."""
        chunk: list[tuple[int, Record]] = []
        for position, record in records:
            result.read += 1
            chunk.append((position, record))
            if len(chunk) >= CHUNK:
                self._send(self._store(chunk, result))
                chunk = []
        if chunk:
            self._send(self._store(chunk, result))
        result.sent = self.sent
        return result

    def _store(self, chunk: list[tuple[int, Record]], result: Submission) -> list[str]:
        """Write one chunk: documents (new or updated), and a run with its pending outcomes for
        every document that needs one. Returns the new run ids; nothing is sent yet."""
        keys = [r.key for _, r in chunk]
        now = utcnow()

        # Tried again as a whole after a transient database error, so it counts into a fresh tally
        # each time and the submission takes the tally of the try that committed.
        def write(s: OrmSession) -> tuple[list[str], Submission]:
            pending: list[str] = []
            seen = Submission(result.batch_id, result.name, result.created)
            existing = repo.documents_by_key(s, self.batch_id, keys)
            new_docs: list[dict[str, Any]] = []
            runs: list[dict[str, Any]] = []
            outcomes: list[dict[str, Any]] = []
            for position, record in chunk:
                doc = existing.get(record.key)
                text = record.text
                plan, error = None, record.error
                if text is not None:
                    digest = content_hash(text)
                    if doc is not None and doc.status is RunStatus.SUCCEEDED and doc.content_hash == digest:
                        seen.skipped += 1
                        continue
                    if doc is not None and doc.status is RunStatus.RUNNING and doc.content_hash == digest:
                        seen.already_running += 1
                        continue
                    try:
                        plan = self.spec.plan(text, record.key, record.label, self.batch_id, self.settings)
                    except ConfigError as exc:
                        error = str(exc)
                if error is not None:
                    seen.rejected += 1
                    seen.reasons.append((record.key, error))
                values: dict[str, Any] = {
                    "text": text or "", "content_hash": content_hash(text or ""), "gold_label": _label(plan, record),
                    "status": RunStatus.FAILED if error else RunStatus.PENDING, "error": error,
                    "position": position, "size_bytes": record.size if record.size is not None
                    else len((text or "").encode()),
                }
                if doc is None:
                    doc_id = new_id()
                    new_docs.append({"id": doc_id, "batch_id": self.batch_id, "external_id": record.key,
                                     "created_at": now, **values})
                else:
                    doc_id = doc.id
                    for k, v in values.items():
                        setattr(doc, k, v)
                if plan is None:
                    continue
                run_id, callback_id = new_id(), uuid.uuid4().hex
                runs.append({"id": run_id, "document_id": doc_id, "pattern": self.spec.pattern,
                             "status": RunStatus.PENDING, "provider": self.settings.provider_name,
                             "config": plan.config(), "chord_id": callback_id, "created_at": now})
                outcomes.extend(_outcome_rows(run_id, plan, now))
                pending.append(run_id)
            repo.insert_batch_chunk(s, self.batch_id, documents=new_docs, runs=runs, outcomes=outcomes, now=now)
            return pending, seen

        pending, seen = in_session(write)
        result.skipped += seen.skipped
        result.already_running += seen.already_running
        result.rejected += seen.rejected
        result.reasons.extend(seen.reasons[: max(0, 50 - len(result.reasons))])
        return pending

    def _send(self, pending: list[str]) -> None:
        """Hand stored runs to `chorus.batch.dispatch` tasks, at most DISPATCH_GROUP per message:
        the workers send the per-document chords, so the submitter's rate is not bounded by one
        process publishing every voter's message."""
        app = celery_app(self.settings)
        i = 0
        while i < len(pending):
            room = len(pending) - i if self.max_in_flight is None else self._wait_for_room()
            group = pending[i:i + min(room, DISPATCH_GROUP)]
            i += len(group)
            try:
                if self.send_here:
                    dispatch.send_stored(app, group)
                else:
                    dispatch.send_batch_groups(app, [group])
            except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; no run stays open
                dispatch.fail_runs(group, f"could not enqueue the run: {exc}. Is the broker at "
                                 f"{self.settings.effective_broker_url} up?")
            self.in_flight.update(group)
            self.sent += len(group)
            self._tick()

    def _wait_for_room(self) -> int:
        assert self.max_in_flight is not None
        while True:
            self._reap()
            room = self.max_in_flight - len(self.in_flight)
            if room > 0:
                return room
            self._tick()
            time.sleep(POLL_S)

    def _reap(self) -> None:
        if not self.in_flight:
            return
        in_flight = list(self.in_flight)
        done = in_session(lambda s: repo.finished_among(s, in_flight), write=False)
        self.in_flight.difference_update(done)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= 0.2:
            self._last_tick = now
            self.on_tick()


def _label(plan: Any, record: Record) -> str | None:
    gold = getattr(plan, "gold_label", None)
    return gold if gold is not None else (record.label[:64] if record.label else None)


def _outcome_rows(run_id: str, plan: Any, now: Any) -> list[dict[str, Any]]:
    base = {"run_id": run_id, "status": OutcomeStatus.PENDING, "queued_at": now, "attempts": 0,
            "input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0, "cache_read_tokens": 0,
            "usage_estimated": False}
    if hasattr(plan, "panel"):
        return [{**base, "slot": v.slot, "role": OutcomeRole.VOTER, "model": v.model, "prompt_variant": v.label,
                 "temperature": v.temperature} for v in plan.panel]
    return [{**base, "slot": sec.index, "role": OutcomeRole.SECTION, "model": plan.model, "title": sec.title[:200]}
            for sec in plan.sections]


def wait_for_batch(batch_id: str, *, timeout: float, on_tick: Callable[[], None] | None = None,
                   check: Callable[[], None] | None = None, settings: Settings | None = None) -> Counts:
    """Wait until no document of the batch is pending or running; RunTimeout after `timeout` seconds."""
    settings = settings or get_settings()
    deadline = time.monotonic() + timeout
    while True:
        counts = batch_counts(batch_id, settings=settings)
        if on_tick:
            on_tick()
        if counts.running == 0 and counts.pending == 0:
            return counts
        if check:
            check()
        if time.monotonic() > deadline:
            raise RunTimeout(f"batch still has {counts.running + counts.pending} document(s) unfinished after "
                               f"{timeout:.0f} s; `chorus status {batch_id}` shows it, re-run to resume")
        time.sleep(0.1)


def run_batch(source: Path | str | Prepared, *, pattern: str = "", options: dict[str, Any] | None = None,
              name: str | None = None, max_in_flight: int | None = 64, settings: Settings | None = None,
              on_tick: Callable[[str], None] | None = None, send_here: bool = False,
              task: VoteTask | SectionTask | None = None, new_version: bool = False) -> Submission:
    """Find or create the batch and submit what needs a run (after `prepare_batch`'s checks).
    Returns once everything is sent, not finished: see `wait_for_batch`. `send_here` sends each
    chord from this process instead of through `chorus.batch.dispatch` tasks."""
    settings = settings or get_settings()
    if task is not None:
        options = {**(options or {}), "task": task}
        pattern = pattern or task.pattern
    prepared = source if isinstance(source, Prepared) else prepare_batch(
        Path(source), pattern=pattern, options=options or {}, name=name, max_in_flight=max_in_flight,
        settings=settings, new_version=new_version)
    batch_id, created = open_batch(prepared.source, prepared.spec, prepared.name)
    tick = (lambda: on_tick(batch_id)) if on_tick else None
    submitter = Submitter(batch_id, prepared.spec, settings, max_in_flight=prepared.max_in_flight, on_tick=tick,
                          send_here=send_here)
    return submitter.run(enumerate(read_records(prepared.source, settings.max_document_bytes)),
                         Submission(batch_id, prepared.name, created))


def retry_failed(batch_ref: str, *, settings: Settings | None = None, max_in_flight: int | None = None) -> Submission:
    """Run the failed and partial documents of a stored batch again, from their stored text."""
    settings = settings or get_settings()
    batch = find_batch(batch_ref, settings=settings)
    spec = BatchSpec(batch.pattern, dict(batch.config.get("options") or {}))

    def records() -> Iterator[tuple[int, Record]]:
        with Session() as s:
            rows = repo.documents_to_retry(s, batch.id)
        for row in rows:
            yield row.position or 0, Record(row.external_id, row.text, row.gold_label, None, row.size_bytes)

    submitter = Submitter(batch.id, spec, settings, max_in_flight=max_in_flight)
    return submitter.run(records(), Submission(batch.id, batch.name, False))
