"""`chorus runs` and `chorus batches`: what is stored, newest first."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chorus.cli.base import JsonOpt, Table, cli_settings, err, errors, out

if TYPE_CHECKING:
    from settings import Settings

LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="At most this many rows.")]


def _where(settings: Settings) -> str:
    """The line under a listing: where it was read from (a path is never folded)."""
    from chorus.runs import searched  # heavy: imported when used, for start-up time (docs/decisions.md)

    return f"in {searched(settings)}"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def runs(
    batch: Annotated[str | None, typer.Option("--batch", "-b", help="Only the runs of this batch (id or name).")]
    = None,
    status: Annotated[str | None, typer.Option(
        help="Only runs in this status: pending, running, succeeded, partial, failed, ...")] = None,
    since: Annotated[str | None, typer.Option(help="Only runs created since: 30m, 2h, 7d, or an ISO time.")] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
) -> None:
    """List stored runs, newest first (`chorus status RUN_ID` shows one whole)."""
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.listing import list_runs
    from chorus.runs import folder_store_note

    settings = cli_settings()
    note = folder_store_note(settings)
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    with errors():
        rows = list_runs(batch=batch, status=status, since=since, limit=limit, settings=settings)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("run", "created", "pattern", "status", "document", "task", "answer", "confidence",
                  title=f"{len(rows)} run(s), newest first", expand=False)
    for r in rows:
        conf = f"{r['confidence']:.0%}" if r["confidence"] is not None else "-"
        table.add_row(r["id"][:12], _when(r["created_at"]), r["pattern"], r["status"], r["external_id"],
                      r["task_name"] or "-", r["answer"] or "-", conf)
    out.print(table)
    out.print(_where(settings), highlight=False, soft_wrap=True)


def batches(limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """List batches, newest first, with their documents per status (`chorus status BATCH` shows one)."""
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.listing import list_batches
    from chorus.runs import folder_store_note

    settings = cli_settings()
    note = folder_store_note(settings)
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    with errors():
        rows = list_batches(limit=limit, settings=settings)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("batch", "name", "created", "pattern", "task", "documents", "by status",
                  title=f"{len(rows)} batch(es), newest first")
    for b in rows:
        counts = "  ".join(f"{k} {v}" for k, v in sorted(b["counts"].items()))
        table.add_row(b["id"][:12], b["name"], _when(b["created_at"]), b["pattern"], b["task_name"] or "-",
                      str(b["documents"]), counts or "-")
    out.print(table)
    out.print(_where(settings), highlight=False, soft_wrap=True)
