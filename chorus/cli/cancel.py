"""`chorus cancel RUN|BATCH`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from chorus.cli.base import JsonOpt, cli_settings, errors, out


def cancel(
    ref: Annotated[str, typer.Argument(help="A run id (or a unique prefix of one), or a batch id or name.")],
    reason: Annotated[str, typer.Option(help="Why; stored on every cancelled run.")] = "cancelled by the user",
    as_json: JsonOpt = False,
) -> None:
    """Cancel a run or a batch: nothing not yet sent is sent, calls in flight finish and are recorded.
    Running a cancelled batch again (the same `chorus batch` command) resumes it."""
    from chorus.batch import cancel as cancel_work  # heavy: imported when used, for start-up time (docs/decisions.md)

    settings = cli_settings()
    with errors():
        done = cancel_work(ref, reason=reason, settings=settings)
    if as_json:
        out.print_json(json.dumps(done.to_json()))
        return
    what = f"batch {done.name!r} ({done.id})" if done.kind == "batch" else f"run {done.id}"
    lines = [f"{what}: cancelled {len(done.cancelled)} run(s) ({done.reason})"]
    if done.settled:
        lines.append(f"{len(done.settled)} vote(s) had every voter finished and were tallied instead")
    if done.already_finished:
        lines.append(f"{done.already_finished} already finished" + (" (nothing to cancel)" if done.kind == "run"
                                                                       else " document(s) keep their result"))
    if done.kind == "batch":
        lines.append("run the same `chorus batch` command again to resume it")
    out.print("; ".join(lines), highlight=False)
