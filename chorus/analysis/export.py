"""A batch's results: one row per document (its latest run), streamed, as JSONL or CSV; and the
summary `chorus status BATCH` prints."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

from chorus.batch import batch_counts, find_batch, lane_status
from chorus.costing import request_cost
from models import Document, Run, Session, repo
from models.repo import as_utc
from settings import Settings, get_settings
from workflows.cost import Cost

FORMATS = ("jsonl", "csv")
COLUMNS = ("id", "status", "error", "pattern", "run_id", "answer", "confidence", "low_agreement", "gold_label",
           "synthesis", "missing_sections", "input_tokens", "output_tokens", "cache_write_tokens",
           "cache_read_tokens", "cost_usd", "cost_estimated", "finished_at")
PAGE = 500


def rows(batch_id: str) -> Iterator[dict[str, Any]]:
    """Every document of the batch in input order, with its latest run's result and cost."""
    last_position = -1
    last_id = ""
    while True:
        with Session() as s:
            docs = repo.documents_page(s, batch_id, after_position=last_position, after_id=last_id, limit=PAGE)
            if not docs:
                return
            runs = repo.latest_runs(s, [d.id for d in docs])
            usage = _usage(s, [r.id for r in runs.values()])
            for d in docs:
                yield _row(d, runs.get(d.id), usage)
            last_position, last_id = (docs[-1].position if docs[-1].position is not None else -1), docs[-1].id


def _usage(s: Any, run_ids: list[str]) -> dict[str, list[repo.ModelUsage]]:
    found: dict[str, list[repo.ModelUsage]] = {}
    for u in repo.usage_by_request(s, run_ids):
        found.setdefault(u.run_id, []).append(u)
    return found


def _row(d: Document, run: Run | None, usage: dict[str, list[repo.ModelUsage]]) -> dict[str, Any]:
    parts = usage.get(run.id, []) if run else []
    cost: Cost | None = Cost()
    for u in parts:
        try:
            cost = cost + request_cost(u) if cost is not None else None
        except ValueError:  # a model without a price: say so rather than guess
            cost = None
    result = (run.result or {}) if run else {}
    return {
        "id": d.external_id,
        "status": d.status.value,
        "error": d.error,
        "pattern": run.pattern.value if run else None,
        "run_id": run.id if run else None,
        "answer": run.answer if run else None,
        "confidence": run.confidence if run else None,
        "low_agreement": run.low_agreement if run else None,
        "gold_label": d.gold_label,
        "synthesis": result.get("synthesis"),
        "missing_sections": result.get("missing"),
        "input_tokens": sum(u.input_tokens for u in parts),
        "output_tokens": sum(u.output_tokens for u in parts),
        "cache_write_tokens": sum(u.cache_write_tokens for u in parts),
        "cache_read_tokens": sum(u.cache_read_tokens for u in parts),
        "cost_usd": round(cost.total_usd, 8) if cost is not None and parts else None,
        "cost_estimated": any(u.estimated for u in parts),
        "finished_at": (as_utc(run.finished_at).isoformat() if run and run.finished_at else None),  # type: ignore[union-attr]
    }


def write_export(ref: str, fmt: str, stream: IO[str], *, settings: Settings | None = None) -> int:
    batch = find_batch(ref, settings=settings or get_settings())
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows(batch.id):
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
            n += 1
    else:
        for row in rows(batch.id):
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def batch_summary(ref: str, *, settings: Settings | None = None, list_limit: int = 50) -> dict[str, Any]:
    batch = find_batch(ref, settings=settings or get_settings())
    counts = batch_counts(batch.id, settings=settings)
    total_cost, estimated, priced = 0.0, False, True
    not_succeeded: list[dict[str, Any]] = []
    for row in rows(batch.id):
        if row["cost_usd"] is not None:
            total_cost += row["cost_usd"]
        elif row["run_id"] is not None:
            priced = False
        estimated = estimated or row["cost_estimated"]
        if row["status"] != "succeeded" and len(not_succeeded) < list_limit:
            not_succeeded.append({"id": row["id"], "status": row["status"], "error": row["error"]})
    return {
        "id": batch.id, "name": batch.name, "pattern": batch.pattern.value, "source": batch.source,
        "options": batch.config.get("options"), "created_at": as_utc(batch.created_at).isoformat()  # type: ignore[union-attr]
        if batch.created_at else None,
        "counts": counts.to_json(), "cost_usd": round(total_cost, 8), "cost_estimated": estimated,
        "cost_complete": priced, "not_succeeded": not_succeeded, **lane_status(batch.id, settings=settings),
    }
