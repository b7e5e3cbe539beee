"""`chorus task check FILE`: validate a task file and show what it will send and cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chorus.cli.base import EXIT_OK, JsonOpt, cli_settings, err, errors, out, read_document
from workflows.errors import ConfigError

task_app = typer.Typer(help="Task files: your instructions, labels, examples, panel and output schema.",
                       no_args_is_help=True)


@task_app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="One or more task files (.toml).")],
    sample: Annotated[str | None, typer.Option(
        "--sample", help="A document (text or file) to price and show the prompts with; default ~500 tokens.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate task files; print the resolved panel, the exact prompt of each call and the estimated
    cost per document. A bad file exits 2 naming the field."""
    from chorus.taskfile import describe_task, load_task  # heavy: imported when used (docs/decisions.md)

    settings = cli_settings()
    document = read_document(sample, settings) if sample else None
    described = []
    for file in files:
        with errors():
            task = load_task(file)
            try:
                described.append(describe_task(task, settings=settings, sample=document))
            except ConfigError as exc:
                raise ConfigError(f"{file}: {exc}") from None
    if as_json:
        out.print_json(json.dumps(described[0] if len(files) == 1 else described))
        raise typer.Exit(EXIT_OK)
    for file, d in zip(files, described, strict=True):
        print_description(str(file), d)


def print_description(file: str, d: dict[str, object]) -> None:
    cost = d["estimated_cost_per_document"]
    assert isinstance(cost, dict)
    out.print(f"[green]ok[/green] {file}: {d['pattern']} task [bold]{d['name']}[/bold] "
              f"(hash {str(d['hash'])[:12]})", highlight=False)
    for voter in d.get("panel", []):  # type: ignore[attr-defined]
        effort = f", effort {voter['effort']}" if voter["effort"] else ""
        out.print(f"  voter {voter['slot']}: {voter['name']} on {voter['model']}{effort}: {voter['prompt']}",
                  highlight=False)
    calls = d["calls"]
    assert isinstance(calls, list)
    shown: dict[str, str] = {}
    system_shown: set[str] = set()
    for call in calls:
        key = json.dumps([call["model"], call["system"], call["user_shown"], call["output_schema"], call["effort"]])
        out.print(f"\n[bold]── {call['name']} ({call['model']}) ──[/bold]", highlight=False)
        if key in shown:
            out.print(f"[dim]the same request as {shown[key]}[/dim]", highlight=False)
            continue
        shown[key] = call["name"]
        out.print("[dim]system:[/dim]" + (" [dim]as above[/dim]" if call["system"] in system_shown else ""),
                  highlight=False)
        if call["system"] not in system_shown:
            out.print(call["system"], highlight=False, markup=False)
            system_shown.add(call["system"])
        out.print("[dim]user:[/dim]", highlight=False)
        out.print("".join(call["user_shown"]), highlight=False, markup=False)
        if call["output_schema"]:
            out.print("[dim]output_config.format schema:[/dim]", highlight=False)
            out.print(json.dumps(call["output_schema"]), highlight=False, markup=False)
    err.print(f"\nestimated cost per document: ${cost['total_usd']:.6f} ({d['cost_note']})", highlight=False)
