"""`chorus vote`, `section`, `status` and `demo`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chorus.cli.base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    cli_settings,
    err,
    errors,
    exit_code,
    fail,
    left_in_run,
    out,
    read_document,
    workers_for,
)
from chorus.cli.render import (
    print_batch_status,
    print_demo,
    print_limits,
    print_orchestrate_run,
    print_run,
    print_section_run,
)
from workflows.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from chorus.plans import Plan
    from chorus.runs import RunView
    from settings import Settings

EXAMPLES = resources.files("chorus") / "examples"
TaskOpt = Annotated[str, typer.Option(
    "--task", help='A section task file (.toml), or what to do with each section: "summarize", '
                   '"extract every option", "translate to French", ...')]
MaxCostOpt = Annotated[float | None, typer.Option(
    "--max-cost", min=0.0, help="Budget in US dollars: refuse to send when the estimate is above it "
                                "(default CHORUS_MAX_COST_USD).")]
CacheWarmOpt = Annotated[str, typer.Option(
    "--cache-warm", help="How cache-aware dispatch writes the shared prefix: leader (one voter per model answers "
                         "first; cheapest) or prewarm (a max_tokens: 0 call, then every voter at once; the voters "
                         "wait for a prefill, not an answer, for one more cache read).")]
AdaptiveOpt = Annotated[bool | None, typer.Option(
    "--adaptive/--all-voters", help="Ask voters in waves and stop once the rest cannot change the result "
                                    "(default: the task's [vote] stop).")]
EscalateOpt = Annotated[str | None, typer.Option(
    "--escalate-to", help="A stronger model: a close vote (low agreement, a tie, below quorum; the task's [vote] "
                          "escalate_when) gets one more call to it, whose answer decides (default: the task's "
                          "[vote] escalate_to).")]
VoteTaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="A vote task file (.toml): instructions, labels with meanings, examples, the panel. "
                         "Options given here override its fields.")]


def vote(
    document: Annotated[str, typer.Argument(
        help="The text to classify, or a file: PDF, image (PNG/JPEG/GIF/WebP), Word (.docx), HTML or text.")],
    labels: Annotated[str | None, typer.Option("--labels", "-l", help="Allowed labels, comma-separated.")] = None,
    task: VoteTaskOpt = None,
    voters: Annotated[int | None, typer.Option("--voters", "-n", min=1,
                                               help="Number of voters (default 5, or the task's panel).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model(s); voters cycle through them.")]
    = None,
    quorum: Annotated[int | None, typer.Option(help="Valid answers needed (default: a majority).")] = None,
    tie_policy: Annotated[str | None, typer.Option(
        help="none (a tie decides nothing) or first (label order); default none.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    cache_aware: Annotated[bool, typer.Option(
        "--cache-aware/--no-cache-aware", help="Send one voter per model first so the rest read the prompt cache.")
    ] = True,
    cache_warm: CacheWarmOpt = "leader",
    adaptive: AdaptiveOpt = None,
    escalate_to: EscalateOpt = None,
    max_cost: MaxCostOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Send one document to N voters and print the tally."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.plans import submit
    from chorus.runs import wait_for_run
    from chorus.taskfile import load_vote_task
    from chorus.vote import plan_vote  # (all four: start-up time)

    if labels is None and task is None:
        raise fail("say what to decide: --labels a,b,c or --task FILE (see `chorus task check`)", EXIT_USAGE)
    with errors():
        vote_task = load_vote_task(task) if task else None
    text = read_document(document, settings)
    with errors(), naming_escalate_to(escalate_to):
        plan = plan_vote(text, labels, task=vote_task, voters=voters, models=model, quorum=quorum,
                         tie_policy=tie_policy, cache_aware=cache_aware, cache_warm=cache_warm, adaptive=adaptive,
                         escalate_to=escalate_to,
                         external_id=file_name(document), settings=settings)
    if dry_run:
        print_estimate(plan, settings, as_json)
    settings = within_budget(plan, max_cost, settings)
    sent: dict[str, str] = {}
    with errors(), workers_for(settings, leftover=lambda: left_in_run(sent.get("run"), settings)) as workers:
        run_id = sent["run"] = submit(plan, settings=settings)
        run = wait_for_run(run_id, timeout=timeout, settings=settings, check=workers.check if workers else None)
    if as_json:
        out.print_json(json.dumps(run.to_json()))
    else:
        print_run(run)
    raise typer.Exit(exit_code([run.status]))


def file_name(document: str) -> str | None:
    """The name of the file the argument names, or None when it is the text itself (however long)."""
    try:
        return Path(document).name if Path(document).is_file() else None
    except OSError:  # text longer than a path may be
        return None


@contextlib.contextmanager
def naming_escalate_to(value: str | None) -> Iterator[None]:
    """A refused `vote.escalate_to` that `--escalate-to` set is reported as the option's (exit 2)."""
    try:
        yield
    except ConfigError as exc:
        if value is not None and getattr(exc, "field", None) == "vote.escalate_to":
            raise fail(f"--escalate-to {value}: {getattr(exc, 'problem', exc)}", EXIT_USAGE) from None
        raise


def section(
    file: Annotated[str, typer.Argument(
        help="A file (PDF, Word, HTML, text, or an image) or the text itself.")],
    task: TaskOpt = "summarize",
    how: Annotated[str | None, typer.Option(
        "--split", help="auto, headings, paragraphs, tokens, or pages (a PDF; auto picks pages for a PDF).")] = None,
    pages_per_section: Annotated[int | None, typer.Option(
        min=1, help="A PDF's pages per section at most (default 50, below the model's long-prompt tier; at most "
                    "the model's PDF page limit a request).")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, help="Input tokens per section (default: the task's, else CHORUS_SECTION_TOKENS).")] = None,
    overlap: Annotated[int | None, typer.Option(
        min=0, help="Tokens a token-budget section repeats from the previous one.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model of the section workers.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    max_cost: MaxCostOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Split a document into sections, one worker per section, then synthesize their outputs."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.plans import submit
    from chorus.runs import wait_for_run
    from chorus.section import plan_section
    from chorus.taskfile import load_section_task, looks_like_task_file  # (all four: start-up time)

    with errors():
        section_task = load_section_task(task) if looks_like_task_file(task) else task
    text = read_document(file, settings)
    with errors():
        plan = plan_section(text, task=section_task, how=how, model=model, max_tokens=max_tokens,
                            overlap_tokens=overlap, pages_per_section=pages_per_section,
                            external_id=file_name(file), settings=settings)
    if dry_run:
        print_estimate(plan, settings, as_json)
    err.print(f"{len(plan.sections)} section(s) by {plan.how.value}; sending one worker per section",
              highlight=False)
    settings = within_budget(plan, max_cost, settings)
    sent: dict[str, str] = {}
    with errors(), workers_for(settings, leftover=lambda: left_in_run(sent.get("run"), settings)) as workers:
        run_id = sent["run"] = submit(plan, settings=settings)
        with calls_progress(run_id, settings, hidden=len(plan.sections) < PROGRESS_FROM_SECTIONS
                            or (as_json and not err.is_terminal),
                            check=workers.check if workers else None) as check:
            run = wait_for_run(run_id, timeout=timeout, settings=settings, check=check)
    if as_json:
        out.print_json(json.dumps(run.to_json(raw=True)))
    else:
        print_section_run(run)
    raise typer.Exit(exit_code([run.status]))


PROGRESS_FROM_SECTIONS = 8  # a shorter run ends before a bar would say anything
PROGRESS_EVERY_S = 0.5


@contextlib.contextmanager
def calls_progress(run_id: str, settings: Settings, *, hidden: bool, check: Callable[[], None] | None,
                   label: str = "section") -> Iterator[Callable[[], None]]:
    """A progress bar on stderr of a long sectioning run's calls (sections, then synthesis steps),
    refreshed from the database every half second while `wait_for_run` waits; the `check` to pass it."""
    from models import in_session, repo  # heavy: imported when used, for start-up time (docs/decisions.md)

    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, disable=hidden)
    bar = progress.add_task("calls", total=None)
    last = 0.0

    def tick() -> None:
        nonlocal last
        if check is not None:
            check()
        if hidden or time.monotonic() - last < PROGRESS_EVERY_S:
            return
        last = time.monotonic()
        done, total = in_session(lambda s: repo.slot_progress(s, run_id), write=False)
        progress.update(bar, completed=done, total=total)

    with progress:
        yield tick


DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Only check the input and print the calls it would make and their estimated cost.")]


def print_estimate(plan: Plan, settings: Settings, as_json: bool) -> None:
    """`--dry-run`: the estimate (an upper bound) of the run, and exit 0 with nothing sent."""
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.budget import estimate_plan

    with errors():
        cost = estimate_plan(plan, settings)
    what, calls = plan.pattern.value, plan.calls()
    note = "an upper bound: prompts counted (bounded), a marked prefix at the cache-write price, output at max_tokens"
    if as_json:
        out.print_json(json.dumps({"dry_run": True, "pattern": what, "calls": calls,
                                   "estimated_cost": cost.to_json(), "note": note}))
    else:
        out.print(f"{what}: {calls} {plan.noun}(s); estimated cost at most ${cost.total_usd:.6f} ({note}); "
                  f"nothing was sent", highlight=False)
    raise typer.Exit(EXIT_OK)


def within_budget(plan: Plan, max_cost: float | None, settings: Settings) -> Settings:
    """Refuse (exit 2) before any worker starts when the run's estimate is above the budget; the settings
    to submit with (the budget checked here, so the submit does not estimate it again)."""
    from chorus.budget import check_budget, estimate_plan  # heavy: imported when used (docs/decisions.md)

    budget = max_cost if max_cost is not None else settings.max_cost_usd
    if budget is not None:
        with errors():
            check_budget(estimate_plan(plan, settings), budget, plan.what)
    return settings.model_copy(update={"max_cost_usd": None}) if settings.max_cost_usd is not None else settings


def status(
    run_id: Annotated[str | None, typer.Argument(help="A run id (or a unique prefix of one), or a batch id or name.")]
    = None,
    limits: Annotated[bool, typer.Option("--limits", help="Show each model queue's rate limits instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: its tally and every voter's outcome (or, with --limits, the queues' rate limits)."""
    from chorus.runs import folder_store_note, get_run, not_found, store_exists  # heavy: start-up time (decisions.md)

    settings = cli_settings()
    if limits:
        print_limits(settings, as_json)
        return
    if not run_id:
        raise fail("give a run id (printed by `chorus vote`), or --limits", EXIT_USAGE)
    note = folder_store_note(settings)
    if note:
        err.print(note, highlight=False, soft_wrap=True)
    with errors():
        try:
            run = get_run(run_id, settings=settings)
        except NotFoundError as exc:
            if store_exists(settings) and print_batch_status(run_id, as_json):
                return
            if "ambiguous" in str(exc):
                raise
            raise not_found("run or batch", run_id, "`chorus status` takes a run id, a unique prefix of one, or a "
                            "batch id or name (`chorus runs` and `chorus batches` list them)", settings) from None
    if as_json:
        out.print_json(json.dumps(run.to_json()))
    else:
        print_stored_run(run)


def print_stored_run(run: RunView) -> None:
    """A run as its pattern shows it (`tasks.patterns.PatternEntry.shows`): a tally, or a synthesis."""
    from tasks import patterns  # heavy (Celery): imported when used, for start-up time (docs/decisions.md)

    printers = {"tally": print_run, "synthesis": print_section_run, "plan": print_orchestrate_run}
    printers[patterns.entry(run.pattern).shows](run)


def demo(
    voters: Annotated[int, typer.Option("--voters", "-n", min=1, max=15, help="Voters per document.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Vote on the bundled example reviews and show the results, per-voter answers and timings."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.plans import submit
    from chorus.runs import wait_for_run
    from chorus.vote import plan_vote

    examples = [json.loads(line) for line in EXAMPLES.joinpath("reviews.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    labels = "positive,negative,neutral"
    started = time.perf_counter()
    with errors(), workers_for(settings) as workers:
        batch_id = _demo_batch(settings)
        run_ids = [
            submit(plan_vote(ex["text"], labels, voters=voters, external_id=ex["id"], gold_label=ex["label"],
                                  batch_id=batch_id, settings=settings), settings=settings)
            for ex in examples
        ]
        check = workers.check if workers else None
        with err.status(f"waiting for {len(run_ids)} runs x {voters} voters ...", spinner="dots"):
            runs = [wait_for_run(r, settings=settings, check=check) for r in run_ids]
    elapsed = time.perf_counter() - started
    correct = sum(1 for r in runs if r.answer == r.gold_label)
    summary = {
        "mode": "embedded" if settings.embedded else "broker",
        "provider": settings.provider_name,
        "usage_estimated": any(o.usage_estimated for r in runs for o in r.outcomes),
        "batch_id": batch_id,
        "documents": len(runs),
        "voters": voters,
        "accuracy": correct / len(runs),
        "elapsed_s": round(elapsed, 3),
        "runs": [r.to_json() for r in runs],
    }
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        print_demo(runs, summary)
    raise typer.Exit(EXIT_FAILED if any(r.status == "failed" for r in runs) else EXIT_OK)


def _demo_batch(settings: Settings) -> str:
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.runs import prepare
    from models import Pattern, Session, repo

    prepare(settings)
    with Session.begin() as s:
        batch = repo.create_batch(s, name=f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}",
                                  pattern=Pattern.VOTE, config={"source": "chorus/examples/reviews.jsonl"})
        return batch.id
