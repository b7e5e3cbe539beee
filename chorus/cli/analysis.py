"""`chorus compare`, `advise` and `report`: cost and accuracy analysis."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chorus.cli.base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    Table,
    cli_settings,
    err,
    errors,
    fail,
    out,
    workers_for,
)
from workflows.advisor import percent

if TYPE_CHECKING:
    from workflows.taskfile import VoteTask

DEFAULT_PANEL_MODEL = "claude-haiku-5-5"

LabelsOpt = Annotated[str | None, typer.Option("--labels", "-l", help="Allowed labels, comma-separated.")]
TaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="A vote task file: its labels, prompts and panel are measured (its panel unless "
                         "--voters or --panel-model is given).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N documents.")]
VotersOpt = Annotated[int | None, typer.Option("--voters", "-n", min=2, max=15,
                                               help="Voters in the panel (default 3, or the task's panel).")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds to wait for each run.")]
EscalateOpt = Annotated[str | None, typer.Option(
    "--escalate-to", help="A stronger model: also set side by side the panel alone, this model alone, and the "
                          "panel handing its close votes to it (default: the task's [vote] escalate_to).")]
InFlightOpt = Annotated[int, typer.Option("--in-flight", min=1, max=256,
                                          help="Runs sent and unfinished at once (more: faster, but queueing "
                                               "then shows in each run's wall time).")]



def _task(labels: str | None, task: str | None) -> VoteTask | None:
    if task is None and labels is None:
        raise fail("say what to decide: --labels a,b,c or --task FILE", EXIT_USAGE)
    if task is None:
        return None
    # heavy: imported when used, for start-up time (docs/decisions.md)
    from chorus.taskfile import load_vote_task
    from workflows.taskfile import with_vote_overrides

    with errors():
        loaded = load_vote_task(task)
        return with_vote_overrides(loaded, labels=labels) if labels else loaded


def _load(path: Path, labels: str | None, limit: int | None, task: VoteTask | None = None) -> Any:
    # heavy: imported when used, for start-up time (docs/decisions.md)
    from chorus.analysis.labelled import read_labelled
    from workflows.voting import normalize_labels

    with errors():
        try:
            label_set = task.label_names if task else normalize_labels(labels or "")
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        found = read_labelled(path, label_set, limit=limit)
    for problem in found.skipped[:10]:
        err.print(f"[yellow]skipped[/yellow] {path}: {problem}", highlight=False)
    if len(found.skipped) > 10:
        err.print(f"[yellow]skipped[/yellow] {len(found.skipped) - 10} more rows", highlight=False)
    return found


@contextlib.contextmanager
def runs_progress(what: str, total: int, *, hidden: bool) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr over the runs a measurement waits for; `on_run` advances it."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, disable=hidden)
    bar = progress.add_task(what, total=total)
    with progress:
        yield lambda run: progress.advance(bar)


_pct = percent  # one rounding for every share advise and report print, in tables and in sentences


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _figure(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:g}"


def print_voter_quality(quality: dict[str, Any] | None) -> None:
    """Each voter's accuracy (or, without gold, its disagreement with the winner) and the advice."""
    if quality is None:
        return
    gold = quality["gold_documents"] > 0
    if gold:
        table = Table("voter", "model", "answered", "correct", "abstained", "failed", "accuracy", "rest of panel",
                      title="per voter, against gold")
        for v in quality["voters"]:
            table.add_row(v["name"], v["model"], str(v["gold_answered"]), str(v["correct"]), str(v["abstained"]),
                          str(v["failed"]), _pct(v["accuracy"]), _pct(v["rest_accuracy"]))
    else:
        table = Table("voter", "model", "answered", "abstained", "failed", "disagreed with the winner",
                      title="per voter (no gold labels)")
        for v in quality["voters"]:
            table.add_row(v["name"], v["model"], str(v["answered"]), str(v["abstained"]), str(v["failed"]),
                          f"{v['disagreed_with_winner']} of {v['compared_with_winner']} "
                          f"({_pct(v['disagreement'])})")
    out.print(table)
    for p in quality["pairs"]:
        if p["double_faults"]:
            a, b = p["voters"]
            out.print(f"wrong together: {a['name']} ({a['model']}) & {b['name']} ({b['model']}) on "
                      f"{p['double_faults']} of {p['both_answered']} documents (agreeing on {p['agree_when_wrong']}; "
                      f"independent errors would give {p['expected_double_faults']})", highlight=False)
    for a in quality["advice"]:
        out.print(f"[bold]{a['advice']}[/bold]", highlight=False)
    if gold and not quality["advice"] and quality.get("judged"):
        out.print("per voter: no voter is clearly less accurate than the rest of the panel", highlight=False)
    for note in quality["notes"]:
        out.print(f"[dim]{note}[/dim]", highlight=False)


def _usd(c: dict[str, Any]) -> str:
    return f"{'~' if c['estimated'] else ''}${c['total_usd']:.6f}"


def compare(
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="JSONL or CSV with id, text[, label].")],
    labels: LabelsOpt = None,
    task: TaskOpt = None,
    single_model: Annotated[str | None, typer.Option(
        help="Model of the single call (default claude-sonnet-5-5, or the escalation's model).")] = None,
    panel_model: Annotated[str | None, typer.Option(
        help="Model of the voting panel (default claude-haiku-5-5, or the task's panel).")] = None,
    voters: VotersOpt = None,
    limit: LimitOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only estimate the cost; send nothing.")] = False,
    timeout: TimeoutOpt = None,
    in_flight: InFlightOpt = 2,
    escalate_to: EscalateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One call on one model vs a vote on a cheaper panel, with and without cache-aware dispatch (and with
    escalation, the panel alone, the strong model alone and panel+escalation side by side)."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.analysis.advise import vote_pattern
    from chorus.analysis.compare import default_specs, escalates_to, run_compare, without_escalation
    from chorus.analysis.estimate import estimate_pattern

    vote_task = _task(labels, task)
    strong = escalates_to(vote_task, escalate_to)
    single_model = _strong_model(single_model, strong)
    found = _load(input_file, labels, limit, vote_task)
    panel = vote_pattern("compare-vote", vote_task, panel_model or DEFAULT_PANEL_MODEL, voters,
                         default_model=settings.default_model, panel_model_given=panel_model is not None)
    specs = default_specs(single_model, panel.model, panel.voters, task_panel=panel if panel.task_panel else None)
    if dry_run:
        with errors():
            estimates = [estimate_pattern(s, found.docs, labels, settings, task=without_escalation(vote_task))
                         for s in specs]
        if as_json:
            out.print_json(json.dumps({"dry_run": True, "patterns": estimates}))
        else:
            table = Table("pattern", "documents", "estimated cost", "tokens counted with")
            for e in estimates:
                table.add_row(e["pattern"], str(e["documents"]), _usd(e["estimated_cost"]), e["counted_with"])
            out.print(table)
            out.print("[dim]dry run: nothing was sent; output tokens are counted at max_tokens (an upper bound)[/dim]")
        raise typer.Exit(EXIT_OK)
    with errors(), workers_for(settings) as workers, \
            runs_progress("compare", len(found.docs) * len(specs), hidden=as_json and not err.is_terminal) as on_run:
        result = run_compare(found.docs, labels, specs, task=vote_task, source=str(input_file), settings=settings,
                             on_run=on_run,
                             check=workers.check if workers else None, timeout=timeout, in_flight=in_flight,
                             escalate_to=strong)
    result.pop("_results")
    if as_json:
        out.print_json(json.dumps(result))
    else:
        table = Table("pattern", "cost", "vs minimum", "mean wall", "slowest worker", "overhead", "accuracy", "batch",
                      title=f"chorus compare: {result['documents']} documents ({result['provider']} provider)")
        for p in result["patterns"]:
            ratio = "-" if p["cost_over_minimum"] is None else f"{p['cost_over_minimum']:.3f}"
            acc = f"{_pct(p['accuracy'])} of {p['labelled']}" if p["accuracy"] is not None else "-"
            table.add_row(p["pattern"], _usd(p["cost"]), ratio, _ms(p["mean_wall_s"]),
                          _ms(p["mean_slowest_worker_s"]), _ms(p["mean_overhead_s"]),
                          acc, p["batch_id"][:12])
        out.print(table)
        counted = {p["minimum_counted_with"] for p in result["patterns"]}
        out.print(f"[dim]vs minimum: cost / the cheapest schedule under the cache rules (the shared prefix counted "
                  f"with {', '.join(sorted(counted))}; one cache write per model, reads for the other calls)[/dim]")
        for name, value in result["ratios"].items():
            out.print(f"{name}: {value if value is not None else '-'}")
        for note in result["notes"]:
            out.print(f"[dim]{note}[/dim]")
        print_ways(result)
    failed = all(s == "failed" for p in result["patterns"] for s in p["statuses"])
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _strong_model(single_model: str | None, strong: str | None) -> str:
    """The single call's model: the escalation's model when there is one (the strong model alone is one of
    the three ways), refusing a different --single-model beside it."""
    if strong is not None and single_model is not None and single_model != strong:
        raise fail(f"--single-model {single_model} and --escalate-to {strong}: with escalation the single call is "
                   f"the strong model's; give one of them", EXIT_USAGE)
    return strong or single_model or "claude-sonnet-5-5"


def print_ways(result: dict[str, Any]) -> None:
    """The three ways side by side (escalation) and which to use; nothing without escalation."""
    if not result.get("ways"):
        return
    table = Table("way", "pattern", "accuracy (95 % CI)", "cost", "calls", "mean wall", "escalated",
                  title="panel alone, strong model alone, panel+escalation")
    for w in result["ways"]:
        lo, hi = w["ci95"]
        table.add_row(w["way"], w["name"], f"{w['accuracy_shown']} ({_pct(lo)}-{_pct(hi)})",
                      f"{'~' if w['cost_estimated'] else ''}{w['cost_shown']}", str(w["calls"]), w["mean_wall_shown"],
                      str(w["escalated"]) if "escalated" in w else "-")
    out.print(table)
    advice = result["way_recommendation"]
    out.print(f"[bold]use {advice['recommendation']}[/bold]", highlight=False)
    for line in advice["others"] + advice["notes"]:
        out.print(f"[dim]{line}[/dim]", highlight=False)


def advise(
    input_file: Annotated[Path, typer.Argument(metavar="LABELLED_INPUT", help="JSONL or CSV with id, text, label.")],
    labels: LabelsOpt = None,
    task: TaskOpt = None,
    target: Annotated[float, typer.Option(min=0.01, max=1.0, help="The accuracy you need, e.g. 0.9.")] = 0.9,
    model: Annotated[str | None, typer.Option(help="Model of the single call and the panel (default model).")]
    = None,
    panel_model: Annotated[str | None, typer.Option(help="A different (e.g. cheaper) model for the panel.")] = None,
    voters: VotersOpt = None,
    limit: LimitOpt = None,
    timeout: TimeoutOpt = None,
    in_flight: InFlightOpt = 2,
    escalate_to: EscalateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Should I parallelize at all? Measures a single call and a vote on a labelled set (and with escalation,
    the panel alone, the strong model alone and panel+escalation side by side)."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when used (docs/decisions.md)
    from chorus.analysis.advise import run_advise
    from chorus.analysis.compare import escalates_to

    vote_task = _task(labels, task)
    strong = escalates_to(vote_task, escalate_to)
    found = _load(input_file, labels, limit, vote_task)
    if not found.labelled:
        raise fail(f"{input_file}: every document needs a label for `chorus advise`", EXIT_USAGE)
    single_model = model or settings.default_model
    patterns = 2 if strong in (None, single_model) else 3
    with errors(), workers_for(settings) as workers, \
            runs_progress("advise", len(found.docs) * patterns, hidden=as_json and not err.is_terminal) as on_run:
        result = run_advise(found.docs, labels, target=target, single_model=single_model,
                            panel_model=panel_model, voters=voters, task=vote_task, source=str(input_file),
                            on_run=on_run,
                            settings=settings, check=workers.check if workers else None, timeout=timeout,
                            in_flight=in_flight, escalate_to=strong)
    if as_json:
        out.print_json(json.dumps(result))
    else:
        print_advice(result)
    raise typer.Exit(EXIT_OK)


def print_advice(result: dict[str, Any]) -> None:
    """`chorus advise` in words: every share printed with the advisor's own `percent`, so the table and
    the recommendation show the same figure; a figure that could not be measured (no voter answered)
    prints as "-" rather than failing."""
    table = Table("pattern", "accuracy (95 % CI)", "answered", "cost", "mean wall", "overhead", "batch",
                  title=f"chorus advise: {result['documents']} labelled documents, target {_pct(result['target'])} "
                        f"({result['provider']} provider)")
    for p in result["patterns"]:
        answered = "-" if p.get("answered") is None else f"{p['answered']} of {result['documents']}"
        table.add_row(p["pattern"], p["accuracy_shown"], answered,
                      f"{'~' if p['cost_estimated'] else ''}${p['cost_usd']:.6f}", _ms(p["mean_wall_s"]),
                      _ms(p["mean_overhead_s"]), p["batch_id"][:12])
    out.print(table)
    agreement = result["agreement"]
    no_answer = len(agreement.get("no_answer", []))
    out.print(f"categories discrete: {'yes' if result['discrete'] else 'no'} · voters agree unanimously on "
              f"{_pct(agreement['unanimous_rate'])} · Fleiss' kappa {_figure(agreement['fleiss_kappa'])} · low "
              f"agreement on {_pct(result['low_agreement_share'])} · no voter answered on {no_answer} of "
              f"{result['documents']} · effective independent voters {_figure(agreement['effective_voters'])}",
              highlight=False)
    if result["suggest_sectioning"]:
        out.print("sectioning: documents are long and split into sections; `chorus section` can cut latency")
    print_voter_quality(result["voter_quality"])
    out.print(f"[bold]recommendation: {result['recommendation']}[/bold]", highlight=False)
    for note in result["notes"]:
        out.print(f"[dim]{note}[/dim]", highlight=False)
    print_ways(result)


def report(
    ref: Annotated[str, typer.Argument(metavar="RUN_ID|BATCH_ID", help="A run or batch id (or unique prefix).")],
    html_file: Annotated[Path, typer.Option("--html", help="Where to write the HTML page.")],
    as_json: JsonOpt = False,
) -> None:
    """Write one static, offline HTML page: timeline, agreement, per-voter quality, cost, low-agreement items."""
    from chorus.analysis.report import cost_summary, load_subject, quality_summary, render  # heavy: start-up time

    settings = cli_settings()
    with errors():
        subject = load_subject(ref, settings)
        costs = cost_summary(subject.runs, settings)
        quality = quality_summary(subject.runs)
        page = render(subject, costs)
    try:
        html_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {html_file}: {exc.strerror}", EXIT_USAGE) from None
    summary = {"kind": subject.kind, "id": subject.id, "runs": len(subject.runs), "html": str(html_file),
               "bytes": len(page.encode()), **costs, **quality}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"wrote {html_file} ({summary['bytes']} bytes): {subject.kind} {subject.id}, "
                  f"{len(subject.runs)} run(s)")
        agreement = summary["agreement"]
        if agreement is not None:
            out.print(f"low agreement: {len(agreement['low_agreement'])} run(s); no voter answered: "
                      f"{len(agreement['no_answer'])} run(s)", highlight=False)
        print_voter_quality(summary["voter_quality"])
        print_failures(summary["failures"], len(subject.runs))


def print_failures(failures: list[dict[str, Any]], runs: int) -> None:
    """Every run with no full result and why, as `--json` has it: never a bare "-"."""
    if not failures:
        return
    out.print(f"[bold]{len(failures)} of {runs} run(s) without a full result, and why:[/bold]", highlight=False)
    for f in failures:
        out.print(f"  {f['id']} ({f['run_id'][:12]}) {f['status']}: {f['reason']}", highlight=False, markup=False)
