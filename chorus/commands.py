"""CLI commands for sectioning, batches, exports and scheduled jobs (registered on `cli.app`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    _errors,
    _exit_code,
    _fail,
    _read_document,
    _settings,
    _workers,
    app,
    err,
    out,
)

SplitOpt = Annotated[str, typer.Option("--split", help="auto, headings, paragraphs or tokens.")]
TaskOpt = Annotated[str, typer.Option("--task", help='"summarize" or "extract <what>".')]


@app.command()
def section(
    file: Annotated[str, typer.Argument(help="A text file (or the text itself).")],
    task: TaskOpt = "summarize",
    how: SplitOpt = "auto",
    max_tokens: Annotated[int | None, typer.Option(help="Input tokens per section (default CHORUS_SECTION_TOKENS).")]
    = None,
    overlap: Annotated[int, typer.Option(help="Tokens a token-budget section repeats from the previous one.")] = 0,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model of the section workers.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Split a document into sections, one worker per section, then synthesize their outputs."""
    from chorus.api import wait_for_run
    from chorus.sections import plan_section, submit_section_plan

    settings = _settings()
    text = _read_document(file)
    with _errors():
        plan = plan_section(text, task=task, how=how, model=model, max_tokens=max_tokens, overlap_tokens=overlap,
                            external_id=Path(file).name if Path(file).is_file() else None, settings=settings)
    err.print(f"{len(plan.sections)} section(s) by {plan.how.value}; sending one worker per section",
              highlight=False)
    with _errors(), _workers(settings) as workers:
        run_id = submit_section_plan(plan, settings=settings)
        run = wait_for_run(run_id, timeout=timeout, settings=settings, check=workers.check if workers else None)
    if as_json:
        out.print_json(json.dumps(run.to_json(raw=True)))
    else:
        print_section_run(run)
    raise typer.Exit(_exit_code([run.status]))


def print_section_run(run: Any) -> None:
    colour = {"succeeded": "green", "partial": "yellow", "failed": "red"}.get(run.status, "white")
    out.print(f"run [bold]{run.id}[/bold]  [{colour}]{run.status}[/{colour}]  provider {run.provider}")
    if run.error:
        out.print(f"[yellow]{run.error}[/yellow]", highlight=False)
    table = Table("slot", "role", "title", "status", "latency", "tokens in/out", "output")
    for o in run.outcomes:
        latency = f"{o.latency_s * 1000:.0f} ms" if o.latency_s is not None else "-"
        est = "~" if o.usage_estimated else ""
        first = (o.raw_output or o.error or "").strip().replace("\n", " ")
        table.add_row(str(o.slot), o.role if o.role != "synthesis" else f"{o.prompt_variant} synthesis",
                      o.title or "-", o.status, latency, f"{est}{o.input_tokens}/{est}{o.output_tokens}",
                      first[:70] + ("…" if len(first) > 70 else ""))
    out.print(table)
    result = run.result or {}
    if result.get("synthesis"):
        out.print("[bold]synthesis[/bold]")
        out.print(result["synthesis"], highlight=False, markup=False)
    if run.wall_s is not None and run.slowest_worker_s is not None:
        out.print(f"wall {run.wall_s * 1000:.0f} ms; slowest worker {run.slowest_worker_s * 1000:.0f} ms; "
                  f"{result.get('sections', '?')} sections, {result.get('synthesis_steps', 0)} synthesis step(s)")


@app.command()
def batch(
    source: Annotated[Path, typer.Argument(help="A folder of .txt/.md files, a .jsonl or a .csv (id, text, label).")],
    pattern: Annotated[str, typer.Option("--pattern", "-p", help="vote or section.")],
    name: Annotated[str | None, typer.Option(help="The batch's name; the same name resumes it.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", "-l", help="vote: allowed labels.")] = None,
    voters: Annotated[int | None, typer.Option("--voters", "-n", help="vote: voters per document.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model(s).")] = None,
    task: Annotated[str | None, typer.Option("--task", help='section: "summarize" or "extract <what>".')] = None,
    how: Annotated[str | None, typer.Option("--split", help="section: auto, headings, paragraphs or tokens.")]
    = None,
    max_in_flight: Annotated[int, typer.Option("--max-in-flight", min=1, help="Runs sent and unfinished at most.")]
    = 64,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the last runs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pattern over every document of SOURCE; re-running the same batch resumes it."""
    from chorus.batch import batch_counts, count_records, prepare_batch, run_batch, wait_for_batch

    settings = _settings()
    options: dict[str, Any] = {}
    if pattern == "vote":
        options = {"labels": labels, "voters": voters, "models": model}
    elif pattern == "section":
        if labels or voters:
            raise _fail("--labels and --voters apply to --pattern vote", EXIT_USAGE)
        options = {"task": task, "how": how, "model": model[0] if model else None}
    else:
        raise _fail(f"unknown pattern {pattern!r}; use --pattern vote or --pattern section", EXIT_USAGE)
    with _errors():
        prepared = prepare_batch(source, pattern=pattern, options=options, name=name, max_in_flight=max_in_flight,
                                 settings=settings)
        total = count_records(source)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err,
                        disable=as_json and not err.is_terminal)
    bar = progress.add_task(prepared.name, total=total, detail="")

    def tick(batch_id: str) -> None:
        c = batch_counts(batch_id)
        progress.update(bar, completed=c.finished, total=max(total, c.total),
                        detail=f"done {c.succeeded}  partial {c.partial}  failed {c.failed}  in flight {c.running}")

    with _errors(), _workers(settings) as workers, progress:
        sub = run_batch(prepared, settings=settings, on_tick=tick)
        counts = wait_for_batch(sub.batch_id, timeout=timeout or settings.run_timeout_s,
                                on_tick=lambda: tick(sub.batch_id), check=workers.check if workers else None)
        tick(sub.batch_id)
    summary = {**sub.to_json(), "counts": counts.to_json(),
               "bad_documents": [{"id": k, "reason": r} for k, r in sub.reasons]}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"batch [bold]{sub.name}[/bold] ({sub.batch_id}): read {sub.read}, sent {sub.sent}, "
                  f"skipped {sub.skipped} already succeeded, {sub.rejected} bad input", highlight=False)
        out.print(f"succeeded {counts.succeeded}  partial {counts.partial}  failed {counts.failed}  "
                  f"of {counts.total}; `chorus export {sub.batch_id[:12]} --format jsonl` writes the results",
                  highlight=False)
        for key, reason in sub.reasons[:20]:
            out.print(f"  [red]{key}[/red]: {reason}", highlight=False)
    raise typer.Exit(EXIT_FAILED if counts.failed else EXIT_OK)


@app.command()
def export(
    batch_id: Annotated[str, typer.Argument(help="A batch id (or unique prefix) or name.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write one line per document of a batch: status, result, confidence or synthesis, cost."""
    from chorus.export import FORMATS, write_export

    settings = _settings()
    if fmt not in FORMATS:
        raise _fail(f"unknown format {fmt!r}; use jsonl or csv", EXIT_USAGE)
    with _errors():
        if output is None:
            n = write_export(batch_id, fmt, sys.stdout, settings=settings)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = write_export(batch_id, fmt, f, settings=settings)
    err.print(f"{n} document(s) exported" + (f" to {output}" if output else ""), highlight=False)


def print_batch_status(ref: str, as_json: bool) -> bool:
    """`chorus status BATCH` (the status command falls back here when no run matches); False when
    no batch matches either."""
    from chorus.export import batch_summary
    from providers.errors import NotFoundError

    settings = _settings()
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
    for doc in summary["not_succeeded"]:
        out.print(f"  [red]{doc['id']}[/red] {doc['status']}: {doc['error']}", highlight=False)
    return True


@app.command()
def beat(
    check: Annotated[bool, typer.Option("--check", help="Only validate the schedule file and print the jobs.")]
    = False,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run Celery beat with the jobs of CHORUS_SCHEDULE_FILE (validated first)."""
    from chorus.schedule import load_jobs

    settings = _settings()
    if settings.schedule_file is None:
        raise _fail("set CHORUS_SCHEDULE_FILE to a JSON or TOML file of jobs (see README: Scheduled jobs)",
                    EXIT_USAGE)
    with _errors():
        jobs = load_jobs(settings.schedule_file)
    for job in jobs:
        err.print(f"job {job.name}: {job.describe()}", highlight=False)
    if check:
        return
    if settings.embedded:
        raise _fail("beat needs a broker that workers share; set CHORUS_BROKER_URL", EXIT_USAGE)
    import os

    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", loglevel,
                               "--schedule", str(data / "beat-schedule")])
