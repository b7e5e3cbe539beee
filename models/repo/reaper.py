"""What the reaper and dispatch read and write: pending runs to start, stalled runs, lost and abandoned slots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import String, and_, cast, func, literal, select, update
from sqlalchemy.orm import Session as OrmSession

from models.repo._common import OPEN_OUTCOME, as_utc, is_lane_run
from models.tables import (
    CALL_ROLES,
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
    query = select(Run.id, Run.pattern, started.label("started"), is_lane_run().label("lane")).where(
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
    lane = select(Run.id).where(Run.id == WorkerOutcome.run_id, is_lane_run()).exists()
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
    lane = select(Run.id).where(Run.id == WorkerOutcome.run_id, is_lane_run()).exists()
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
