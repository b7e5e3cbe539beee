"""`chorus orchestrate`: a planner lists subtasks, one worker does each, a synthesis combines them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chorus.cli.base import (
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
from chorus.cli.render import print_orchestrate_run
from chorus.cli.runs import DryRunOpt, MaxCostOpt, calls_progress, print_estimate, within_budget

PROGRESS_FROM_WORKERS = 8  # a shorter run ends before a bar would say anything


def orchestrate(
    file: Annotated[str, typer.Argument(
        help="A file (PDF, Word, HTML, text, or an image) or the text itself.")],
    task: Annotated[str | None, typer.Option(
        "--task", "-t", help="An orchestrate task file (.toml, pattern = \"orchestrate\"): the [plan], [work] and "
                             "[reduce] steps.")] = None,
    max_workers: Annotated[int | None, typer.Option(
        min=1, help="The most subtasks the plan may run (default: the task's [plan] max_workers).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model of every step (planner, "
                                                                    "workers and synthesis).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    max_cost: MaxCostOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan a job on a document (one planner call lists subtasks), one worker per subtask, then a synthesis."""
    settings = cli_settings()  # first: in embedded mode it launches the worker (base.WORK_COMMANDS)
    # heavy: imported when the command runs, for start-up time (docs/decisions.md)
    from chorus.orchestrate import plan_orchestrate
    from chorus.plans import submit
    from chorus.runs import wait_for_run
    from chorus.taskfile import load_task  # (all four: start-up time)

    if task is None:
        raise fail("say what the job is: --task FILE, an orchestrate task file (see `chorus task check FILE`)",
                   EXIT_USAGE)
    with errors():
        loaded = load_task(task)
    if loaded.pattern != "orchestrate":
        raise fail(f"{task}: pattern is {loaded.pattern!r}; `chorus orchestrate` needs an orchestrate task (pattern = "
                   f"\"orchestrate\"); run this one with `chorus {loaded.pattern} --task {task}`", EXIT_USAGE)
    text = read_document(file, settings)
    with errors():
        plan = plan_orchestrate(text, task=loaded, max_workers=max_workers, model=model,  # type: ignore[arg-type]
                                external_id=Path(file).name if Path(file).is_file() else None, settings=settings)
    if dry_run:
        print_estimate(plan, settings, as_json)
    err.print(f"planning with {plan.task.plan.model}; at most {plan.max_workers} worker(s) on "
              f"{plan.task.work.model}, then a synthesis on {plan.task.reduce.model}", highlight=False)
    settings = within_budget(plan, max_cost, settings)
    sent: dict[str, str] = {}
    with errors(), workers_for(settings, leftover=lambda: left_in_run(sent.get("run"), settings)) as workers:
        run_id = sent["run"] = submit(plan, settings=settings)
        with calls_progress(run_id, settings, hidden=plan.max_workers < PROGRESS_FROM_WORKERS
                            or (as_json and not err.is_terminal),
                            check=workers.check if workers else None, label="calls") as check:
            run = wait_for_run(run_id, timeout=timeout, settings=settings, check=check)
    if as_json:
        out.print_json(json.dumps(run.to_json(raw=True)))
    else:
        print_orchestrate_run(run)
    raise typer.Exit(exit_code([run.status]))
