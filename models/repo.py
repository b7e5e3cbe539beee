"""Reads and writes shared by the tasks and the API. Every function takes the session it works in."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import String, and_, case, cast, func, insert, literal, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload

from models.tables import (
    CALL_ROLES,
    TERMINAL_RUN,
    Batch,
    Blob,
    Document,
    OutcomeRole,
    OutcomeStatus,
    Pattern,
    Run,
    RunStatus,
    UploadedFile,
    WorkerOutcome,
    utcnow,
)

OPEN_OUTCOME = (OutcomeStatus.PENDING, OutcomeStatus.RUNNING, OutcomeStatus.RETRYING)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every stamp chorus writes is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class SlotSpec:
    slot: int
    role: OutcomeRole
    model: str
    prompt_variant: str | None = None
    temperature: float | None = None
    held: bool = False  # an adaptive vote's voter, not in the first wave: not queued (queued_at NULL)
    title: str | None = None  # what the slot covers (a section's title), shown by status and the report
    inputs: tuple[int, ...] | None = None  # a synthesis step's input slots, in order (`add_slots` only)
    level: int | None = None  # a synthesis step's level in its tree (`add_slots` only)


@dataclass(frozen=True)
class BlobSpec:
    """Bytes to keep for the workers (a PDF, an image, a section's pages), by content hash."""

    sha256: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class DocumentSpec:
    """What a document is beyond its text: its kind, and for a PDF or an image its bytes and pages;
    `blobs` are more bytes its run reads (the PDFs of a page-range section run)."""

    kind: str = "text"
    blob: BlobSpec | None = None
    pages: int | None = None
    blobs: tuple[BlobSpec, ...] = ()


def keep_blobs(s: OrmSession, blobs: Sequence[BlobSpec]) -> None:
    """Store each blob once (content-addressed; a concurrent writer of the same bytes is fine)."""
    for blob in {b.sha256: b for b in blobs}.values():
        values = {"sha256": blob.sha256, "media_type": blob.media_type, "size_bytes": len(blob.data),
                  "data": blob.data, "created_at": utcnow()}
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert  # dialect-specific upsert

            s.execute(pg_insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # dialect-specific upsert

            s.execute(sqlite_insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        elif s.get(Blob, blob.sha256) is None:
            s.add(Blob(**values))


def blob_data(s: OrmSession, sha256: str) -> bytes:
    data = s.scalar(select(Blob.data).where(Blob.sha256 == sha256))
    if data is None:
        raise LookupError(f"no stored bytes for document {sha256[:12]}")
    return bytes(data)


def record_upload(s: OrmSession, file_id: str, run_id: str, blob_sha256: str) -> None:
    s.add(UploadedFile(file_id=file_id, run_id=run_id, blob_sha256=blob_sha256))


def files_to_delete(s: OrmSession, run_ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(file_id, run_id) of uploads not yet deleted whose run is terminal (or gone); of `run_ids` only,
    when given."""
    query = (select(UploadedFile.file_id, UploadedFile.run_id)
             .outerjoin(Run, Run.id == UploadedFile.run_id)
             .where(UploadedFile.deleted_at.is_(None), (Run.id.is_(None)) | Run.status.in_(TERMINAL_RUN)))
    if run_ids is not None:
        query = query.where(UploadedFile.run_id.in_(list(run_ids)))
    return [(row.file_id, row.run_id) for row in s.execute(query)]


def mark_file_deleted(s: OrmSession, file_id: str, error: str | None = None) -> None:
    values: dict[str, Any] = {"error": error} if error else {"deleted_at": utcnow(), "error": None}
    s.execute(update(UploadedFile).where(UploadedFile.file_id == file_id).values(**values))


def uploads(s: OrmSession, run_id: str) -> list[UploadedFile]:
    return list(s.scalars(select(UploadedFile).where(UploadedFile.run_id == run_id)))


def create_run(
    s: OrmSession,
    *,
    text: str,
    external_id: str,
    pattern: Pattern,
    provider: str,
    config: dict[str, Any],
    slots: list[SlotSpec],
    batch_id: str | None = None,
    gold_label: str | None = None,
    document: DocumentSpec | None = None,
) -> Run:
    """A Document, its Run and one pending WorkerOutcome per slot, in the caller's transaction."""
    spec = document or DocumentSpec()
    keep_blobs(s, [b for b in (spec.blob, *spec.blobs) if b is not None])
    doc = Document(
        batch_id=batch_id, external_id=external_id,
        content_hash=spec.blob.sha256 if spec.blob is not None else content_hash(text), text=text,
        gold_label=gold_label, kind=spec.kind, blob_sha256=spec.blob.sha256 if spec.blob is not None else None,
        pages=spec.pages,
    )
    now = utcnow()
    run = Run(document=doc, pattern=pattern, provider=provider, config=config, status=RunStatus.PENDING)
    run.outcomes = [
        WorkerOutcome(
            slot=spec.slot,
            role=spec.role,
            model=spec.model,
            prompt_variant=spec.prompt_variant,
            temperature=spec.temperature,
            title=spec.title[:200] if spec.title is not None else None,
            status=OutcomeStatus.PENDING,
            queued_at=None if spec.held else now,
        )
        for spec in slots
    ]
    s.add(run)
    s.flush()
    return run


def add_slots(s: OrmSession, run_id: str, slots: Sequence[SlotSpec]) -> list[int]:
    """Add slots to a run that is under way (a plan's workers, an escalated call), pending and queued now,
    in the caller's transaction; a slot number the run already has is left as it is, so a callback that
    runs twice adds each slot once. The slot numbers added by this call."""
    if not slots:
        return []
    now = utcnow()
    rows = [{"run_id": run_id, "slot": spec.slot, "role": spec.role, "model": spec.model,
             "prompt_variant": spec.prompt_variant, "temperature": spec.temperature,
             "title": spec.title[:200] if spec.title is not None else None, "status": OutcomeStatus.PENDING,
             "queued_at": None if spec.held else now, "attempts": 0, "input_tokens": 0, "output_tokens": 0,
             "inputs": list(spec.inputs) if spec.inputs is not None else None, "level": spec.level}
            for spec in slots]
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # dialect-specific upsert

        statement: Any = pg_insert(WorkerOutcome).on_conflict_do_nothing(index_elements=["run_id", "slot"])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # dialect-specific upsert

        statement = sqlite_insert(WorkerOutcome).on_conflict_do_nothing(index_elements=["run_id", "slot"])
    added = s.scalars(statement.returning(WorkerOutcome.slot), rows).all()
    return sorted(added)


@dataclass(frozen=True)
class Claim:
    """A slot that a task has taken for one attempt."""

    run_id: str
    slot: int
    role: OutcomeRole
    model: str
    prompt_variant: str | None
    temperature: float | None
    attempts: int
    started_at: dt.datetime


def claim_slot(s: OrmSession, run_id: str, slot: int, *, task_id: str | None, hostname: str | None,
               lease_s: float) -> Claim | None:
    """Mark the slot running, count the attempt and hold it for `lease_s`, in one round trip.

    Returns None when the slot cannot be taken: it is terminal, its run is terminal (a redelivered
    task must not call the provider again, nor re-open a tallied run), another holder's lease is
    still live (`lease_holder` tells that case apart), or it does not exist.
    """
    now = utcnow()
    run_open = select(Run.id).where(Run.id == run_id, Run.status.not_in(TERMINAL_RUN)).exists()
    takeable = (WorkerOutcome.status.in_((OutcomeStatus.PENDING, OutcomeStatus.RETRYING))
                | ((WorkerOutcome.status == OutcomeStatus.RUNNING)
                   & (WorkerOutcome.lease_until.is_(None) | (WorkerOutcome.lease_until < now))))
    row = s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, takeable, run_open)
        .values(
            status=OutcomeStatus.RUNNING,
            attempts=WorkerOutcome.attempts + 1,
            started_at=func.coalesce(WorkerOutcome.started_at, now),
            lease_until=now + dt.timedelta(seconds=lease_s),
            task_id=task_id,
            hostname=hostname,
        )
        .returning(
            WorkerOutcome.role,
            WorkerOutcome.model,
            WorkerOutcome.prompt_variant,
            WorkerOutcome.temperature,
            WorkerOutcome.attempts,
            WorkerOutcome.started_at,
        )
    ).one_or_none()
    if row is None:
        return None
    return Claim(run_id, slot, row.role, row.model, row.prompt_variant, row.temperature, row.attempts,
                 as_utc(row.started_at) or now)


def lease_holder(s: OrmSession, run_id: str, slot: int) -> dt.datetime | None:
    """When another holder's lease on a running slot of an open run ends; None if nobody holds it."""
    row = s.execute(select(WorkerOutcome.status, WorkerOutcome.lease_until, Run.status)
                    .join(Run, Run.id == WorkerOutcome.run_id)
                    .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot)).one_or_none()
    if row is None or row[0] is not OutcomeStatus.RUNNING or row[2] in TERMINAL_RUN:
        return None
    until = as_utc(row[1])
    return until if until is not None and until > utcnow() else None


def renew_lease(s: OrmSession, run_id: str, slot: int, *, task_id: str | None, lease_s: float) -> bool:
    """Extend the holder's lease on its running slot; False when the slot is no longer its own."""
    done = s.execute(update(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.status == OutcomeStatus.RUNNING,
        WorkerOutcome.task_id == task_id,
    ).values(lease_until=utcnow() + dt.timedelta(seconds=lease_s)))
    return bool(getattr(done, "rowcount", 0))


def release_slot(s: OrmSession, run_id: str, slot: int, *, note: str) -> None:
    """Undo a claim whose call never went out (it waits for a rate-limit token): the attempt is not
    counted, and a slot that never ran is pending again, so a wait never shows up as latency."""
    s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot,
               WorkerOutcome.status == OutcomeStatus.RUNNING)
        .values(
            attempts=WorkerOutcome.attempts - 1,
            status=case((WorkerOutcome.attempts > 1, OutcomeStatus.RETRYING), else_=OutcomeStatus.PENDING),
            started_at=case((WorkerOutcome.attempts > 1, WorkerOutcome.started_at), else_=None),
            error=note,
        )
    )


def count_open_slots(s: OrmSession, run_id: str, *, sent_only: bool = False) -> int:
    """Slots of the run that are not terminal yet (pending, running or retrying). `sent_only`: leave out
    the slots an adaptive vote holds back (pending, never queued)."""
    query = select(func.count()).select_from(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME))
    if sent_only:
        query = query.where(~_held())
    return s.scalar(query) or 0


# ----- adaptive voting ------------------------------------------------------------------------------
def _held() -> Any:
    """A slot an adaptive vote has not asked yet: pending and never queued."""
    return and_(WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.queued_at.is_(None))


def load_run_locked(s: OrmSession, run_id: str) -> Run | None:
    """The run with its outcomes as they are now, its row locked until the transaction ends (PostgreSQL;
    SQLite serialises writers anyway): two callbacks of one adaptive vote decide its next wave one at a
    time."""
    s.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    return s.execute(
        select(Run).options(selectinload(Run.outcomes), selectinload(Run.document)).where(Run.id == run_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def run_progress(s: OrmSession, run_id: str) -> tuple[RunStatus | None, int]:
    """(the run's status, its open slots not held back) in one round trip: what a tally checks first."""
    open_slots = (select(func.count()).select_from(WorkerOutcome)
                  .where(WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME), ~_held())
                  .scalar_subquery())
    row = s.execute(select(Run.status, open_slots).where(Run.id == run_id)).one_or_none()
    return (None, 0) if row is None else (row[0], int(row[1] or 0))


def release_slots(s: OrmSession, run_id: str, slots: Sequence[int]) -> list[int]:
    """Queue held slots (an adaptive vote's next wave): the slots released, in order."""
    rows = s.execute(update(WorkerOutcome)
                     .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot.in_(list(slots)), _held())
                     .values(queued_at=utcnow())
                     .returning(WorkerOutcome.slot)).scalars()
    return sorted(rows)


def skip_slots(s: OrmSession, run_id: str, reason: str) -> int:
    """Mark every held slot of the run skipped (the vote was decided before their turn); how many."""
    result = s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, _held())
                       .values(status=OutcomeStatus.SKIPPED, error=reason, finished_at=utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a CursorResult for an UPDATE


def slot_progress(s: OrmSession, run_id: str) -> tuple[int, int]:
    """(slots finished, slots so far) of a run: a progress bar's figures (synthesis steps add slots)."""
    total = s.scalar(select(func.count()).select_from(WorkerOutcome).where(WorkerOutcome.run_id == run_id)) or 0
    return total - count_open_slots(s, run_id), total


def run_inputs(s: OrmSession, run_id: str) -> tuple[dict[str, Any], str]:
    """The run's config and its document text (both immutable once submitted)."""
    row = s.execute(
        select(Run.config, Document.text).join(Document, Run.document_id == Document.id).where(Run.id == run_id)
    ).one()
    return row.config, row.text


def update_slot(s: OrmSession, run_id: str, slot: int, **values: Any) -> None:
    s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot).values(**values))


def load_run(s: OrmSession, run_id: str) -> Run | None:
    return s.execute(
        select(Run).options(selectinload(Run.outcomes), selectinload(Run.document)).where(Run.id == run_id)
    ).scalar_one_or_none()


def find_run(s: OrmSession, prefix: str) -> list[Run]:
    """Runs whose id starts with `prefix` (ids are long; users type the first few characters)."""
    return list(
        s.execute(
            select(Run).options(selectinload(Run.outcomes), selectinload(Run.document))
            .where(Run.id.startswith(prefix)).limit(2)
        ).scalars()
    )


def finish_run(
    s: OrmSession,
    run: Run,
    *,
    status: RunStatus,
    result: dict[str, Any],
    answer: str | None = None,
    confidence: float | None = None,
    low_agreement: bool | None = None,
    error: str | None = None,
) -> None:
    assert status in TERMINAL_RUN
    run.status = status
    run.result = result
    run.answer = answer
    run.confidence = confidence
    run.low_agreement = low_agreement
    run.error = error
    run.finished_at = utcnow()
    run.document.status = status
    run.document.error = error


# ----- the worker side: dispatch, synthesis levels, the reaper ----------------------------------
@dataclass(frozen=True)
class StartedRun:
    id: str
    pattern: Pattern
    config: dict[str, Any]
    chord_id: str | None
    document_id: str


def start_pending_runs(s: OrmSession, run_ids: list[str]) -> list[StartedRun]:
    """Mark those of `run_ids` still pending as running (and their documents); the ones it marked.
    A run already started (a redelivered dispatch) is not returned, so it is never sent twice."""
    rows = s.execute(update(Run).where(Run.id.in_(run_ids), Run.status == RunStatus.PENDING)
                     .values(status=RunStatus.RUNNING, submitted_at=utcnow())
                     .returning(Run.id, Run.pattern, Run.config, Run.chord_id, Run.document_id)).all()
    if rows:
        s.execute(update(Document).where(Document.id.in_([r.document_id for r in rows]))
                  .values(status=RunStatus.RUNNING))
    return [StartedRun(r.id, r.pattern, r.config, r.chord_id, r.document_id) for r in rows]


def outcomes_by_slot(s: OrmSession, run_id: str) -> dict[int, WorkerOutcome]:
    rows = s.execute(select(WorkerOutcome).where(WorkerOutcome.run_id == run_id)).scalars()
    return {o.slot: o for o in rows}


class StalledRun(NamedTuple):
    id: str
    pattern: Pattern
    started: dt.datetime | None
    lane: bool  # a run of the batch lane: its slots wait for a provider batch, not for messages


def stalled_runs(s: OrmSession, *, started_before: dt.datetime, run_ids: list[str] | None = None,
                 limit: int = 500) -> list[StalledRun]:
    """Open runs submitted (or created) before `started_before`."""
    started = func.coalesce(Run.submitted_at, Run.created_at)
    query = select(Run.id, Run.pattern, started.label("started"), _is_lane_run().label("lane")).where(
        Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)), started < started_before)
    if run_ids is not None:
        query = query.where(Run.id.in_(run_ids))
    return [StalledRun(r.id, r.pattern, as_utc(r.started), bool(r.lane)) for r in s.execute(query.limit(limit)).all()]


def fail_open_slots(s: OrmSession, run_id: str, reason: str) -> None:
    s.execute(update(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME),
    ).values(status=OutcomeStatus.FAILED, error=reason, finished_at=utcnow()))


def mark_lost_slots(s: OrmSession, run_id: str, *, queued_before: dt.datetime, marker: str
                    ) -> list[tuple[int, str, OutcomeRole]]:
    """Slots never claimed since before `queued_before` (their message was lost), marked with
    `marker` so each is re-sent once: (slot, model, role) of each. Batch-lane runs have no messages: their
    slots wait for a collector or a provider batch, and are never taken."""
    lane = select(Run.id).where(Run.id == WorkerOutcome.run_id, _is_lane_run()).exists()
    rows = s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.status == OutcomeStatus.PENDING, ~lane,
               WorkerOutcome.attempts == 0, WorkerOutcome.task_id.is_(None), WorkerOutcome.queued_at < queued_before,
               WorkerOutcome.role.in_(CALL_ROLES))
        .values(task_id=marker)
        .returning(WorkerOutcome.slot, WorkerOutcome.model, WorkerOutcome.role)
    ).all()
    return [(r.slot, r.model, r.role) for r in rows]


@dataclass(frozen=True)
class Abandoned:
    """What `take_abandoned_slots` did: the slots marked to be sent again, (slot, model, role) each, and
    the slots failed at their attempt limit, (slot, attempts) each."""

    resend: list[tuple[int, str, OutcomeRole]]
    failed: list[tuple[int, int]]


def take_abandoned_slots(s: OrmSession, run_id: str, *, held_before: dt.datetime, waiting_before: dt.datetime | None,
                         marker: str, max_attempts: int, reason: str) -> Abandoned:
    """Slots a task claimed and then left with nobody to finish them:

    - `running` with a lease that ended before `held_before`: the holder stopped renewing it (it was
      killed), and no copy of its task has taken it over since;
    - `retrying`, or `pending` again after a rate-limit wait, whose lease ended before `waiting_before`
      (None: leave them alone, their message may still come) and whose next message is not coming.

    Each one below `max_attempts` is marked with `marker` in the same UPDATE that finds it, so two
    reapers never both send it again; a claim takes it over (an expired lease, a counted attempt) and
    replaces the marker, so if that holder dies too the slot is found again. Each one at its limit is
    failed with `reason`, in which "{attempts}" stands for the slot's own count. Batch-lane runs have no
    messages and are never taken."""
    lease = WorkerOutcome.lease_until
    held = (WorkerOutcome.status == OutcomeStatus.RUNNING) & (lease < held_before)
    gone = held
    if waiting_before is not None:
        waiting = (WorkerOutcome.status.in_((OutcomeStatus.PENDING, OutcomeStatus.RETRYING))
                   & WorkerOutcome.queued_at.is_not(None) & (lease < waiting_before))
        gone = held | waiting
    lane = select(Run.id).where(Run.id == WorkerOutcome.run_id, _is_lane_run()).exists()
    taken = and_(WorkerOutcome.run_id == run_id, WorkerOutcome.role.in_(CALL_ROLES),
                 lease.is_not(None), gone, WorkerOutcome.task_id.is_distinct_from(marker), ~lane)
    before, placeholder, after = reason.partition("{attempts}")
    error = (literal(before, String) + cast(WorkerOutcome.attempts, String) + literal(after, String)
             if placeholder else literal(reason, String))
    failed = s.execute(
        update(WorkerOutcome).where(taken, WorkerOutcome.attempts >= max_attempts)
        .values(status=OutcomeStatus.FAILED, error=error, finished_at=utcnow())
        .returning(WorkerOutcome.slot, WorkerOutcome.attempts)
    ).all()
    resend = s.execute(
        update(WorkerOutcome).where(taken, WorkerOutcome.attempts < max_attempts)
        .values(task_id=marker)
        .returning(WorkerOutcome.slot, WorkerOutcome.model, WorkerOutcome.role)
    ).all()
    return Abandoned(sorted((r.slot, r.model, r.role) for r in resend), sorted((r.slot, r.attempts) for r in failed))


def drop_resend_marks(s: OrmSession, run_id: str, slots: Sequence[int], *, marker: str) -> None:
    """Undo the reaper's mark on slots whose new message could not be sent (the broker refused it), so
    the next round finds them again instead of taking the mark for a message on its way."""
    s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot.in_(list(slots)),
                                          WorkerOutcome.task_id == marker).values(task_id=None))


def run_status(s: OrmSession, run_id: str) -> RunStatus | None:
    return s.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()


def run_error(s: OrmSession, run_id: str) -> str | None:
    return s.execute(select(Run.error).where(Run.id == run_id)).scalar_one_or_none()


def finished_among(s: OrmSession, run_ids: list[str]) -> list[str]:
    """Those of `run_ids` that reached a terminal status."""
    return list(s.execute(select(Run.id).where(Run.id.in_(run_ids), Run.status.in_(TERMINAL_RUN))).scalars())


# ----- cancelling -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cancelled:
    cancelled: list[str]  # runs now `cancelled`
    settled: list[str]  # open runs whose slots had all finished, of a pattern that settles (a vote's tally)
    patterns: dict[str, Pattern] = field(default_factory=dict)  # each settled run's pattern


def cancel_runs(s: OrmSession, run_ids: Sequence[str], reason: str, *, settles: Collection[Pattern] = ()
                ) -> Cancelled:
    """Cancel the open runs among `run_ids`, in the caller's transaction. Slots not taken yet (pending,
    or retrying between attempts) become `cancelled` with the reason and are never called (`claim_slot`
    takes no slot of a terminal run); a slot in flight is left to finish and record its usage. The run
    and its document end `cancelled` with the reason, so a late callback finds the run terminal and
    leaves it. A run of a pattern in `settles` (a vote) whose slots have all finished is not cancelled:
    only its callback is left to run (the caller's, with `Cancelled.settled`)."""
    open_runs = s.execute(select(Run.id, Run.pattern).where(
        Run.id.in_(list(run_ids)), Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)))).all()
    if not open_runs:
        return Cancelled([], [])
    ids = [r.id for r in open_runs]
    with_open_slots = set(s.scalars(select(WorkerOutcome.run_id).where(
        WorkerOutcome.run_id.in_(ids), WorkerOutcome.status.in_(OPEN_OUTCOME)).distinct()))
    kinds = {r.id: r.pattern for r in open_runs if r.pattern in settles and r.id not in with_open_slots}
    settled = list(kinds)
    cancel = [r.id for r in open_runs if r.id not in kinds]
    if not cancel:
        return Cancelled([], settled, kinds)
    now = utcnow()
    s.execute(update(WorkerOutcome).where(
        WorkerOutcome.run_id.in_(cancel),
        WorkerOutcome.status.in_((OutcomeStatus.PENDING, OutcomeStatus.RETRYING)),
    ).values(status=OutcomeStatus.CANCELLED, error=reason, finished_at=now, lease_until=None))
    done = s.execute(update(Run).where(
        Run.id.in_(cancel), Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)),
    ).values(status=RunStatus.CANCELLED, error=reason, finished_at=now,
             result={"status": RunStatus.CANCELLED.value, "reason": reason})
        .returning(Run.id, Run.document_id)).all()
    if done:
        s.execute(update(Document).where(Document.id.in_([d for _, d in done]))
                  .values(status=RunStatus.CANCELLED, error=reason))
    return Cancelled([r for r, _ in done], settled, kinds)


def open_runs_of_batch(s: OrmSession, batch_id: str) -> list[str]:
    """The runs of a batch's documents that are not terminal (pending: stored, not sent yet; or running)."""
    return list(s.scalars(select(Run.id).join(Document, Run.document_id == Document.id).where(
        Document.batch_id == batch_id, Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)))))


def open_runs_before(s: OrmSession, before: dt.datetime) -> list[str]:
    """Every run not terminal yet that was created before `before`."""
    return list(s.scalars(select(Run.id).where(
        Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)), Run.created_at < before)))


def set_batch_cancelled(s: OrmSession, batch_id: str, reason: str | None) -> None:
    """Mark the batch cancelled (a submitter still sending it stops), or clear the mark (a resume)."""
    batch = s.get(Batch, batch_id)
    if batch is None:
        return
    config = {k: v for k, v in (batch.config or {}).items() if k != "cancelled"}
    if reason is not None:
        config["cancelled"] = reason
    batch.config = config
    batch.updated_at = utcnow()


def batch_cancel_reason(s: OrmSession, batch_id: str) -> str | None:
    config = s.execute(select(Batch.config).where(Batch.id == batch_id)).scalar_one_or_none() or {}
    reason = config.get("cancelled")
    return str(reason) if reason else None


# ----- batches ------------------------------------------------------------------------------------
def batch_named(s: OrmSession, name: str) -> Batch | None:
    return s.execute(select(Batch).where(Batch.name == name)).scalar_one_or_none()


def create_batch(s: OrmSession, *, name: str, pattern: Pattern, config: dict[str, Any], source: str | None = None
                 ) -> Batch:
    batch = Batch(name=name, pattern=pattern, config=config, source=source)
    s.add(batch)
    s.flush()
    return batch


def find_batches(s: OrmSession, ref: str) -> list[Batch]:
    """Batches whose id starts with `ref` or whose name is `ref` (at most 2: enough to call it ambiguous)."""
    return list(s.execute(select(Batch).where((Batch.id.startswith(ref)) | (Batch.name == ref)).limit(2)).scalars())


def batch_providers(s: OrmSession, batch_id: str) -> tuple[list[str], list[str]]:
    """(providers, models) the runs of a batch were sent with, each sorted: what a batch stored before it
    recorded them in its config (`chorus.batch`) was run with."""
    runs = select(Run.id).join(Document, Document.id == Run.document_id).where(Document.batch_id == batch_id)
    providers = s.scalars(select(Run.provider).where(Run.id.in_(runs)).distinct()).all()
    models = s.scalars(select(WorkerOutcome.model).where(WorkerOutcome.run_id.in_(runs)).distinct()).all()
    return sorted(p for p in providers if p), sorted(m for m in models if m)


def document_counts(s: OrmSession, batch_id: str) -> list[tuple[RunStatus, int]]:
    rows = s.execute(select(Document.status, func.count()).where(Document.batch_id == batch_id)
                     .group_by(Document.status)).all()
    return [(status, n) for status, n in rows]


def documents_by_key(s: OrmSession, batch_id: str, keys: list[str]) -> dict[str, Document]:
    return {d.external_id: d for d in s.execute(
        select(Document).where(Document.batch_id == batch_id, Document.external_id.in_(keys))).scalars()}


def insert_batch_chunk(s: OrmSession, batch_id: str, *, documents: list[dict[str, Any]], runs: list[dict[str, Any]],
                       outcomes: list[dict[str, Any]], now: dt.datetime) -> None:
    """One chunk of a batch in bulk: new documents, their runs, the runs' pending outcomes."""
    if documents:
        s.execute(insert(Document), documents)
    s.flush()
    if runs:
        s.execute(insert(Run), runs)
        s.execute(insert(WorkerOutcome), outcomes)
    s.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=now))


def documents_to_retry(s: OrmSession, batch_id: str) -> list[Any]:
    """The failed, partial and cancelled documents of a batch that have text, in input order."""
    return list(s.execute(
        select(Document.external_id, Document.text, Document.gold_label, Document.size_bytes, Document.position)
        .where(Document.batch_id == batch_id, Document.status.in_(
                   [RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.CANCELLED]),
               Document.text != "")
        .order_by(Document.position)).all())


# ----- reading back: exports, reports, test and benchmark checks -----------------------------------
def documents_page(s: OrmSession, batch_id: str, *, after_position: int, after_id: str, limit: int) -> list[Document]:
    """The next `limit` documents of a batch in input order, after (position, id) (keyset paging)."""
    position = func.coalesce(Document.position, -1)
    return list(s.execute(
        select(Document).where(Document.batch_id == batch_id,
                               (position > after_position) | ((position == after_position) & (Document.id > after_id)))
        .order_by(position, Document.id).limit(limit)
    ).scalars().all())


def latest_runs(s: OrmSession, document_ids: list[str]) -> dict[str, Run]:
    """Each document's most recent run."""
    latest: dict[str, Run] = {}
    for run in s.execute(select(Run).where(Run.document_id.in_(document_ids)).order_by(Run.created_at)).scalars():
        latest[run.document_id] = run
    return latest


@dataclass(frozen=True)
class ModelUsage:
    run_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    estimated: bool
    lane: bool = False  # the batch lane carried it: priced at the batch price with 1-hour cache writes


def usage_by_request(s: OrmSession, run_ids: list[str]) -> list[ModelUsage]:
    """The token usage of every outcome (one request each) of the runs: a price tier that depends on a
    request's prompt size (Haiku 5.5 above 100k tokens) must see each request, never a sum."""
    if not run_ids:
        return []
    q = (select(WorkerOutcome.run_id, WorkerOutcome.model, WorkerOutcome.input_tokens, WorkerOutcome.output_tokens,
                WorkerOutcome.cache_write_tokens, WorkerOutcome.cache_read_tokens, WorkerOutcome.usage_estimated,
                WorkerOutcome.provider_batch)
         .where(WorkerOutcome.run_id.in_(run_ids)))
    return [ModelUsage(run_id, model, int(i or 0), int(o or 0), int(cw or 0), int(cr or 0), bool(est), pb is not None)
            for run_id, model, i, o, cw, cr, est, pb in s.execute(q)]


def runs_of_batch(s: OrmSession, batch_id: str) -> list[Run]:
    """Every run of a batch's documents, with outcomes and document loaded, oldest first."""
    return list(s.scalars(
        select(Run).join(Document, Run.document_id == Document.id).where(Document.batch_id == batch_id)
        .options(selectinload(Run.outcomes), selectinload(Run.document)).order_by(Run.created_at)
    ).all())


def run_statuses(s: OrmSession, run_ids: Sequence[str]) -> dict[str, RunStatus]:
    return {r: st for r, st in s.execute(select(Run.id, Run.status).where(Run.id.in_(list(run_ids))))}


def outcomes_of(s: OrmSession, run_ids: Sequence[str]) -> list[WorkerOutcome]:
    return list(s.scalars(select(WorkerOutcome).where(WorkerOutcome.run_id.in_(list(run_ids)))).all())


# ----- listing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRow:
    """One line of `chorus runs`: a run without its outcomes."""

    id: str
    pattern: str
    status: str
    external_id: str
    batch_id: str | None
    answer: str | None
    confidence: float | None
    task_name: str | None
    created_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None


def list_runs(s: OrmSession, *, batch_id: str | None = None, status: RunStatus | None = None,
              since: dt.datetime | None = None, limit: int = 50) -> list[RunRow]:
    """The newest runs first, filtered; one query, no outcomes loaded."""
    q = (select(Run.id, Run.pattern, Run.status, Document.external_id, Document.batch_id, Run.answer,
                Run.confidence, Run.config, Run.created_at, Run.finished_at, Run.error)
         .join(Document, Run.document_id == Document.id))
    if batch_id is not None:
        q = q.where(Document.batch_id == batch_id)
    if status is not None:
        q = q.where(Run.status == status)
    if since is not None:
        q = q.where(Run.created_at >= since)
    q = q.order_by(Run.created_at.desc(), Run.id).limit(limit)
    return [RunRow(rid, pattern.value, st.value, ext, bid, answer, conf, (config or {}).get("task_name"),
                   as_utc(created), as_utc(finished), error)
            for rid, pattern, st, ext, bid, answer, conf, config, created, finished, error in s.execute(q)]


@dataclass(frozen=True)
class BatchRow:
    id: str
    name: str
    pattern: str
    created_at: dt.datetime | None
    source: str | None
    task_name: str | None
    counts: dict[str, int]


def list_batches(s: OrmSession, *, limit: int = 50) -> list[BatchRow]:
    """The newest batches first, with their documents counted per status (two queries)."""
    batches = list(s.execute(select(Batch).order_by(Batch.created_at.desc(), Batch.id).limit(limit)).scalars())
    counts: dict[str, dict[str, int]] = {b.id: {} for b in batches}
    if batches:
        rows = s.execute(select(Document.batch_id, Document.status, func.count())
                         .where(Document.batch_id.in_(list(counts))).group_by(Document.batch_id, Document.status))
        for batch_id, status, n in rows:
            counts[str(batch_id)][status.value] = n
    return [BatchRow(b.id, b.name, b.pattern.value, as_utc(b.created_at), b.source,
                     ((b.config.get("options") or {}).get("task") or {}).get("name")
                     if isinstance((b.config.get("options") or {}).get("task"), dict) else None,
                     counts[b.id]) for b in batches]


# ----- the batch lane -----
from sqlalchemy import or_  # noqa: E402 - this section's own imports, so the shared top is left alone

from models.tables import ProviderBatch  # noqa: E402

# A lane slot is claimed by a collector with a marker in `task_id` ("lane:<id>") and an attempt counted,
# while it stays `pending`; the marker's `lease_until` says when an unrecorded claim counts as abandoned
# (the collector died between creating the provider batch and recording it). Recording the batch sets
# `provider_batch` and makes the slot `running`.
LANE_MARK = "lane:"
LANE_ROLES = CALL_ROLES


def _is_lane_run() -> Any:
    return Run.config["lane"].as_string() == "batch"


def release_stale_lane_claims(s: OrmSession, *, now: dt.datetime) -> list[dt.datetime]:
    """Give back claims whose collector never recorded a provider batch before their deadline: the slot
    is pending and unclaimed again, its attempt not counted. The released claims' deadlines (their
    collector may have created a provider batch before it stopped: `tasks.lane` looks for it by time)."""
    stale = (WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.provider_batch.is_(None),
             WorkerOutcome.task_id.startswith(LANE_MARK), WorkerOutcome.lease_until < now)
    deadlines = [as_utc(d) or now for d in s.scalars(
        select(WorkerOutcome.lease_until).where(*stale).with_for_update()).all()]
    if deadlines:
        s.execute(update(WorkerOutcome).where(*stale).values(
            task_id=None, lease_until=None, attempts=WorkerOutcome.attempts - 1,
            error="a collector claimed this slot and stopped before recording its provider batch; collected again"))
    return deadlines


def known_provider_batches(s: OrmSession, batch_ids: Sequence[str]) -> set[str]:
    """The ids among these that are stored."""
    if not batch_ids:
        return set()
    return set(s.scalars(select(ProviderBatch.id).where(ProviderBatch.id.in_(list(batch_ids)))).all())


def lane_candidates(s: OrmSession, *, limit: int) -> list[tuple[str, int, dict[str, Any]]]:
    """(run id, slot, run config) of lane slots waiting for a collector: voter and section slots of
    running lane runs, pending, released (`queued_at` set), in no provider batch, unclaimed."""
    rows = s.execute(
        select(WorkerOutcome.run_id, WorkerOutcome.slot, Run.config)
        .join(Run, Run.id == WorkerOutcome.run_id)
        .where(Run.status == RunStatus.RUNNING, _is_lane_run(),
               WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.queued_at.is_not(None),
               WorkerOutcome.provider_batch.is_(None), WorkerOutcome.task_id.is_(None),
               WorkerOutcome.role.in_(LANE_ROLES))
        .order_by(WorkerOutcome.queued_at, WorkerOutcome.run_id, WorkerOutcome.slot).limit(limit)).all()
    return [(r.run_id, r.slot, r.config) for r in rows]


def slot_statuses(s: OrmSession, run_ids: Sequence[str]) -> dict[str, dict[int, OutcomeStatus]]:
    """run id -> slot -> status, for the runs given."""
    found: dict[str, dict[int, OutcomeStatus]] = {}
    for run_id, slot, status in s.execute(select(WorkerOutcome.run_id, WorkerOutcome.slot, WorkerOutcome.status)
                                          .where(WorkerOutcome.run_id.in_(list(run_ids)))):
        found.setdefault(run_id, {})[slot] = status
    return found


def claim_lane_slots(s: OrmSession, slots: Sequence[tuple[str, int]], *, marker: str, now: dt.datetime,
                     hold_s: float) -> list[Claim]:
    """Claim the given lane slots still waiting, in one UPDATE … RETURNING: the marker, one more
    attempt, held for `hold_s` (after that an unrecorded claim is released). A slot another collector
    took meanwhile, or that was cancelled, is not returned."""
    if not slots:
        return []
    by_run: dict[str, list[int]] = {}
    for run_id, slot in slots:
        by_run.setdefault(run_id, []).append(slot)
    wanted = or_(*((WorkerOutcome.run_id == run_id) & WorkerOutcome.slot.in_(run_slots)
                   for run_id, run_slots in by_run.items()))
    run_open = select(Run.id).where(Run.id == WorkerOutcome.run_id, Run.status == RunStatus.RUNNING).exists()
    rows = s.execute(
        update(WorkerOutcome)
        .where(wanted, WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.provider_batch.is_(None),
               WorkerOutcome.task_id.is_(None), run_open)
        .values(task_id=marker, attempts=WorkerOutcome.attempts + 1,
                lease_until=now + dt.timedelta(seconds=hold_s))
        .returning(WorkerOutcome.run_id, WorkerOutcome.slot, WorkerOutcome.role, WorkerOutcome.model,
                   WorkerOutcome.prompt_variant, WorkerOutcome.temperature, WorkerOutcome.attempts,
                   WorkerOutcome.started_at)
    ).all()
    return [Claim(r.run_id, r.slot, r.role, r.model, r.prompt_variant, r.temperature, r.attempts,
                  as_utc(r.started_at) or now) for r in rows]


def release_lane_claims(s: OrmSession, slots: Sequence[tuple[str, int]], *, marker: str, note: str) -> None:
    """Undo a claim whose provider batch could not be created: pending and unclaimed again, the attempt
    not counted, the reason kept."""
    for run_id, slot in slots:
        s.execute(update(WorkerOutcome).where(
            WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.task_id == marker,
            WorkerOutcome.provider_batch.is_(None),
        ).values(task_id=None, lease_until=None, attempts=WorkerOutcome.attempts - 1, error=note))


def record_provider_batch(s: OrmSession, *, batch_id: str, model: str, status: str,
                          slots: Sequence[tuple[str, int]], marker: str, now: dt.datetime) -> int:
    """Store the provider batch and name it on each claimed slot (running from now). How many slots
    took it (a slot cancelled since its claim stays cancelled; its request is simply not read)."""
    found = s.get(ProviderBatch, batch_id, with_for_update=True)
    if found is None:
        s.add(ProviderBatch(id=batch_id, model=model, status=status, requests=len(slots), created_at=now))
        s.flush()
    else:  # adopted already (tasks.lane found it while this collector stalled): the collector's slots join it
        found.model, found.requests = model, len(slots)
    taken = 0
    for run_id, slot in slots:
        done = s.execute(update(WorkerOutcome).where(
            WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.task_id == marker,
            WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.provider_batch.is_(None),
        ).values(provider_batch=batch_id, status=OutcomeStatus.RUNNING, task_id=None, lease_until=None,
                 started_at=func.coalesce(WorkerOutcome.started_at, now), hostname=None, error=None))
        taken += int(getattr(done, "rowcount", 0) or 0)
    return taken


def adopt_provider_batch(s: OrmSession, *, batch_id: str, status: str, created_at: dt.datetime, note: str) -> bool:
    """Store a provider batch that a collector created and never recorded (it stopped in between), with no
    slot: the poller then collects it, and a paid answer in it is added to its slot as a duplicate.
    False if it is stored already."""
    if s.get(ProviderBatch, batch_id) is not None:
        return False
    s.add(ProviderBatch(id=batch_id, model="", status=status, requests=0, created_at=created_at, error=note))
    s.flush()
    return True


@dataclass(frozen=True)
class OpenProviderBatch:
    id: str
    model: str
    status: str


def open_provider_batches(s: OrmSession, limit: int = 1000) -> list[OpenProviderBatch]:
    """Provider batches whose results have not all been written yet, oldest first."""
    rows = s.execute(select(ProviderBatch.id, ProviderBatch.model, ProviderBatch.status)
                     .where(ProviderBatch.collected_at.is_(None)).order_by(ProviderBatch.created_at).limit(limit))
    return [OpenProviderBatch(r.id, r.model, r.status) for r in rows]


def note_provider_batch(s: OrmSession, batch_id: str, **values: Any) -> None:
    """Update a provider batch's row (status, polled_at, ended_at, collected_at, error)."""
    s.execute(update(ProviderBatch).where(ProviderBatch.id == batch_id).values(**values))


@dataclass(frozen=True)
class LaneSlot:
    """A slot whose call a provider batch carries, as the poller needs it."""

    claim: Claim
    status: OutcomeStatus
    run_status: RunStatus
    run_error: str | None


def lane_slots_of(s: OrmSession, batch_id: str) -> dict[tuple[str, int], LaneSlot]:
    """(run id, slot) -> the slot, for every outcome that still names this provider batch."""
    rows = s.execute(
        select(WorkerOutcome.run_id, WorkerOutcome.slot, WorkerOutcome.role, WorkerOutcome.model,
               WorkerOutcome.prompt_variant, WorkerOutcome.temperature, WorkerOutcome.attempts,
               WorkerOutcome.started_at, WorkerOutcome.status, Run.status.label("run_status"),
               Run.error.label("run_error"))
        .join(Run, Run.id == WorkerOutcome.run_id).where(WorkerOutcome.provider_batch == batch_id)).all()
    now = utcnow()
    return {(r.run_id, r.slot): LaneSlot(Claim(r.run_id, r.slot, r.role, r.model, r.prompt_variant, r.temperature,
                                               r.attempts, as_utc(r.started_at) or now),
                                         r.status, r.run_status, r.run_error) for r in rows}


def write_lane_result(s: OrmSession, run_id: str, slot: int, batch_id: str, **values: Any) -> bool:
    """Write a provider batch's result into its slot, only while the slot is open and still names that
    batch (a result read twice, or a slot already sent again elsewhere, changes nothing)."""
    done = s.execute(update(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.provider_batch == batch_id,
        WorkerOutcome.status.in_(OPEN_OUTCOME),
    ).values(**values))
    return bool(getattr(done, "rowcount", 0))


def runs_of_provider_batch(s: OrmSession, batch_id: str) -> list[tuple[str, Pattern, RunStatus]]:
    """(run id, pattern, status) of every run with a slot naming this provider batch."""
    rows = s.execute(select(Run.id, Run.pattern, Run.status).where(
        Run.id.in_(select(WorkerOutcome.run_id).where(WorkerOutcome.provider_batch == batch_id)))).all()
    return [(r.id, r.pattern, r.status) for r in rows]


def cancellable_provider_batches(s: OrmSession) -> list[str]:
    """Open provider batches still processing whose slots all belong to cancelled runs. An adopted batch
    (`adopt_provider_batch`: no request recorded) is never cancelled: it may be another program's."""
    live_slot = (select(WorkerOutcome.id).join(Run, Run.id == WorkerOutcome.run_id)
                 .where(WorkerOutcome.provider_batch == ProviderBatch.id, Run.status != RunStatus.CANCELLED).exists())
    return list(s.scalars(select(ProviderBatch.id).where(
        ProviderBatch.collected_at.is_(None), ProviderBatch.status == "in_progress", ProviderBatch.requests > 0,
        ~live_slot)))


def lane_runs_among(s: OrmSession, run_ids: Sequence[str]) -> set[str]:
    """Those of `run_ids` that run in the batch lane."""
    if not run_ids:
        return set()
    return set(s.scalars(select(Run.id).where(Run.id.in_(list(run_ids)), _is_lane_run())))


def open_provider_batches_of_batch(s: OrmSession, batch_id: str) -> int:
    """How many provider batches not yet collected carry a call of this (chorus) batch's runs."""
    q = (select(func.count(func.distinct(WorkerOutcome.provider_batch)))
         .join(Run, Run.id == WorkerOutcome.run_id).join(Document, Run.document_id == Document.id)
         .where(Document.batch_id == batch_id, WorkerOutcome.provider_batch.is_not(None),
                WorkerOutcome.status.in_(OPEN_OUTCOME)))
    return int(s.scalar(q) or 0)


@dataclass(frozen=True)
class LaneWork:
    collect: bool  # a released lane call waits for a collector (or its claim for a stopped collector's release)
    poll: bool  # a provider batch is not collected yet (or is to be cancelled)


def lane_work(s: OrmSession) -> LaneWork:
    """Whether beat's two lane entries have anything to do; two EXISTS-style queries, asked every tick."""
    waiting = (select(WorkerOutcome.id).join(Run, Run.id == WorkerOutcome.run_id)
               .where(Run.status == RunStatus.RUNNING, _is_lane_run(), WorkerOutcome.status == OutcomeStatus.PENDING,
                      WorkerOutcome.queued_at.is_not(None), WorkerOutcome.provider_batch.is_(None),
                      WorkerOutcome.role.in_(LANE_ROLES)).limit(1))
    open_batch = select(ProviderBatch.id).where(ProviderBatch.collected_at.is_(None)).limit(1)
    return LaneWork(collect=s.scalar(waiting) is not None, poll=s.scalar(open_batch) is not None)
