"""The `chorus` command line (console script `chorus = "chorus.cli:app"`).

The only package that imports Typer or Rich. Each module holds one group of commands; they are
registered here. Exit codes are those of `chorus.cli.base`.
"""

from __future__ import annotations

import typer

# Each module imports at its top only Typer, Rich and light modules: the rest is imported by the command
# that needs it, so `chorus --help` does not import SQLAlchemy, Celery or the SDK (docs/decisions.md).
from chorus.cli import admin, analysis, batches, cancel, listing, models, orchestrate, runs, tasks
from chorus.cli.base import begin_command

app = typer.Typer(help="Run LLM calls in parallel (voting, sectioning, orchestrator-worker) on a Celery worker pool.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    begin_command(ctx)


db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tasks.task_app, name="task")

for command in (runs.vote, runs.status, runs.demo, admin.stub, runs.section, orchestrate.orchestrate, batches.batch,
                batches.export, batches.beat, analysis.compare, analysis.advise, analysis.report, models.models,
                listing.runs, listing.batches, cancel.cancel):
    app.command()(command)
db_app.command("upgrade")(admin.db_upgrade)

__all__ = ["app"]
