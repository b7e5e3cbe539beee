"""`chorus batch`, `export` and `beat`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chorus.cli.base import (
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    cli_settings,
    err,
    errors,
    exit_code,
    fail,
    left_in_batch,
    out,
    workers_for,
)
from chorus.cli.runs import naming_escalate_to


def batch(
    source: Annotated[Path, typer.Argument(
        help="A folder of documents (PDF, images, Word, HTML, text), a .jsonl or a .csv (id, text or path, label).")],
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="A folder: take the files of its subfolders too.")] = False,
    pattern: Annotated[str | None, typer.Option(
        "--pattern", "-p", help="vote, section or orchestrate (default: the task's, or vote when --labels is given).")]
    = None,
    name: Annotated[str | None, typer.Option(help="The batch's name; the same name resumes it.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", "-l", help="vote: allowed labels.")] = None,
    voters: Annotated[int | None, typer.Option("--voters", "-n", help="vote: voters per document.")] = None,
    adaptive: Annotated[bool | None, typer.Option(
        "--adaptive/--all-voters", help="vote: ask voters in waves and stop once the rest cannot change the result "
                                        "(default: the task's [vote] stop).")] = None,
    escalate_to: Annotated[str | None, typer.Option(
        "--escalate-to", help="vote: a stronger model that decides each close vote with one more call (default: "
                              "the task's [vote] escalate_to).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model(s).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help='A task file (.toml); for section also plain instructions ("summarize", '
                             '"extract every option", ...).')] = None,
    how: Annotated[str | None, typer.Option(
        "--split", help="section: auto, headings, paragraphs, tokens, or pages (PDFs; auto picks pages for them).")]
    = None,
    max_in_flight: Annotated[int, typer.Option("--max-in-flight", min=1, help="Runs sent and unfinished at most.")]
    = 64,
    timeout: Annotated[float | None, typer.Option(
        help="Seconds to wait for the last runs (default CHORUS_RUN_TIMEOUT_S; the batch lane in embedded "
             "mode: CHORUS_LANE_EXPIRE_S).")] = None,
    new_version: Annotated[bool, typer.Option(
        "--new-version", help="The batch name already ran another task, or this task with another provider or "
                              "models: start NAME.v2 (v3, ...) with this one.")]
    = False,
    allow_mixed: Annotated[bool, typer.Option(
        "--allow-mixed", help="Resume a batch sent with another provider or other models anyway: the documents "
                              "that succeeded keep their answers, the rest get this provider's (each run records "
                              "its own).")]
    = False,
    max_cost: Annotated[float | None, typer.Option(
        "--max-cost", min=0.0, help="Budget in US dollars: refuse when the estimate is above it, stop sending once "
                                    "the recorded spend passes it (default CHORUS_MAX_COST_USD).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only check the input and print what would be sent and its estimated cost.")] = False,
    lane: Annotated[str, typer.Option(
        "--lane", help="sync: one request per call, answers in seconds; batch: Anthropic's Message Batches API at "
                       "half price, results within about an hour (at most 24 h; needs Claude; collected by beat, "
                       "or in embedded mode by this command while it waits).")] = "sync",
    as_json: JsonOpt = False,
) -> None:
    """Run a pattern over every document of SOURCE; re-running the same batch resumes it."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.batch import batch_counts, estimate_batch, lane_status, prepare_batch, run_batch, wait_for_batch
    from chorus.inputs import count_records, left_out
    from chorus.planners import PLANNERS, planner
    from chorus.taskfile import load_task, looks_like_task_file  # (all four: start-up time)

    with errors():
        task_obj = load_task(task) if task and looks_like_task_file(task) else None
    pattern = pattern or (task_obj.pattern if task_obj else "vote" if labels else None)
    if pattern is None:
        raise fail("say what to run: --pattern vote --labels a,b, --pattern section, or --task FILE", EXIT_USAGE)
    if pattern not in {p.value for p in PLANNERS}:
        raise fail(f"unknown pattern {pattern!r}; use " + " or ".join(f"--pattern {p.value}" for p in PLANNERS),
                   EXIT_USAGE)
    given = {"labels": labels, "voters": voters, "models": model, "task": task_obj, "task_text": task, "how": how,
             "adaptive": adaptive, "escalate_to": escalate_to}
    with errors(), naming_escalate_to(escalate_to):
        options: dict[str, Any] = planner(pattern).batch_options(given)
        prepared = prepare_batch(source, pattern=pattern, options=options, name=name, max_in_flight=max_in_flight,
                                 settings=settings, new_version=new_version, lane=lane, recursive=recursive,
                                 allow_mixed=allow_mixed)
        total = count_records(source, recursive=recursive)
        ignored = left_out(source, recursive) if source.is_dir() else 0
        estimate, to_send = estimate_batch(prepared, settings)
    how_counted = "bounded token counts, a marked prefix at the cache-write price, output at max_tokens" + (
        ", at the Batches API price" if prepared.lane == "batch" else "")
    preview = {"batch": prepared.name, "documents": total, "to_send": to_send, "estimated_cost": estimate.to_json(),
               "lane": prepared.lane, "note": f"an upper bound: {how_counted}", "left_out": ignored}
    if ignored:
        err.print(f"left out {ignored} file(s) that are no documents: system files (.DS_Store, Thumbs.db) and the "
                  f"files of hidden folders (.git)", highlight=False)
    if dry_run:
        if as_json:
            out.print_json(json.dumps({"dry_run": True, **preview}))
        else:
            out.print(f"batch [bold]{prepared.name}[/bold] ({prepared.lane} lane): {total} document(s), {to_send} to "
                      f"send; estimated cost "
                      f"at most ${estimate.total_usd:.4f} ({preview['note']}); nothing was sent", highlight=False)
        raise typer.Exit(EXIT_OK)
    err.print(f"{to_send} of {total} document(s) to send; estimated cost at most ${estimate.total_usd:.4f} "
              f"(an estimate: {how_counted})", highlight=False)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err,
                        disable=as_json and not err.is_terminal)
    bar = progress.add_task(prepared.name, total=total, detail="")

    def tick(batch_id: str) -> None:
        c = batch_counts(batch_id, settings=settings)
        lane_note = ""
        if prepared.lane == "batch":
            opened = lane_status(batch_id, settings=settings).get("open_provider_batches", 0)
            lane_note = f"  provider batches open {opened}"
        progress.update(bar, completed=c.finished, total=max(total, c.total),
                        detail=f"done {c.succeeded}  partial {c.partial}  failed {c.failed}  in flight {c.running}"
                               + lane_note)

    def leftover() -> str | None:
        hint = left_in_batch(prepared.name, settings)
        if hint and prepared.lane == "batch" and settings.embedded:
            hint += (" The provider batches already sent stay recorded: the same command collects them (nothing "
                     "is sent twice), and `chorus cancel` cancels them.")
        return hint

    # Embedded mode has no beat: the lane moves only while this command waits, so it waits as long as a run may.
    default_timeout = settings.lane_expire_s if prepared.lane == "batch" and settings.embedded \
        else settings.run_timeout_s
    with errors(), workers_for(settings, leftover=leftover) as workers, progress:
        sub = run_batch(prepared, settings=settings, on_tick=tick, max_cost=max_cost)
        counts = wait_for_batch(sub.batch_id, timeout=timeout or default_timeout, settings=settings,
                                on_tick=lambda: tick(sub.batch_id), check=workers.check if workers else None)
        tick(sub.batch_id)
    with errors():
        lane_info = lane_status(sub.batch_id, settings=settings)
    summary = {**sub.to_json(), "counts": counts.to_json(), **lane_info, "left_out": ignored,
               "bad_documents": [{"id": k, "reason": r} for k, r in sub.reasons]}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        open_note = (f", {lane_info['open_provider_batches']} provider batch(es) open"
                     if lane_info["lane"] == "batch" else "")
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(sub.kinds.items()))
        out.print(f"batch [bold]{sub.name}[/bold] ({sub.batch_id}), {lane_info['lane']} lane{open_note}: read "
                  f"{sub.read}" + (f" ({kinds})" if kinds else "") + f", sent {sub.sent}, skipped {sub.skipped} "
                  f"already succeeded, {sub.rejected} bad input", highlight=False)
        out.print(f"succeeded {counts.succeeded}  partial {counts.partial}  failed {counts.failed}  "
                  f"cancelled {counts.cancelled}  of {counts.total}; `chorus export {sub.batch_id[:12]} --format "
                  f"jsonl` writes the results", highlight=False)
        if sub.stopped:
            out.print(f"[yellow]sending stopped: {sub.stopped}; {sub.not_sent} document(s) not sent[/yellow] "
                      f"(run the same command again to resume)", highlight=False)
        for key, reason in sub.reasons[:20]:
            out.print(f"  [red]{key}[/red]: {reason}", highlight=False)
    raise typer.Exit(exit_code(["failed"] * counts.failed + ["cancelled"] * counts.cancelled
                               + ["partial"] * counts.partial))


def export(
    batch_id: Annotated[str, typer.Argument(help="A batch id (or unique prefix) or name.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="With -o: print a JSON summary (documents, file, format) on stdout.")] = False,
) -> None:
    """Write one line per document of a batch: status, result, confidence or synthesis, cost."""
    from chorus.analysis.export import FORMATS, write_export  # heavy: imported when used (docs/decisions.md)

    settings = cli_settings()
    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r}; use jsonl or csv", EXIT_USAGE)
    if as_json and output is None:
        raise fail("--json prints a summary on stdout, where the export goes without -o: give -o FILE "
                   "(or use --format jsonl, which is JSON already)", EXIT_USAGE)
    with errors():
        if output is None:
            n = write_export(batch_id, fmt, sys.stdout, settings=settings)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = write_export(batch_id, fmt, f, settings=settings)
    if as_json:
        out.print_json(json.dumps({"documents": n, "output": str(output), "format": fmt}))
        return
    err.print(f"{n} document(s) exported" + (f" to {output}" if output else ""), highlight=False)


def beat(
    check: Annotated[bool, typer.Option("--check", help="Only validate the schedule file and print the jobs.")]
    = False,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    as_json: Annotated[bool, typer.Option("--json", help="With --check: print the checked jobs as JSON.")] = False,
) -> None:
    """Run Celery beat with the jobs of CHORUS_SCHEDULE_FILE (validated first)."""
    from chorus.schedule import load_jobs  # heavy: imported when used (docs/decisions.md)

    settings = cli_settings()
    if settings.schedule_file is None:
        raise fail("set CHORUS_SCHEDULE_FILE to a JSON or TOML file of jobs (see README: Scheduled jobs)",
                    EXIT_USAGE)
    with errors():
        jobs = load_jobs(settings.schedule_file)
    if check and as_json:
        out.print_json(json.dumps([{**job.model_dump(mode="json"), "describe": job.describe()} for job in jobs]))
        return
    for job in jobs:
        err.print(f"job {job.name}: {job.describe()}", highlight=False)
    if check:
        return
    if settings.embedded:
        raise fail("beat needs a broker that workers share; set CHORUS_BROKER_URL", EXIT_USAGE)
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", loglevel,
                               "--schedule", str(data / "beat-schedule")])
