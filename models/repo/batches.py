"""Batches: create, find, their documents in bulk, and reading runs back for exports and reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload

from models.tables import (
    Batch,
    Document,
    Pattern,
    Run,
    RunStatus,
    WorkerOutcome,
)


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
