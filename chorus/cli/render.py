"""Rich tables and lines for runs, sections, batches, the demo and the rate limits."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from chorus.analysis.failures import call_failed, call_reasons
from chorus.cli.base import Table, cli_settings, out
from workflows.errors import NotFoundError

if TYPE_CHECKING:
    from settings import Settings

STATUS_COLOURS = {"succeeded": "green", "partial": "yellow", "failed": "red", "cancelled": "magenta"}


def print_run(run: Any) -> None:
    colour = STATUS_COLOURS.get(run.status, "white")
    out.print(f"run [bold]{run.id}[/bold]  [{colour}]{run.status}[/{colour}]  provider {run.provider}")
    print_task_line(run)
    if run.answer is not None or run.result:
        conf = f"{run.confidence:.0%}" if run.confidence is not None else "-"
        flag = "  [yellow]low agreement[/yellow]" if run.low_agreement else ""
        out.print(f"answer [bold]{run.answer}[/bold]  confidence {conf}{flag}")
    if (run.result or {}).get("escalated") and not run.error:  # a failed escalated vote says it in its error
        out.print(f"[cyan]{escape(run.result['reason'])}[/cyan]", highlight=False)
    if run.error:
        out.print(f"[yellow]{run.error}[/yellow]", highlight=False)
    table = Table("slot", "model", "voter", "status", "answer", "attempts", "latency", "tokens in/out", "error")
    for o in run.outcomes:
        latency = f"{o.latency_s * 1000:.0f} ms" if o.latency_s is not None else "-"
        est = "~" if o.usage_estimated else ""
        table.add_row(str(o.slot), o.model, o.prompt_variant or "-", o.status, o.answer or "-", str(o.attempts),
                      latency, f"{est}{o.input_tokens}/{est}{o.output_tokens}", o.error or "")
    out.print(table)
    if run.wall_s is not None and run.slowest_worker_s is not None:
        out.print(f"wall {run.wall_s * 1000:.0f} ms = slowest voter {run.slowest_worker_s * 1000:.0f} ms "
                  f"+ overhead {(run.wall_s - run.slowest_worker_s) * 1000:.0f} ms")
    print_cost_line(run)
    if any(o.usage_estimated for o in run.outcomes):
        out.print("[dim]~ token counts are estimates (offline provider)[/dim]")


def print_cost_line(run: Any) -> None:
    cost = run.to_json().get("cost")
    if not cost:
        out.print("cost: - (a model of this run has no price in the registry, `chorus models`)", highlight=False)
        return
    note = " (estimated: offline token counts, priced as if on each model)" if cost["estimated"] else ""
    saved = cost.get("calls_saved")
    if saved:
        note += (f"; {saved} of {run.result.get('voters')} voter calls saved, about "
                 f"${cost.get('saved_usd_estimate', 0.0):.6f} (adaptive: decided before their turn)")
    out.print(f"cost {'~' if cost['estimated'] else ''}${cost['total_usd']:.6f}{note}", highlight=False)


def print_task_line(run: Any) -> None:
    task = getattr(run, "task", None)
    if task:
        out.print(f"task [bold]{task['name']}[/bold] (hash {task['hash'][:12]})", highlight=False)


def print_section_run(run: Any) -> None:
    colour = STATUS_COLOURS.get(run.status, "white")
    out.print(f"run [bold]{run.id}[/bold]  [{colour}]{run.status}[/{colour}]  provider {run.provider}")
    print_task_line(run)
    if run.error:
        out.print(f"[yellow]{run.error}[/yellow]", highlight=False)
    table = Table("slot", "role", "title", "status", "latency", "tokens in/out", "output")
    for o in run.outcomes:
        latency = f"{o.latency_s * 1000:.0f} ms" if o.latency_s is not None else "-"
        est = "~" if o.usage_estimated else ""
        # A failed call shows why, not the cut reply it may have left behind (the reason in full is below).
        first = ((o.error if call_failed(o) else None) or o.raw_output or o.error or "").strip().replace("\n", " ")
        table.add_row(str(o.slot), o.role if o.role != "synthesis" else f"{o.prompt_variant} synthesis",
                      o.title or "-", o.status, latency, f"{est}{o.input_tokens}/{est}{o.output_tokens}",
                      first[:70] + ("…" if len(first) > 70 else ""))
    out.print(table)
    for reason in call_reasons(run):
        out.print(f"[red]failed[/red] {escape(reason)}", highlight=False)
    result = run.result or {}
    if result.get("synthesis"):
        out.print("[bold]synthesis[/bold]")
        out.print(result["synthesis"], highlight=False, markup=False)
    if run.wall_s is not None and run.slowest_worker_s is not None:
        out.print(f"wall {run.wall_s * 1000:.0f} ms; slowest worker {run.slowest_worker_s * 1000:.0f} ms; "
                  f"{result.get('sections', '?')} sections, {result.get('synthesis_steps', 0)} synthesis step(s)")
    print_cost_line(run)


def print_orchestrate_run(run: Any) -> None:
    """An orchestrate run: its plan (each subtask's title and instructions, those cut at max_workers), each
    call (the planner, a worker by its subtask, the synthesis steps) and the synthesis."""
    colour = STATUS_COLOURS.get(run.status, "white")
    out.print(f"run [bold]{run.id}[/bold]  [{colour}]{run.status}[/{colour}]  provider {run.provider}")
    print_task_line(run)
    if run.error:
        out.print(f"[yellow]{escape(run.error)}[/yellow]", highlight=False)
    result = run.result or {}
    subtasks = result.get("subtasks") or []
    if subtasks:
        out.print(f"[bold]plan[/bold]: {len(subtasks)} subtask(s)", highlight=False)
        for n, subtask in enumerate(subtasks, 1):
            focus = f" [dim](focus: {escape(subtask['focus'])})[/dim]" if subtask.get("focus") else ""
            out.print(f"  {n}. [bold]{escape(subtask['title'])}[/bold]: {escape(subtask['instructions'])}{focus}",
                      highlight=False)
        for title in result.get("dropped") or []:
            out.print(f"  [dim]not run (beyond max_workers): {escape(title)}[/dim]", highlight=False)
    table = Table("slot", "role", "subtask", "model", "status", "latency", "tokens in/out", "output")
    for o in run.outcomes:
        latency = f"{o.latency_s * 1000:.0f} ms" if o.latency_s is not None else "-"
        est = "~" if o.usage_estimated else ""
        first = ((o.error if call_failed(o) else None) or o.raw_output or o.error or "").strip().replace("\n", " ")
        role = f"{o.prompt_variant} {o.role}" if o.prompt_variant else o.role
        table.add_row(str(o.slot), role, o.title or "-", o.model, o.status, latency,
                      f"{est}{o.input_tokens}/{est}{o.output_tokens}", first[:60] + ("…" if len(first) > 60 else ""))
    out.print(table)
    for reason in call_reasons(run):
        out.print(f"[red]failed[/red] {escape(reason)}", highlight=False)
    if result.get("synthesis"):
        out.print("[bold]synthesis[/bold]")
        out.print(result["synthesis"], highlight=False, markup=False)
    if run.wall_s is not None and run.slowest_worker_s is not None:
        out.print(f"wall {run.wall_s * 1000:.0f} ms; slowest call {run.slowest_worker_s * 1000:.0f} ms; "
                  f"{result.get('workers', 0)} worker(s), {result.get('synthesis_steps', 0)} synthesis step(s)")
    print_cost_line(run)


def print_demo(runs: list[Any], summary: dict[str, Any]) -> None:
    table = Table(title=f"chorus demo: {summary['documents']} reviews x {summary['voters']} voters "
                        f"({summary['provider']} provider, {summary['mode']} mode)")
    for col in ("document", "gold", "vote", "confidence", "status", "voters said", "slowest voter", "wall"):
        table.add_column(col)
    for r in runs:
        said = " ".join((o.answer or ("x" if o.status == "failed" else "?"))[:3] for o in r.outcomes)
        mark = "[green]" if r.answer == r.gold_label else "[red]"
        table.add_row(
            r.external_id, r.gold_label or "-", f"{mark}{r.answer or '-'}[/]",
            f"{r.confidence:.0%}" if r.confidence is not None else "-", r.status, said,
            f"{r.slowest_worker_s * 1000:.0f} ms" if r.slowest_worker_s is not None else "-",
            f"{r.wall_s * 1000:.0f} ms" if r.wall_s is not None else "-",
        )
    out.print(table)
    out.print(f"accuracy {summary['accuracy']:.0%} against the gold labels; finished in {summary['elapsed_s']:.1f} s; "
              f"batch {summary['batch_id']}; `chorus status RUN_ID` shows one run")
    if summary["usage_estimated"]:
        out.print("[dim]The offline provider answered (no ANTHROPIC_API_KEY); its token counts are estimates.[/dim]")


def print_limits(settings: Settings, as_json: bool) -> None:
    from tasks.limiter import limits_view  # heavy: imported when used, for start-up time (docs/decisions.md)

    rows = limits_view(settings)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("queue", "limits (per minute)", "available now")
    for row in rows:
        available = ", ".join(f"{k} {v:g}" for k, v in row["available"].items()) or row.get("error", "-")
        table.add_row(row["queue"], row["limits"], available)
    out.print(table)
    out.print("[dim]CHORUS_RATE_LIMITS sets them; every worker shares these buckets[/dim]")


def print_batch_status(ref: str, as_json: bool) -> bool:
    """`chorus status BATCH` (the status command falls back here when no run matches); False when
    no batch matches either."""
    from chorus.analysis.export import batch_summary  # heavy: imported when used, for start-up time (docs/decisions.md)

    settings = cli_settings()
    try:
        summary = batch_summary(ref, settings=settings)
    except NotFoundError:
        return False
    if as_json:
        out.print_json(json.dumps(summary))
        return True
    c = summary["counts"]
    out.print(f"batch [bold]{summary['name']}[/bold] ({summary['id']}), pattern {summary['pattern']}, "
              f"source {summary['source']}", highlight=False)
    out.print(f"{c['total']} documents: succeeded {c['succeeded']}  partial {c['partial']}  failed {c['failed']}  "
              f"in flight {c['running']}  pending {c['pending']}; cost {summary['cost_usd']:.6f} USD"
              + (" (estimated)" if summary["cost_estimated"] else ""), highlight=False)
    if summary.get("lane") == "batch":
        out.print(f"batch lane (Message Batches API): {summary.get('open_provider_batches', 0)} provider batch(es) "
                  "still open", highlight=False)
    for doc in summary["not_succeeded"]:
        out.print(f"  [red]{doc['id']}[/red] {doc['status']}: {doc['error']}", highlight=False)
    return True
