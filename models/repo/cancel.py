"""Cancelling runs and batches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from models.repo._common import OPEN_OUTCOME
from models.tables import (
    Batch,
    Document,
    OutcomeStatus,
    Pattern,
    Run,
    RunStatus,
    WorkerOutcome,
    utcnow,
)


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
