"""Submitting a batch: a stream of stored runs with back-pressure (at most `max_in_flight` unfinished), the
batch lane's budgeted release, and waiting for the batch to end."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session as OrmSession

from chorus.batch.estimate import estimate_batch
from chorus.batch.spec import (
    CHUNK,
    BatchSpec,
    Prepared,
    Source,
    answerers_of,
    check_batch,
    check_lane,
    find_batch,
    open_batch,
    prepare_batch,
    with_provider,
)
from chorus.budget import check_budget, estimate_plan
from chorus.costing import request_cost
from chorus.native import start_run
from chorus.plans import Plan
from chorus.runs import cancel_runs, celery_app, ensure_workers, prepare
from models import Batch, RunStatus, Session, in_session, repo
from models.repo import content_hash
from models.tables import OutcomeStatus, new_id, utcnow
from settings import Settings, get_settings
from tasks import dispatch, lane
from tasks.maintenance import BatchStallWatch
from workflows.cost import Cost, total
from workflows.errors import ConfigError, RunTimeout
from workflows.intake import Record
from workflows.taskfile import Task

POLL_S = 0.02
LANE_WAIT_S = 0.25  # how often a lane submission waiting for budget room looks again (results take a while)
DISPATCH_GROUP = 100



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
            stored.config = {**(stored.config or {}), **answerers_of(s, stored, spec)}

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
