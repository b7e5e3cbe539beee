"""The `chorus` command line. It wires settings, the API and (in embedded mode) its own workers.

Exit codes: 0 success; 1 a run failed or chorus hit an error; 2 bad input or configuration;
3 a run ended partial (below quorum or an undecided tie); 4 timed out waiting.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from providers.errors import ChorusError, ConfigError, NotFoundError
from settings import Settings, get_settings

app = typer.Typer(help="Run LLM calls in parallel (voting, sectioning) on a Celery worker pool.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXAMPLES = Path(__file__).resolve().parent / "examples"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn chorus errors into a clear message and an exit code, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except NotFoundError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except TimeoutError as exc:
        raise _fail(str(exc), EXIT_TIMEOUT) from None
    except ChorusError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@contextlib.contextmanager
def _workers(settings: Settings) -> Iterator[Any]:
    """In embedded mode, run our own worker for the duration of the command."""
    if not settings.embedded:
        yield None
        return
    from chorus.embedded import embedded_worker, mode_line

    err.print(mode_line(settings), highlight=False)
    workers = embedded_worker(settings).start()
    try:
        yield workers
    finally:
        workers.stop()


def _exit_code(statuses: list[str]) -> int:
    if "failed" in statuses:
        return EXIT_FAILED
    if "partial" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


@app.command()
def vote(
    document: Annotated[str, typer.Argument(help="The text to classify, or a path to a text file.")],
    labels: Annotated[str, typer.Option("--labels", "-l", help="Allowed labels, comma-separated.")],
    voters: Annotated[int, typer.Option("--voters", "-n", min=1, max=64, help="Number of voters.")] = 5,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model(s); voters cycle through them.")]
    = None,
    quorum: Annotated[int | None, typer.Option(help="Valid answers needed (default: a majority).")] = None,
    tie_policy: Annotated[str, typer.Option(help="none (a tie decides nothing) or first (label order).")] = "none",
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the result.")] = None,
    cache_aware: Annotated[bool, typer.Option(
        "--cache-aware/--no-cache-aware", help="Send one voter per model first so the rest read the prompt cache.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Send one document to N voters and print the tally."""
    from chorus.api import plan_vote, submit_plan, wait_for_run

    settings = _settings()
    text = _read_document(document)
    with _errors():
        plan = plan_vote(text, labels, voters=voters, models=model, quorum=quorum, tie_policy=tie_policy,
                         cache_aware=cache_aware,
                         external_id=Path(document).name if Path(document).is_file() else None, settings=settings)
    with _errors(), _workers(settings) as workers:
        run_id = submit_plan(plan, settings=settings)
        run = wait_for_run(run_id, timeout=timeout, settings=settings, check=workers.check if workers else None)
    if as_json:
        out.print_json(json.dumps(run.to_json()))
    else:
        _print_run(run)
    raise typer.Exit(_exit_code([run.status]))


def _read_document(arg: str) -> str:
    path = Path(arg)
    looks_like_path = len(arg) < 4096 and "\n" not in arg and (path.suffix or "/" in arg)
    if looks_like_path and not path.exists() and len(arg.split()) == 1:
        raise _fail(f"no such file: {arg} (pass the text itself in quotes, or an existing file)", EXIT_USAGE)
    if looks_like_path and path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _fail(f"{arg} is not UTF-8 text", EXIT_USAGE) from None
    return arg


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="A run id (or a unique prefix of one), or a batch id or name.")]
    = None,
    limits: Annotated[bool, typer.Option("--limits", help="Show each model queue's rate limits instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: its tally and every voter's outcome (or, with --limits, the queues' rate limits)."""
    from chorus.api import get_run

    settings = _settings()
    if limits:
        _print_limits(settings, as_json)
        return
    if not run_id:
        raise _fail("give a run id (printed by `chorus vote`), or --limits", EXIT_USAGE)
    with _errors():
        try:
            run = get_run(run_id, settings=settings)
        except NotFoundError:
            from chorus.commands import print_batch_status  # `chorus status BATCH` summarizes a batch

            if print_batch_status(run_id, as_json):
                return
            raise
    if as_json:
        out.print_json(json.dumps(run.to_json()))
    elif run.pattern == "section":
        from chorus.commands import print_section_run

        print_section_run(run)
    else:
        _print_run(run)


@app.command()
def demo(
    voters: Annotated[int, typer.Option("--voters", "-n", min=1, max=15, help="Voters per document.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Vote on the bundled example reviews and show the results, per-voter answers and timings."""
    from chorus.api import plan_vote, submit_plan, wait_for_run

    settings = _settings()
    examples = [json.loads(line) for line in (EXAMPLES / "reviews.jsonl").read_text().splitlines() if line.strip()]
    labels = "positive,negative,neutral"
    started = time.perf_counter()
    with _errors(), _workers(settings) as workers:
        batch_id = _demo_batch(settings)
        run_ids = [
            submit_plan(plan_vote(ex["text"], labels, voters=voters, external_id=ex["id"], gold_label=ex["label"],
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
        _print_demo(runs, summary)
    raise typer.Exit(EXIT_FAILED if any(r.status == "failed" for r in runs) else EXIT_OK)


def _demo_batch(settings: Settings) -> str:
    from chorus.api import _prepare
    from models import Batch, Pattern, Session

    _prepare(settings)
    with Session.begin() as s:
        batch = Batch(name=f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}",
                      pattern=Pattern.VOTE, config={"source": "examples/reviews.jsonl"})
        s.add(batch)
        s.flush()
        return batch.id


def _print_limits(settings: Settings, as_json: bool) -> None:
    from providers.ratelimit import limits_view

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


def _print_run(run: Any) -> None:
    colour = {"succeeded": "green", "partial": "yellow", "failed": "red"}.get(run.status, "white")
    out.print(f"run [bold]{run.id}[/bold]  [{colour}]{run.status}[/{colour}]  provider {run.provider}")
    if run.answer is not None or run.result:
        conf = f"{run.confidence:.0%}" if run.confidence is not None else "-"
        flag = "  [yellow]low agreement[/yellow]" if run.low_agreement else ""
        out.print(f"answer [bold]{run.answer}[/bold]  confidence {conf}{flag}")
    if run.error:
        out.print(f"[yellow]{run.error}[/yellow]", highlight=False)
    table = Table("slot", "model", "variant", "status", "answer", "attempts", "latency", "tokens in/out", "error")
    for o in run.outcomes:
        latency = f"{o.latency_s * 1000:.0f} ms" if o.latency_s is not None else "-"
        est = "~" if o.usage_estimated else ""
        table.add_row(str(o.slot), o.model, o.prompt_variant or "-", o.status, o.answer or "-", str(o.attempts),
                      latency, f"{est}{o.input_tokens}/{est}{o.output_tokens}", o.error or "")
    out.print(table)
    if run.wall_s is not None and run.slowest_worker_s is not None:
        out.print(f"wall {run.wall_s * 1000:.0f} ms = slowest voter {run.slowest_worker_s * 1000:.0f} ms "
                  f"+ overhead {(run.wall_s - run.slowest_worker_s) * 1000:.0f} ms")
    if any(o.usage_estimated for o in run.outcomes):
        out.print("[dim]~ token counts are estimates (offline provider)[/dim]")


def _print_demo(runs: list[Any], summary: dict[str, Any]) -> None:
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


@app.command()
def stub(
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8765,
    latency_ms: Annotated[int, typer.Option("--latency-ms", help="Delay before each answer.")] = 0,
    fail: Annotated[list[str] | None, typer.Option("--fail", help="Fault rule, e.g. slot=2:500")] = None,
    fault: Annotated[str, typer.Option(help="Random fault mix, e.g. 429=0.2,529=0.05,500=0.05,hang=0.02")] = "",
    seed: Annotated[int, typer.Option(help="Seed of the fault mix (same seed, same faults).")] = 0,
    hang_s: Annotated[float, typer.Option("--hang-s", help="How long a hang holds a request.")] = 30.0,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute (token bucket).")] = None,
    itpm: Annotated[float | None, typer.Option(help="Input tokens per minute.")] = None,
    otpm: Annotated[float | None, typer.Option(help="Output tokens per minute.")] = None,
) -> None:
    """Serve a local Messages-API stub for tests and benchmarks (answers from the offline provider)."""
    from stubserver.server import main as stub_main

    argv = ["--host", host, "--port", str(port), "--latency-ms", str(latency_ms)]
    for rule in fail or []:
        argv += ["--fail", rule]
    argv += ["--fault", fault, "--seed", str(seed), "--hang-s", str(hang_s)]
    for name, value in (("--rpm", rpm), ("--itpm", itpm), ("--otpm", otpm)):
        if value is not None:
            argv += [name, str(value)]
    raise typer.Exit(stub_main(argv) or 0)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest migration."""
    from models import ensure_schema, get_engine
    from models.db import table_names

    settings = _settings()
    with _errors():
        ensure_schema(settings.effective_database_url)
    out.print(f"schema is current: {', '.join(table_names(get_engine(settings.effective_database_url)))}")


import chorus.analysis_commands  # noqa: E402,F401  (compare, advise, report)
import chorus.commands  # noqa: E402,F401  (section, batch, export, beat)

if __name__ == "__main__":  # pragma: no cover
    app()
