"""The batch lane: lane slots claimed by a collector, provider batches recorded, adopted, collected."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session as OrmSession

from models.repo._common import OPEN_OUTCOME, as_utc, is_lane_run
from models.repo.claims import Claim
from models.tables import (
    CALL_ROLES,
    Document,
    OutcomeStatus,
    Pattern,
    ProviderBatch,
    Run,
    RunStatus,
    WorkerOutcome,
    utcnow,
)

# A lane slot is claimed by a collector with a marker in `task_id` ("lane:<id>") and an attempt counted,
# while it stays `pending`; the marker's `lease_until` says when an unrecorded claim counts as abandoned
# (the collector died between creating the provider batch and recording it). Recording the batch sets
# `provider_batch` and makes the slot `running`.
LANE_MARK = "lane:"
LANE_ROLES = CALL_ROLES


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
        .where(Run.status == RunStatus.RUNNING, is_lane_run(),
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
    return set(s.scalars(select(Run.id).where(Run.id.in_(list(run_ids)), is_lane_run())))


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
               .where(Run.status == RunStatus.RUNNING, is_lane_run(), WorkerOutcome.status == OutcomeStatus.PENDING,
                      WorkerOutcome.queued_at.is_not(None), WorkerOutcome.provider_batch.is_(None),
                      WorkerOutcome.role.in_(LANE_ROLES)).limit(1))
    open_batch = select(ProviderBatch.id).where(ProviderBatch.collected_at.is_(None)).limit(1)
    return LaneWork(collect=s.scalar(waiting) is not None, poll=s.scalar(open_batch) is not None)
