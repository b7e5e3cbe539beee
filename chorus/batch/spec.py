"""The batch row and its input: a batch's spec (pattern, task, options, provider and models), its name and
version, the check that resuming it cannot mix answerers, and reading its documents from a path or an iterable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session as OrmSession

from chorus.inputs import input_kind, read_file_record, read_records
from chorus.planners import planner
from chorus.plans import Plan
from chorus.runs import not_found, prepare
from models import Batch, Pattern, RunStatus, Session, repo
from providers import provider_capabilities
from providers.offline import LANE_NEEDS_ANTHROPIC
from settings import Settings, get_settings
from workflows.calls import Attachment
from workflows.errors import ConfigError, NotFoundError
from workflows.intake import Record, check_text, duplicate, record_from
from workflows.taskfile import OrchestrateTask, SectionTask, VoteTask, task_from_json, task_hash

CHUNK = 200  # documents read, checked and written at a time
LANES = ("sync", "batch")



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


def answerers_of(s: OrmSession, batch: Batch | None, spec: BatchSpec) -> dict[str, Any]:
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
            batch.config = {**(batch.config or {}), "lane": lane_name, **answerers_of(s, batch, spec)}
            return batch.id, False
        batch = repo.create_batch(s, name=name, pattern=spec.pattern,
                                  config={"options": spec.options, "lane": lane_name, **answerers_of(s, None, spec)},
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
