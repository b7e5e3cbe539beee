"""Batches: many documents, one run each, submitted as a stream with back-pressure, resumable.

A batch is identified by its name (`--name`; by default the input's file or folder name plus a
short hash of its absolute path, so running the same command again finds the same batch). Running
a batch again skips documents that already succeeded with the same content, retries the ones
that failed, ended partial or never got sent, and leaves alone the ones still in flight.

A batch remembers the provider and the models its runs were sent with: resuming it with another
provider or model is refused (answers of two providers would sit side by side in one batch), unless
`new_version` starts `NAME.v2` or `allow_mixed` says to mix them.

The documents come from a path (a folder, a JSONL or a CSV) or, in Python, from an iterable of texts
or records (dicts with `id` and `text` or `path`, and an optional `label`).

Memory stays flat: records are read one at a time, written in chunks, and at most
`max_in_flight` runs are sent and unfinished at any moment. The batch lane has no such bound (its
results take hours); with a budget it releases runs while the recorded spend plus the upper-bound
estimate of what is in flight stays within it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session as OrmSession

from chorus.budget import check_budget, estimate_plan
from chorus.costing import request_cost
from chorus.inputs import input_kind, read_file_record, read_records
from chorus.native import start_run
from chorus.planners import planner
from chorus.plans import Plan
from chorus.runs import cancel_runs, celery_app, ensure_workers, get_run, not_found, prepare
from models import Batch, Pattern, RunStatus, Session, in_session, repo
from models.repo import content_hash
from models.tables import OutcomeStatus, new_id, utcnow
from providers import provider_capabilities
from providers.offline import LANE_NEEDS_ANTHROPIC
from settings import Settings, get_settings
from tasks import dispatch, lane
from tasks.maintenance import BatchStallWatch
from workflows.calls import Attachment
from workflows.cost import Cost, total
from workflows.errors import ConfigError, NotFoundError, RunTimeout
from workflows.intake import Record, check_text, duplicate, record_from
from workflows.taskfile import OrchestrateTask, SectionTask, Task, VoteTask, task_from_json, task_hash

CHUNK = 200
POLL_S = 0.02
LANE_WAIT_S = 0.25  # how often a lane submission waiting for budget room looks again (results take a while)
DISPATCH_GROUP = 100
LANES = ("sync", "batch")
log = logging.getLogger("chorus.batch")


# ----- the batch row --------------------------------------------------------------------------
def default_name(path: Path) -> str:
    resolved = path.expanduser().resolve()
    return f"{resolved.stem or 'batch'}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class BatchSpec:
    """What a batch runs: the pattern and its options (the same every time the batch runs), and who
    answers: the provider and the models its runs call (resolved, the default model included; "" and
    () when unknown)."""

    pattern: Pattern
    options: dict[str, Any]
    provider: str = ""
    models: tuple[str, ...] = ()

    def plan(self, text: str | Attachment, external_id: str, label: str | None, batch_id: str,
             settings: Settings) -> Plan:
        options = dict(self.options)
        if isinstance(options.get("task"), dict):  # a task stored resolved (task.to_json())
            options["task"] = task_from_json(options["task"])
        return planner(self.pattern).plan(text, external_id, label, batch_id, settings, options)

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
    kind = planner(pattern).pattern
    clean = {k: v for k, v in options.items() if v is not None}
    task = clean.get("task")
    if isinstance(task, VoteTask | SectionTask | OrchestrateTask):
        if task.pattern != kind.value:
            raise ConfigError(f"the task {task.name!r} is a {task.pattern} task; run it with --pattern {task.pattern}")
        clean["task"] = task.to_json()  # stored with the batch, so a resume runs the very same task
    planner(kind).check_options(clean)
    try:
        return with_provider(BatchSpec(kind, clean), settings)
    except TypeError as exc:
        raise ConfigError(f"an option does not apply to --pattern {pattern}: {exc}") from None


def with_provider(spec: BatchSpec, settings: Settings) -> BatchSpec:
    """The spec with who would answer it now: the settings' provider and the models of a probe plan."""
    probe = spec.plan("probe text", "probe", None, "probe", settings)
    return dataclasses.replace(spec, provider=settings.provider_name, models=tuple(sorted(probe.models())))


Answerer = tuple[str, tuple[str, ...]]  # (provider, models sorted)


def _answerer(spec: BatchSpec) -> Answerer:
    return spec.provider, tuple(sorted(spec.models))


def _answered_by(s: OrmSession, batch: Batch) -> list[Answerer]:
    """The providers and models a stored batch was sent with: its config's record (`answered_by`, more
    than one once `allow_mixed` added one), or, for a batch stored before batches recorded it, what its
    runs recorded ([] when it has none)."""
    recorded = (batch.config or {}).get("answered_by")
    if recorded:
        return [(str(e.get("provider")), tuple(sorted(e.get("models") or ()))) for e in recorded]
    providers, models = repo.batch_providers(s, batch.id)
    return [(", ".join(providers), tuple(models))] if providers else []


def _mixing(s: OrmSession, batch: Batch, spec: BatchSpec) -> str | None:
    """Why running `spec` into the stored batch would put answers of different providers or models side
    by side; None when it would not: the batch was sent with these already, the spec does not say, or
    no document has an answer to keep (none succeeded or is running)."""
    seen = _answered_by(s, batch)
    if not spec.provider or not seen or _answerer(spec) in seen:
        return None
    counts = dict(repo.document_counts(s, batch.id))
    kept = counts.get(RunStatus.SUCCEEDED, 0) + counts.get(RunStatus.RUNNING, 0)
    if kept == 0:
        return None
    was = "; then ".join(f"the {p} provider ({', '.join(m) or 'no model recorded'})" for p, m in seen)
    return (f"batch {batch.name!r} was sent with {was}; this run would use the {spec.provider} provider "
            f"({', '.join(spec.models)}): its {kept} document(s) that succeeded (or are still running) would "
            f"keep their answers next to this run's")


def _answerers(s: OrmSession, batch: Batch | None, spec: BatchSpec) -> dict[str, Any]:
    """The batch config's record of who answers, once `spec` is sent into it (nothing when the spec
    does not say): this one alone for a new batch or one with no answer to keep, else the ones before
    and this one (a mix, allowed)."""
    if not spec.provider:
        return {}
    this = _answerer(spec)
    seen = [] if batch is None else _answered_by(s, batch)
    if this not in seen and (batch is None or _mixing(s, batch, spec) is None):
        seen = []  # nothing of another provider is kept: the batch starts over with this one
    answered = seen if this in seen else [*seen, this]
    return {"answered_by": [{"provider": p, "models": list(m)} for p, m in answered]}


def check_batch(name: str, spec: BatchSpec, *, new_version: bool = False, allow_mixed: bool = False) -> str:
    """The name to run the batch under: `name` when no batch has it or the stored one runs the same
    pattern and options (the same task hash) with the same provider and models; with `new_version`,
    the next free `name.vN` (or the version that runs this very task with them). Otherwise a stored
    batch is never mixed with another task, and never with another provider or model unless
    `allow_mixed` (each run keeps its own provider and models)."""
    candidates = [name] + [f"{name}.v{n}" for n in range(2, 1000)] if new_version else [name]
    with Session() as s:
        for candidate in candidates:
            batch = repo.batch_named(s, candidate)
            if batch is None:
                return candidate
            if batch.pattern is spec.pattern and batch.config.get("options") == spec.options:
                mixing = None if allow_mixed else _mixing(s, batch, spec)
                if mixing is None:
                    return candidate
                if new_version:
                    continue
                raise ConfigError(
                    f"{mixing}. Give --new-version to start {name}.v2 with the {spec.provider} provider (the "
                    f"stored batch stays as it is), or --allow-mixed to resume this batch anyway (each run keeps "
                    f"its own provider and models)")
            if not new_version:
                stored = BatchSpec(batch.pattern, dict(batch.config.get("options") or {}))
                raise ConfigError(
                    f"batch {name!r} already exists with pattern {batch.pattern.value} and {stored.describe()}; "
                    f"this run has pattern {spec.pattern.value} and {spec.describe()}. Give --new-version to start "
                    f"{name}.v2 with it (the stored batch stays as it is), or another --name")
    raise ConfigError(f"batch {name!r} has 999 versions; give another --name")


def open_batch(source: Path | None, spec: BatchSpec, name: str, lane_name: str = "sync", *,
               allow_mixed: bool = False) -> tuple[str, bool]:
    """(batch id, created): find the batch by name (as `check_batch` chose it) or create it. Running a
    cancelled batch again resumes it: the cancel mark is cleared. The batch remembers the lane it was
    last sent on (`config["lane"]`, what its status shows; each run keeps its own) and the provider and
    models it was sent with (`config["answered_by"]`: more than one once `allow_mixed` mixed them).
    `source` is None for documents given in Python."""
    if check_batch(name, spec, allow_mixed=allow_mixed) != name:
        raise ConfigError(f"batch {name!r} now runs other options; prepare the batch again")
    where = str(source.expanduser().resolve()) if source is not None else None
    with Session.begin() as s:
        batch = repo.batch_named(s, name)
        if batch is not None:
            if where is not None:
                batch.source = where
            repo.set_batch_cancelled(s, batch.id, None)
            batch.config = {**(batch.config or {}), "lane": lane_name, **_answerers(s, batch, spec)}
            return batch.id, False
        batch = repo.create_batch(s, name=name, pattern=spec.pattern,
                                  config={"options": spec.options, "lane": lane_name, **_answerers(s, None, spec)},
                                  source=where)
        return batch.id, True


def check_lane(lane_name: str, settings: Settings) -> str:
    """The lane, checked before anything is stored: `sync` (one request per call) or `batch` (Anthropic's
    Message Batches API: half price, results within hours), which needs Claude (the offline provider has no
    Batches API). Its provider batches are collected and polled by beat, or in embedded mode by the
    process that waits for them (`lane.LaneClock`)."""
    if lane_name not in LANES:
        raise ConfigError(f"unknown lane {lane_name!r}; use --lane sync or --lane batch")
    if lane_name == "batch" and not provider_capabilities(settings).batches_api:
        raise ConfigError(LANE_NEEDS_ANTHROPIC)
    return lane_name


@dataclass(frozen=True)
class Prepared:
    """A batch whose whole input and options passed every check; nothing is written yet."""

    source: Path | None  # None: the documents were given in Python (`items`)
    spec: BatchSpec
    name: str
    max_in_flight: int | None
    lane: str = "sync"  # "batch": the calls go through the Message Batches API (tasks/lane.py)
    recursive: bool = False  # a folder's subfolders too
    items: tuple[str | Mapping[str, Any], ...] | None = None  # texts or records given in Python, in order
    allow_mixed: bool = False  # resume a batch sent with another provider or models anyway

    def records(self, settings: Settings) -> Iterator[Record]:
        if self.items is not None:
            return item_records(self.items, settings)
        assert self.source is not None
        return read_records(self.source, settings.max_document_bytes, max_file_bytes=settings.max_file_bytes,
                            recursive=self.recursive)


Source = Path | str | os.PathLike[str] | Iterable[str | Mapping[str, Any]]


def batch_items(source: Iterable[Any]) -> tuple[str | Mapping[str, Any], ...]:
    """The documents of an iterable, read once (a generator cannot be read twice, and the estimate reads
    them before they are sent): each a text, or a record, a dict with `id` and `text` (or `path`, a
    file) and an optional `label`. Anything else is refused, naming the item."""
    if isinstance(source, bytes | bytearray | Mapping):
        raise ConfigError(f"give the documents as a path (a folder, a .jsonl or a .csv) or as an iterable of texts or "
                          f"records (dicts with id and text or path), not {type(source).__name__}")
    try:
        items = tuple(source)
    except TypeError:
        raise ConfigError(f"give the documents as a path (a folder, a .jsonl or a .csv) or as an iterable of texts or "
                          f"records (dicts with id and text or path), not {type(source).__name__}") from None
    if not items:
        raise ConfigError("no documents: the iterable of texts or records is empty")
    for n, item in enumerate(items, 1):
        if not isinstance(item, str | Mapping):
            raise ConfigError(f"item {n} is of type {type(item).__name__}; each document is a text (str) or a "
                              f"record (a dict with id and text or path, and an optional label)")
    return items


def item_records(items: Iterable[str | Mapping[str, Any]], settings: Settings) -> Iterator[Record]:
    """Records of documents given in Python, checked as the lines of a JSONL are: a text is document
    `item-N` (its position, from 1); a record's `path` is a file (relative to the current folder)."""
    seen: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        where = f"item {n}"
        if isinstance(item, str):
            text, reason = check_text(item, settings.max_document_bytes)
            record = Record(f"item-{n}", text, None, f"{where}: {reason}" if reason else None,
                            len(item.encode("utf-8", "surrogatepass")))
        else:
            record = record_from(dict(item), where, f"item-{n}", settings.max_document_bytes)
            if record.path is not None:
                record = read_file_record(record, Path(record.path).expanduser(), where, settings.max_document_bytes,
                                          settings.max_file_bytes)
        if record.key in seen:
            yield duplicate(record, seen[record.key], where, n)
            continue
        seen[record.key] = where
        yield record


def items_name(items: tuple[str | Mapping[str, Any], ...]) -> str:
    """The default name of a batch of documents given in Python: a hash of them, so that running the
    same documents again resumes the same batch."""
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"texts-{digest}"


def prepare_batch(source: Source, *, pattern: str, options: dict[str, Any], name: str | None = None,
                  max_in_flight: int | None = 64, settings: Settings | None = None,
                  new_version: bool = False, lane: str = "sync", recursive: bool = False,
                  allow_mixed: bool = False) -> Prepared:
    """Check everything about the input as a whole (path or documents, pattern, options, name, lane).

    `source` is a path (a folder, a JSONL or a CSV; a str is a path) or an iterable of texts or records
    (dicts with `id` and `text` or `path`, and an optional `label`), read once here. `options` are those
    of `plan_vote` / `plan_section`; `task` may be a task object (stored with the batch, resolved). A
    batch name that already ran another task, or the same task with another provider or models, is
    refused, unless `new_version` picks the next `name.vN` (or `allow_mixed`, for the provider and
    models). `lane="batch"` sends the calls through the Message Batches API (needs the anthropic
    provider; beat, or in embedded mode the waiting process, collects and polls); it keeps no
    `max_in_flight` bound, as results take hours (a budget bounds it instead, see `Submitter`)."""
    settings = settings or get_settings()
    check_lane(lane, settings)
    if lane == "batch" and options.get("cache_warm") == "prewarm":
        raise ConfigError("the batch lane cannot pre-warm the cache: a max_tokens: 0 request is not accepted inside a "
                          "provider batch; use cache_warm=\"leader\" (the lane's followers wait for their leader)")
    path: Path | None = None
    items: tuple[str | Mapping[str, Any], ...] | None = None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        input_kind(path)
    else:
        items = batch_items(source)
        if recursive:
            raise ConfigError("recursive applies to a folder; these documents were given in Python")
    spec = make_spec(pattern, options, settings)
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    prepare(settings)
    default = default_name(path) if path is not None else items_name(items or ())
    batch_name = check_batch(name or default, spec, new_version=new_version, allow_mixed=allow_mixed)
    return Prepared(path, spec, batch_name, None if lane == "batch" else max_in_flight, lane, recursive, items,
                    allow_mixed)


def find_batch(ref: str, *, settings: Settings | None = None) -> Batch:
    """A batch by id, unique id prefix, or name."""
    settings = settings or get_settings()
    prepare(settings)
    with Session() as s:
        found = repo.find_batches(s, ref)
    if not found:
        raise not_found("batch", ref, "give a batch id, a unique prefix of one, or its name (`chorus batches` lists "
                        "them)", settings)
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
    cancelled: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.partial + self.failed + self.cancelled

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "succeeded": self.succeeded, "partial": self.partial, "failed": self.failed,
                "cancelled": self.cancelled, "running": self.running, "pending": self.pending}


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
    stopped: str | None = None  # why sending stopped early (a cancel, the budget); the rest are cancelled
    not_sent: int = 0  # documents stored cancelled, unsent, once sending stopped
    kinds: dict[str, int] = field(default_factory=dict)  # documents read, per kind (pdf, image, docx, ...)

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "name": self.name, "created": self.created, "read": self.read,
                "sent": self.sent, "skipped": self.skipped, "rejected": self.rejected,
                "already_running": self.already_running, "stopped": self.stopped, "not_sent": self.not_sent,
                "kinds": dict(self.kinds)}


class _Stop(Exception):
    """Sending must stop (the batch was cancelled, or its spend passed the budget)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Submitter:
    """Streams records into stored runs and sends them, keeping at most `max_in_flight` unfinished.

    The batch lane has no `max_in_flight`; with `max_cost` it keeps each run's upper-bound estimate
    (`estimate_plan` at the Batches API price) and releases runs while the recorded spend of its finished
    runs plus the estimates of those in flight stays within the budget. The next run that would cross it
    waits for runs to finish (their recorded cost replaces their estimate); when it does not fit even
    with nothing in flight, sending stops: the rest end `cancelled`, reason "budget: ..."."""

    def __init__(self, batch_id: str, spec: BatchSpec, settings: Settings, *, max_in_flight: int | None,
                 on_tick: Callable[[], None] | None = None, send_here: bool = False,
                 max_cost: float | None = None, lane: str = "sync") -> None:
        self.batch_id, self.spec, self.settings = batch_id, spec, settings
        self.lane = lane
        self.max_in_flight = max_in_flight
        self.send_here = send_here  # send every chord from this process (the benchmark's baseline)
        self.on_tick = on_tick or (lambda: None)
        self.in_flight: set[str] = set()
        self.sent = 0
        self._last_tick = 0.0
        self.max_cost = max_cost  # US dollars this submission may spend (recorded usage of its finished runs)
        self.spent = Cost()
        self.stopped: str | None = None
        self.uploads: dict[str, list[repo.BlobSpec]] = {}  # run id -> bytes to upload before it is sent
        self.estimates: dict[str, float] = {}  # the batch lane with a budget: run id -> its upper bound in USD
        self._lane_clock: Callable[[], None] | None = None  # embedded mode: collects and polls while we wait

    def run(self, records: Iterator[tuple[int, Record]], result: Submission) -> Submission:
        """`records` are (position in the input, record) pairs. Once the batch is cancelled or its
        spend passes the budget, nothing more is sent: the stored runs not sent yet are cancelled with
        the reason, and the documents still to read are stored cancelled (a resume sends them)."""
        chunk: list[tuple[int, Record]] = []
        for position, record in records:
            result.read += 1
            result.kinds[record.kind] = result.kinds.get(record.kind, 0) + 1
            chunk.append((position, record))
            if len(chunk) >= CHUNK:
                self._flush(chunk, result)
                chunk = []
        if chunk:
            self._flush(chunk, result)
        result.sent = self.sent
        result.stopped = self.stopped
        return result

    def _flush(self, chunk: list[tuple[int, Record]], result: Submission) -> None:
        if self.stopped is None:
            with contextlib.suppress(_Stop):
                self._check_stop()  # sets self.stopped
        pending = self._store(chunk, result)
        if self.stopped is not None:
            result.not_sent += len(chunk)
            return
        try:
            self._send(pending)
        except _Stop as stop:
            self.stopped = stop.reason

    def _check_stop(self) -> None:
        """Raise _Stop when the batch was cancelled or this submission's spend passed the budget."""
        try:
            reason = in_session(lambda s: repo.batch_cancel_reason(s, self.batch_id), write=False)
            if reason is not None:
                raise _Stop(reason)
            if self.max_cost is not None and self.spent.total_usd > self.max_cost:
                raise _Stop(f"budget: the recorded spend of this batch's runs, ${self.spent.total_usd:.4f}, passed "
                            f"the budget of ${self.max_cost:.4f} (--max-cost / CHORUS_MAX_COST_USD); the "
                            f"documents not sent yet were not sent")
        except _Stop as stop:
            if self.stopped is None:
                self.stopped = stop.reason
            raise

    def _store(self, chunk: list[tuple[int, Record]], result: Submission) -> list[str]:
        """Write one chunk: documents (new or updated), and a run with its pending outcomes for
        every document that needs one. Returns the new run ids; nothing is sent yet. Once sending has
        stopped, the documents are stored `cancelled` with the reason and get no run."""
        stopped = self.stopped
        keys = [r.key for _, r in chunk]
        now = utcnow()

        # Tried again as a whole after a transient database error, so it counts into a fresh tally
        # each time and the submission takes the tally of the try that committed.
        def write(s: OrmSession) -> tuple[list[str], Submission, dict[str, list[repo.BlobSpec]], dict[str, float]]:
            pending: list[str] = []
            seen = Submission(result.batch_id, result.name, result.created)
            existing = repo.documents_by_key(s, self.batch_id, keys)
            new_docs: list[dict[str, Any]] = []
            runs: list[dict[str, Any]] = []
            outcomes: list[dict[str, Any]] = []
            blobs: list[repo.BlobSpec] = []
            uploads: dict[str, list[repo.BlobSpec]] = {}
            estimates: dict[str, float] = {}
            for position, record in chunk:
                doc = existing.get(record.key)
                text = record.text
                plan, error = None, record.error
                if text is not None:
                    digest = record.content_key or content_hash(text)
                    if doc is not None and doc.status is RunStatus.SUCCEEDED and doc.content_hash == digest:
                        seen.skipped += 1
                        continue
                    if doc is not None and doc.status is RunStatus.RUNNING and doc.content_hash == digest:
                        seen.already_running += 1
                        continue
                    if stopped is None:
                        try:
                            plan = self.spec.plan(record.document or text, record.key, record.label,
                                                  self.batch_id, self.settings)
                        except ConfigError as exc:
                            error = str(exc)
                if error is not None:
                    seen.rejected += 1
                    seen.reasons.append((record.key, error))
                status = RunStatus.FAILED if error else RunStatus.PENDING if stopped is None else RunStatus.CANCELLED
                stored = plan.document_spec() if plan is not None else None
                if stored is not None:
                    blobs.extend(b for b in (stored.blob, *stored.blobs) if b is not None)
                values: dict[str, Any] = {
                    "text": text or "", "content_hash": record.content_key or content_hash(text or ""),
                    "gold_label": _label(plan, record),
                    "status": status, "error": error or (stopped if status is RunStatus.CANCELLED else None),
                    "position": position, "size_bytes": record.size if record.size is not None
                    else len((text or "").encode()),
                    "kind": record.kind, "pages": record.native.pages or None if record.native else None,
                    "blob_sha256": stored.blob.sha256 if stored is not None and stored.blob is not None else None,
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
                config = plan.config()
                if self.lane == "batch":
                    config["lane"] = "batch"
                    if self.max_cost is not None:
                        estimates[run_id] = estimate_plan(plan, self.settings, count=False, lane="batch").total_usd
                runs.append({"id": run_id, "document_id": doc_id, "pattern": self.spec.pattern,
                             "status": RunStatus.PENDING, "provider": self.settings.provider_name,
                             "config": config, "chord_id": callback_id, "created_at": now})
                outcomes.extend(_outcome_rows(run_id, plan, now))
                pending.append(run_id)
                if plan.uploads(self.settings):
                    uploads[run_id] = plan.uploads(self.settings)
            repo.keep_blobs(s, blobs)
            repo.insert_batch_chunk(s, self.batch_id, documents=new_docs, runs=runs, outcomes=outcomes, now=now)
            return pending, seen, uploads, estimates

        pending, seen, uploads, estimates = in_session(write)
        self.uploads.update(uploads)
        self.estimates.update(estimates)
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
            try:
                if self.lane == "batch" and self.max_cost is not None:
                    room = self._wait_for_budget(pending[i:])
                elif self.max_in_flight is None:
                    self._reap()
                    self._check_stop()
                    room = len(pending) - i
                else:
                    room = self._wait_for_room()
            except _Stop as stop:
                cancel_runs(pending[i:], stop.reason, self.settings)
                raise
            group = pending[i:i + min(room, DISPATCH_GROUP)]
            i += len(group)
            # Bytes too large for one request are uploaded once per run before it is sent; a run whose
            # upload failed is failed with the reason and not sent.
            group = [run_id for run_id in group
                     if run_id not in self.uploads or start_run(run_id, self.uploads.pop(run_id), self.settings,
                                                                 mark_running=False)]
            if not group:
                continue
            try:
                if self.lane == "batch":
                    lane.start_runs(app, group)  # the collector sends them in provider batches
                elif self.send_here:
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
            self._check_stop()
            room = self.max_in_flight - len(self.in_flight)
            if room > 0:
                return room
            self._tick()
            time.sleep(POLL_S)

    def _wait_for_budget(self, pending: list[str]) -> int:
        """The batch lane with a budget: how many of `pending` (in order) may go now, waiting while runs
        in flight hold the room the next one needs; _Stop when it does not fit with nothing in flight."""
        assert self.max_cost is not None
        while True:
            self._reap()
            self._check_stop()
            committed = self.spent.total_usd + sum(self.estimates.get(r, 0.0) for r in self.in_flight)
            room = 0
            for run_id in pending:
                estimate = self.estimates.get(run_id, 0.0)
                if committed + estimate > self.max_cost:
                    break
                committed += estimate
                room += 1
            if room:
                return room
            if not self.in_flight:
                raise _Stop(f"budget: the next document's estimate (${self.estimates.get(pending[0], 0.0):.4f}, an "
                            f"upper bound at the Batches API price) does not fit in the budget of "
                            f"${self.max_cost:.4f} (--max-cost / CHORUS_MAX_COST_USD) after the recorded spend of "
                            f"this batch's runs, ${self.spent.total_usd:.4f}; the documents not sent yet were not "
                            f"sent")
            self._lane_tick()
            self._tick()
            time.sleep(LANE_WAIT_S)

    def _lane_tick(self) -> None:
        """With no beat (embedded mode), collect and poll the lane while this process waits on it."""
        if not self.settings.embedded:
            return
        if self._lane_clock is None:
            self._lane_clock = lane.LaneClock(celery_app(self.settings), self.settings)
        self._lane_clock()

    def _reap(self) -> None:
        if not self.in_flight:
            return
        in_flight = list(self.in_flight)
        done = in_session(lambda s: repo.finished_among(s, in_flight), write=False)
        self.in_flight.difference_update(done)
        for run_id in done:
            self.estimates.pop(run_id, None)
        if done and self.max_cost is not None:
            usage = in_session(lambda s: repo.usage_by_request(s, done), write=False)
            self.spent = total([self.spent, *(_priced(u) for u in usage)])

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= 0.2:
            self._last_tick = now
            self.on_tick()


def _priced(u: repo.ModelUsage) -> Cost:
    """A request's cost, or nothing for a model with no price."""
    try:
        return request_cost(u)
    except ValueError:  # a model with no price: nothing to count it against the budget with
        return Cost()


def _label(plan: Plan | None, record: Record) -> str | None:
    gold = plan.gold_label if plan is not None else None
    return gold if gold is not None else (record.label[:64] if record.label else None)


def _outcome_rows(run_id: str, plan: Plan, now: Any) -> list[dict[str, Any]]:
    """The plan's slots as pending outcome rows (`repo.create_run` writes the same one by one)."""
    base = {"run_id": run_id, "status": OutcomeStatus.PENDING, "queued_at": now, "attempts": 0,
            "input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0, "cache_read_tokens": 0,
            "usage_estimated": False}
    return [{**base, "slot": spec.slot, "role": spec.role, "model": spec.model,
             "prompt_variant": spec.prompt_variant, "temperature": spec.temperature,
             "title": spec.title[:200] if spec.title is not None else None,
             "queued_at": None if spec.held else now}  # an adaptive vote's later waves wait
            for spec in plan.slots()]


def wait_for_batch(batch_id: str, *, timeout: float, on_tick: Callable[[], None] | None = None,
                   check: Callable[[], None] | None = None, settings: Settings | None = None) -> Counts:
    """Wait until no document of the batch is pending or running; RunTimeout after `timeout` seconds.
    In embedded mode the worker is started if this process runs none (`chorus.runs.ensure_workers`)."""
    settings = settings or get_settings()
    own = ensure_workers(settings)
    if check is None and own is not None:
        check = own.check
    # No beat in embedded mode: while it waits, this process collects and polls the batch lane itself.
    clock = (lane.LaneClock(celery_app(settings), settings)
             if settings.embedded and lane_status(batch_id, settings=settings)["lane"] == "batch" else None)
    # A batch that stops moving gets the reaper's check for its own runs, beat or no beat (a message lost
    # with the broker, a worker killed in the middle): a resumed batch never waits for ever.
    stall = BatchStallWatch(celery_app(settings), settings,
                            lambda: in_session(lambda s: repo.open_runs_of_batch(s, batch_id), write=False))
    deadline = time.monotonic() + timeout
    while True:
        counts = batch_counts(batch_id, settings=settings)
        if on_tick:
            on_tick()
        if counts.running == 0 and counts.pending == 0:
            return counts
        if check:
            check()
        if clock is not None:
            clock()
        stall(counts)
        if time.monotonic() > deadline:
            raise RunTimeout(f"batch still has {counts.running + counts.pending} document(s) unfinished after "
                               f"{timeout:.0f} s; `chorus status {batch_id}` shows it, re-run to resume")
        time.sleep(0.1)


def run_batch(source: Source | Prepared, *, pattern: str = "", options: dict[str, Any] | None = None,
              name: str | None = None, max_in_flight: int | None = 64, settings: Settings | None = None,
              on_tick: Callable[[str], None] | None = None, send_here: bool = False,
              task: Task | None = None, new_version: bool = False,
              max_cost: float | None = None, lane: str | None = None, recursive: bool = False,
              allow_mixed: bool = False) -> Submission:
    """Find or create the batch and submit what needs a run (after `prepare_batch`'s checks).
    Returns once everything is sent, not finished: see `wait_for_batch`. `send_here` sends each
    chord from this process instead of through `chorus.batch.dispatch` tasks.

    `source`: a path (a folder, a JSONL or a CSV), or the documents themselves, an iterable of texts
    (`["The battery died.", ...]`: documents `item-1`, `item-2`, ...) or of records (`{"id": "a", "text":
    ..., "label": ...}`, or `"path"` for a file). Their default name is a hash of them, so the same
    documents resume the same batch. A batch sent with another provider or other models is refused
    unless `new_version` (a new `NAME.vN`) or `allow_mixed`.

    `max_cost` (US dollars; default CHORUS_MAX_COST_USD): refused before anything is written when the
    estimate of what would be sent is above it (ConfigError), and sending stops once the recorded
    spend of the runs this call sent passes it (the rest end `cancelled`, reason "budget: ...").

    `lane="batch"` sends the voter and section calls through Anthropic's Message Batches API at half
    price (results within about an hour, at most 24 h): it needs the anthropic provider, and Celery beat
    (`chorus.lane.collect` / `chorus.lane.poll`) or, in embedded mode, `wait_for_batch`, which sends them
    while it waits. With a budget the lane releases runs while the recorded spend plus the estimates of
    the runs in flight stays within it (`Submitter`). Default `sync` (a prepared batch keeps its own)."""
    settings = settings or get_settings()
    if task is not None:
        options = {**(options or {}), "task": task}
        pattern = pattern or task.pattern
    if isinstance(source, Prepared):
        prepared = source if lane is None else dataclasses.replace(
            source, lane=check_lane(lane, settings), max_in_flight=None if lane == "batch" else source.max_in_flight)
    else:
        prepared = prepare_batch(source, pattern=pattern, options=options or {}, name=name,
                                 max_in_flight=max_in_flight, settings=settings, new_version=new_version,
                                 lane=lane or "sync", recursive=recursive, allow_mixed=allow_mixed)
    budget = max_cost if max_cost is not None else settings.max_cost_usd
    if budget is not None:
        check_budget(estimate_batch(prepared, settings)[0], budget, f"batch {prepared.name!r}")
    ensure_workers(settings)  # embedded: back-pressure waits for runs to finish, so a worker must run them
    batch_id, created = open_batch(prepared.source, prepared.spec, prepared.name, prepared.lane,
                                   allow_mixed=prepared.allow_mixed or allow_mixed)
    tick = (lambda: on_tick(batch_id)) if on_tick else None
    submitter = Submitter(batch_id, prepared.spec, settings, max_in_flight=prepared.max_in_flight, on_tick=tick,
                          send_here=send_here, max_cost=budget, lane=prepared.lane)
    return submitter.run(enumerate(prepared.records(settings)),
                         Submission(batch_id, prepared.name, created))


# ----- budgets ----------------------------------------------------------------------------------
def estimate_batch(prepared: Prepared, settings: Settings) -> tuple[Cost, int]:
    """(the estimate, the documents it covers): `estimate_plan` (an upper bound) with local token bounds
    (one count_tokens call per document and voter would be slow and rate-limited) of the documents a run
    of the batch would send: all of them but those that already succeeded with the same text, or are
    still running. Each run is priced in the batch's lane (the lane's half price and 1-hour cache writes)."""
    prepare(settings)
    with Session() as s:
        batch = repo.batch_named(s, prepared.name)
        batch_id = batch.id if batch is not None else None
    costs: list[Cost] = []
    chunk: list[Record] = []

    def price(records: list[Record]) -> None:
        existing = (in_session(lambda s: repo.documents_by_key(s, batch_id, [r.key for r in records]), write=False)
                    if batch_id is not None else {})
        for record in records:
            if record.text is None:
                continue
            doc = existing.get(record.key)
            if doc is not None and doc.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING) \
                    and doc.content_hash == (record.content_key or content_hash(record.text)):
                continue
            try:
                plan = prepared.spec.plan(record.document or record.text, record.key, record.label,
                                          batch_id or "estimate", settings)
            except ConfigError:
                continue  # a bad document fails with its reason and costs nothing
            costs.append(estimate_plan(plan, settings, count=False, lane=prepared.lane))

    for _, record in enumerate(prepared.records(settings)):
        chunk.append(record)
        if len(chunk) >= CHUNK:
            price(chunk)
            chunk = []
    if chunk:
        price(chunk)
    return total(costs), len(costs)


# ----- cancel -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cancellation:
    """What `cancel` did: runs it cancelled, votes whose voters had all finished (tallied instead),
    and runs that were already finished."""

    kind: str  # "run" or "batch"
    id: str
    name: str | None
    reason: str
    cancelled: list[str]
    settled: list[str]
    already_finished: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "reason": self.reason,
                "cancelled": len(self.cancelled), "settled": len(self.settled),
                "already_finished": self.already_finished, "cancelled_runs": self.cancelled}


def cancel(ref: str, *, reason: str = "cancelled by the user", settings: Settings | None = None) -> Cancellation:
    """Cancel a run (its id or a unique prefix) or a batch (id, prefix or name).

    Work not sent yet is never sent; queued calls are taken out of the broker where it allows (Redis,
    the embedded queue) and, if one arrives anyway, its slot is cancelled and nothing is called; calls
    already in flight finish and are recorded. Each open run ends `cancelled` with the reason, except
    a vote whose voters had all finished, which is tallied (it keeps its real result). A batch stops
    sending (a submitter still running it stops), and running it again resumes: cancelled documents
    are sent again."""
    settings = settings or get_settings()
    prepare(settings)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("give a run id or a batch id or name to cancel")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError("reason must be some text saying why")
    try:
        run = get_run(ref, settings=settings)
    except NotFoundError as exc:
        if "ambiguous" in str(exc):
            raise
        run = None
    if run is not None:
        done = cancel_runs([run.id], reason, settings)
        _cancel_provider_batches(done.cancelled, settings)
        return Cancellation("run", run.id, None, reason, done.cancelled, done.settled,
                            0 if done.cancelled or done.settled else 1)
    try:
        batch = find_batch(ref, settings=settings)
    except NotFoundError:
        raise not_found("run or batch", ref, "give a run id, a unique prefix of one, or a batch id or name "
                        "(`chorus runs` and `chorus batches` list them)", settings) from None
    in_session(lambda s: repo.set_batch_cancelled(s, batch.id, reason))
    open_runs = in_session(lambda s: repo.open_runs_of_batch(s, batch.id), write=False)
    done = cancel_runs(open_runs, reason, settings)
    _cancel_provider_batches(done.cancelled, settings)
    counts = batch_counts(batch.id, settings=settings)
    return Cancellation("batch", batch.id, batch.name, reason, done.cancelled, done.settled,
                        counts.succeeded + counts.partial + counts.failed)


def _cancel_provider_batches(cancelled: list[str], settings: Settings) -> None:
    """Cancel at the provider the batch-lane batches whose calls now all belong to cancelled runs (the
    poller would too, at its next tick); best effort: the runs are cancelled whatever the provider says."""
    if not cancelled or not provider_capabilities(settings).batches_api:
        return
    if not in_session(lambda s: repo.lane_runs_among(s, cancelled), write=False):
        return
    try:
        lane.cancel_provider_batches(settings)
    except Exception as exc:  # noqa: BLE001 - the poller cancels them at its next tick
        log.warning("could not cancel the provider batches now (%s); the lane's poller will", exc)


def lane_status(batch_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """The lane a batch was last sent on and, for the batch lane, how many provider batches still carry
    calls of its runs (open: not yet collected)."""
    prepare(settings or get_settings())

    def read(s: OrmSession) -> dict[str, Any]:
        batch = s.get(Batch, batch_id)
        lane_name = str(((batch.config if batch else None) or {}).get("lane") or "sync")
        info: dict[str, Any] = {"lane": lane_name}
        if lane_name == "batch":
            info["open_provider_batches"] = repo.open_provider_batches_of_batch(s, batch_id)
        return info

    return in_session(read, write=False)


def retry_failed(batch_ref: str, *, settings: Settings | None = None, max_in_flight: int | None = None,
                 allow_mixed: bool = False) -> Submission:
    """Run the failed and partial documents of a stored batch again, from their stored text. Refused
    when the batch was sent with another provider or other models, unless `allow_mixed`."""
    settings = settings or get_settings()
    batch = find_batch(batch_ref, settings=settings)
    spec = with_provider(BatchSpec(batch.pattern, dict(batch.config.get("options") or {})), settings)
    check_batch(batch.name, spec, allow_mixed=allow_mixed)

    def remember(s: OrmSession) -> None:
        stored = s.get(Batch, batch.id)
        if stored is not None:
            stored.config = {**(stored.config or {}), **_answerers(s, stored, spec)}

    in_session(remember)

    def records() -> Iterator[tuple[int, Record]]:
        with Session() as s:
            rows = repo.documents_to_retry(s, batch.id)
        for row in rows:
            yield row.position or 0, Record(row.external_id, row.text, row.gold_label, None, row.size_bytes)

    lane_name = check_lane(str((batch.config or {}).get("lane") or "sync"), settings)
    submitter = Submitter(batch.id, spec, settings, max_in_flight=None if lane_name == "batch" else max_in_flight,
                          lane=lane_name)
    return submitter.run(records(), Submission(batch.id, batch.name, False))
