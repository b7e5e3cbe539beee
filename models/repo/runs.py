"""Runs and their slots: create, add slots to a run under way, read, progress, finish."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload

from models.repo._common import OPEN_OUTCOME, content_hash, held_back
from models.repo.documents import DocumentSpec, keep_blobs
from models.tables import (
    TERMINAL_RUN,
    Document,
    OutcomeRole,
    OutcomeStatus,
    Pattern,
    Run,
    RunStatus,
    WorkerOutcome,
    utcnow,
)


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


def count_open_slots(s: OrmSession, run_id: str, *, sent_only: bool = False) -> int:
    """Slots of the run that are not terminal yet (pending, running or retrying). `sent_only`: leave out
    the slots an adaptive vote holds back (pending, never queued)."""
    query = select(func.count()).select_from(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME))
    if sent_only:
        query = query.where(~held_back())
    return s.scalar(query) or 0


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
                  .where(WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME), ~held_back())
                  .scalar_subquery())
    row = s.execute(select(Run.status, open_slots).where(Run.id == run_id)).one_or_none()
    return (None, 0) if row is None else (row[0], int(row[1] or 0))


def release_slots(s: OrmSession, run_id: str, slots: Sequence[int]) -> list[int]:
    """Queue held slots (an adaptive vote's next wave): the slots released, in order."""
    rows = s.execute(update(WorkerOutcome)
                     .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot.in_(list(slots)), held_back())
                     .values(queued_at=utcnow())
                     .returning(WorkerOutcome.slot)).scalars()
    return sorted(rows)


def skip_slots(s: OrmSession, run_id: str, reason: str) -> int:
    """Mark every held slot of the run skipped (the vote was decided before their turn); how many."""
    result = s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, held_back())
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
