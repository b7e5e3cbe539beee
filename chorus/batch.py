"""Batches: many documents, one run each, submitted as a stream with back-pressure, resumable.

A batch is identified by its name (`--name`; by default the input's file or folder name plus a
short hash of its absolute path, so running the same command again finds the same batch). Running
a batch again skips documents that already succeeded with the same content, retries the ones
that failed, ended partial or never got sent, and leaves alone the ones still in flight.

Memory stays flat: records are read one at a time, written in chunks, and at most
`max_in_flight` runs are sent and unfinished at any moment.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from models import Batch, Document, Pattern, Run, RunStatus, Session, WorkerOutcome
from models.repo import content_hash
from models.tables import OutcomeRole, OutcomeStatus, new_id, utcnow
from providers.errors import ConfigError, NotFoundError
from settings import Settings, get_settings
from workflows.intake import Record, check_bytes, duplicate, parse_jsonl, record_from, too_big

FOLDER_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CHUNK = 200
POLL_S = 0.02
DISPATCH_GROUP = 100


# ----- input ----------------------------------------------------------------------------------
def input_kind(path: Path) -> str:
    """'folder', 'jsonl' or 'csv'; anything else is refused before anything is written."""
    if not path.exists():
        raise ConfigError(f"no such file or folder: {path}")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        missing = [c for c in ("id", "text") if c not in [h.strip().lower() for h in header]]
        if missing:
            raise ConfigError(f"{path}: the CSV header has no {' or '.join(missing)} column "
                              f"(found: {', '.join(header) or 'nothing'}); it needs id, text and optionally label")
        return "csv"
    raise ConfigError(f"{path}: give a folder of .txt/.md files, a .jsonl file or a .csv file")


def read_records(path: Path, max_bytes: int) -> Iterator[Record]:
    """Every input document in order, bad ones included (with their reason); one at a time."""
    kind = input_kind(path)
    seen: dict[str, str] = {}
    for n, (where, record) in enumerate(_raw_records(path, kind, max_bytes), 1):
        if record.key in seen:
            yield duplicate(record, seen[record.key], where, n)
            continue
        seen[record.key] = where
        yield record


def _raw_records(path: Path, kind: str, max_bytes: int) -> Iterator[tuple[str, Record]]:
    if kind == "folder":
        for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES):
            size = file.stat().st_size
            if size > max_bytes:
                yield file.name, Record(file.name, None, error=too_big(size, max_bytes), size=size)
                continue
            text, reason = check_bytes(file.read_bytes(), max_bytes)
            yield file.name, Record(file.name, text, error=reason, size=size)
    elif kind == "jsonl":
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield (f"line {lineno}", Record(f"line-{lineno}", None,
                                                    error=f"line {lineno}: invalid UTF-8 at byte {exc.start}"))
                    continue
                yield f"line {lineno}", parse_jsonl(line, lineno, max_bytes)
    else:
        with path.open("rb") as fb:
            reader = csv.DictReader(io.TextIOWrapper(fb, encoding="utf-8", errors="strict", newline=""))
            reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
            row_no = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as exc:
                    yield f"row {row_no + 1}", Record(f"row-{row_no + 1}", None,
                                                      error=f"invalid UTF-8 at byte {exc.start}; the rest of the "
                                                            "file cannot be read")
                    return
                row_no += 1
                where = f"row {row_no}"
                if None in row.values():
                    absent = [k for k, v in row.items() if v is None and k in ("id", "text")]
                    if absent:
                        yield where, Record(row.get("id") or f"row-{row_no}", None,
                                            error=f"{where}: missing column(s) {', '.join(absent)}")
                        continue
                yield where, record_from(dict(row), where, f"row-{row_no}", max_bytes)


def count_records(path: Path) -> int:
    """How many documents the input holds (a quick pass that keeps nothing)."""
    kind = input_kind(path)
    if kind == "folder":
        return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    if kind == "jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


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
        if self.pattern is Pattern.VOTE:
            from chorus.api import plan_vote

            return plan_vote(text, external_id=external_id, batch_id=batch_id, gold_label=label, settings=settings,
                             **self.options)
        from chorus.sections import plan_section

        return plan_section(text, external_id=external_id, batch_id=batch_id, settings=settings, **self.options)


def make_spec(pattern: str, options: dict[str, Any], settings: Settings) -> BatchSpec:
    """Check the pattern and its options on a probe document, before anything is written."""
    try:
        kind = Pattern(pattern)
    except ValueError:
        raise ConfigError(f"unknown pattern {pattern!r}; use vote or section") from None
    clean = {k: v for k, v in options.items() if v is not None}
    if kind is Pattern.VOTE and "labels" not in clean:
        raise ConfigError("--pattern vote needs --labels, e.g. --labels positive,negative,neutral")
    spec = BatchSpec(kind, clean)
    try:
        spec.plan("probe text", "probe", None, "probe", settings)
    except TypeError as exc:
        raise ConfigError(f"an option does not apply to --pattern {pattern}: {exc}") from None
    return spec


def check_batch(name: str, spec: BatchSpec) -> None:
    """Refuse to mix a stored batch with another pattern or other options."""
    with Session() as s:
        batch = s.execute(select(Batch).where(Batch.name == name)).scalar_one_or_none()
        if batch is not None and (batch.pattern is not spec.pattern or batch.config.get("options") != spec.options):
            raise ConfigError(
                f"batch {name!r} already exists with pattern {batch.pattern.value} and options "
                f"{batch.config.get('options')}; give another --name to start a new batch")


def open_batch(source: Path, spec: BatchSpec, name: str) -> tuple[str, bool]:
    """(batch id, created): find the batch by name or create it."""
    check_batch(name, spec)
    with Session.begin() as s:
        batch = s.execute(select(Batch).where(Batch.name == name)).scalar_one_or_none()
        if batch is not None:
            batch.source = str(source.expanduser().resolve())
            return batch.id, False
        batch = Batch(name=name, pattern=spec.pattern, config={"options": spec.options},
                      source=str(source.expanduser().resolve()))
        s.add(batch)
        s.flush()
        return batch.id, True


@dataclass(frozen=True)
class Prepared:
    """A batch whose whole input and options passed every check; nothing is written yet."""

    source: Path
    spec: BatchSpec
    name: str
    max_in_flight: int | None


def prepare_batch(source: Path, *, pattern: str, options: dict[str, Any], name: str | None = None,
                  max_in_flight: int | None = 64, settings: Settings | None = None) -> Prepared:
    """Check everything about the input as a whole (path, format, pattern, options, name)."""
    from chorus.api import _prepare

    settings = settings or get_settings()
    input_kind(source)
    spec = make_spec(pattern, options, settings)
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    _prepare(settings)
    batch_name = name or default_name(source)
    check_batch(batch_name, spec)
    return Prepared(source, spec, batch_name, max_in_flight)


def find_batch(ref: str, *, settings: Settings | None = None) -> Batch:
    """A batch by id, unique id prefix, or name."""
    from chorus.api import _prepare

    _prepare(settings or get_settings())
    with Session() as s:
        found = list(s.execute(select(Batch).where((Batch.id.startswith(ref)) | (Batch.name == ref)).limit(2))
                     .scalars())
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


def batch_counts(batch_id: str) -> Counts:
    """Documents per status, from the database (what the progress bar shows)."""
    with Session() as s:
        rows = s.execute(select(Document.status, func.count()).where(Document.batch_id == batch_id)
                         .group_by(Document.status)).all()
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
        pending: list[str] = []
        now = utcnow()
        with Session.begin() as s:
            existing = {d.external_id: d for d in s.execute(
                select(Document).where(Document.batch_id == self.batch_id, Document.external_id.in_(keys))).scalars()}
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
                        result.skipped += 1
                        continue
                    if doc is not None and doc.status is RunStatus.RUNNING and doc.content_hash == digest:
                        result.already_running += 1
                        continue
                    try:
                        plan = self.spec.plan(text, record.key, record.label, self.batch_id, self.settings)
                    except ConfigError as exc:
                        error = str(exc)
                if error is not None:
                    result.rejected += 1
                    if len(result.reasons) < 50:
                        result.reasons.append((record.key, error))
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
            if new_docs:
                s.execute(insert(Document), new_docs)
            s.flush()
            if runs:
                s.execute(insert(Run), runs)
                s.execute(insert(WorkerOutcome), outcomes)
            s.execute(update(Batch).where(Batch.id == self.batch_id).values(updated_at=now))
        return pending

    def _send(self, pending: list[str]) -> None:
        """Hand stored runs to `chorus.batch.dispatch` tasks, at most DISPATCH_GROUP per message:
        the workers send the per-document chords, so the submitter's rate is not bounded by one
        process publishing every voter's message."""
        from tasks.batch import dispatch
        from worker import CALLBACK_QUEUE

        i = 0
        while i < len(pending):
            room = len(pending) - i if self.max_in_flight is None else self._wait_for_room()
            group = pending[i:i + min(room, DISPATCH_GROUP)]
            i += len(group)
            try:
                if self.send_here:
                    send_stored(group, self.settings)
                else:
                    dispatch.si(group).apply_async(queue=CALLBACK_QUEUE)
            except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; no run stays open
                fail_runs(group, f"could not enqueue the run: {exc}. Is the broker at "
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
        with Session() as s:
            done = s.execute(select(Run.id).where(Run.id.in_(list(self.in_flight)),
                                                  Run.status.in_([RunStatus.SUCCEEDED, RunStatus.PARTIAL,
                                                                  RunStatus.FAILED]))).scalars().all()
        self.in_flight.difference_update(done)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick >= 0.2:
            self._last_tick = now
            self.on_tick()


def send_stored(run_ids: list[str], settings: Settings | None = None) -> int:
    """Mark stored pending runs running and send each one's chord (the dispatch task's body).
    Runs already sent (a redelivered dispatch) are left alone."""
    from chorus.api import send_chord, send_vote
    from chorus.sections import section_chord

    settings = settings or get_settings()
    now = utcnow()
    with Session.begin() as s:
        rows = s.execute(update(Run).where(Run.id.in_(run_ids), Run.status == RunStatus.PENDING)
                         .values(status=RunStatus.RUNNING, submitted_at=now)
                         .returning(Run.id, Run.pattern, Run.config, Run.chord_id, Run.document_id)).all()
        if rows:
            s.execute(update(Document).where(Document.id.in_([r.document_id for r in rows]))
                      .values(status=RunStatus.RUNNING))
    for row in rows:
        try:
            if row.pattern is Pattern.VOTE:
                send_vote(row.id, row.config, row.chord_id, settings=settings, keep=False)
            else:
                header, callback = section_chord(row.id, row.config["model"], len(row.config["sections"]))
                send_chord(row.id, header, callback, settings=settings, keep=False)
        except Exception:  # noqa: BLE001 - send_chord has marked the run failed with the reason
            continue
    return len(rows)


def fail_runs(run_ids: list[str], reason: str) -> None:
    from models import repo

    with Session.begin() as s:
        for run_id in run_ids:
            run = repo.load_run(s, run_id)
            if run is not None and not run.status.terminal:
                repo.finish_run(s, run, status=RunStatus.FAILED, result={}, error=reason)


def _label(plan: Any, record: Record) -> str | None:
    gold = getattr(plan, "gold_label", None)
    return gold if gold is not None else (record.label[:64] if record.label else None)


def _outcome_rows(run_id: str, plan: Any, now: Any) -> list[dict[str, Any]]:
    base = {"run_id": run_id, "status": OutcomeStatus.PENDING, "queued_at": now, "attempts": 0,
            "input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0, "cache_read_tokens": 0,
            "usage_estimated": False}
    if hasattr(plan, "panel"):
        return [{**base, "slot": v.slot, "role": OutcomeRole.VOTER, "model": v.model, "prompt_variant": v.variant,
                 "temperature": v.temperature} for v in plan.panel]
    return [{**base, "slot": sec.index, "role": OutcomeRole.SECTION, "model": plan.model, "title": sec.title[:200]}
            for sec in plan.sections]


def wait_for_batch(batch_id: str, *, timeout: float, on_tick: Callable[[], None] | None = None,
                   check: Callable[[], None] | None = None) -> Counts:
    """Wait until no document of the batch is pending or running (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = batch_counts(batch_id)
        if on_tick:
            on_tick()
        if counts.running == 0 and counts.pending == 0:
            return counts
        if check:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch still has {counts.running + counts.pending} document(s) unfinished after "
                               f"{timeout:.0f} s; `chorus status {batch_id}` shows it, re-run to resume")
        time.sleep(0.1)


def run_batch(source: Path | Prepared, *, pattern: str = "", options: dict[str, Any] | None = None,
              name: str | None = None, max_in_flight: int | None = 64, settings: Settings | None = None,
              on_tick: Callable[[str], None] | None = None, send_here: bool = False) -> Submission:
    """Find or create the batch and submit what needs a run (after `prepare_batch`'s checks).
    Returns once everything is sent, not finished: see `wait_for_batch`. `send_here` sends each
    chord from this process instead of through `chorus.batch.dispatch` tasks."""
    settings = settings or get_settings()
    prepared = source if isinstance(source, Prepared) else prepare_batch(
        source, pattern=pattern, options=options or {}, name=name, max_in_flight=max_in_flight, settings=settings)
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
            rows = s.execute(select(Document.external_id, Document.text, Document.gold_label, Document.size_bytes,
                                    Document.position)
                             .where(Document.batch_id == batch.id,
                                    Document.status.in_([RunStatus.FAILED, RunStatus.PARTIAL]),
                                    Document.text != "")
                             .order_by(Document.position)).all()
        for row in rows:
            yield row.position or 0, Record(row.external_id, row.text, row.gold_label, None, row.size_bytes)

    submitter = Submitter(batch.id, spec, settings, max_in_flight=max_in_flight)
    return submitter.run(records(), Submission(batch.id, batch.name, False))
