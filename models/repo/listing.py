"""Listing runs and batches without their outcomes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from models.repo._common import as_utc
from models.tables import (
    Batch,
    Document,
    Run,
    RunStatus,
)


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
