"""`chorus stub` and `chorus db upgrade`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from chorus.cli.base import JsonOpt, cli_settings, errors, out


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
    batch_delay_ms: Annotated[int | None, typer.Option(
        "--batch-delay-ms", help="Message Batches: how long a batch waits before it is processed.")] = None,
    batch_errored: Annotated[float | None, typer.Option(
        "--batch-errored", help="Message Batches: share of requests that end errored (0..1).")] = None,
    batch_expired: Annotated[float | None, typer.Option(
        "--batch-expired", help="Message Batches: share of requests that end expired (0..1).")] = None,
    batch_seed: Annotated[int | None, typer.Option("--batch-seed", help="Message Batches: seed of those draws.")]
    = None,
) -> None:
    """Serve a local Messages-API stub for tests and benchmarks (answers from the offline provider), with the
    Message Batches API."""
    from chorus.testing.stub.server import main as stub_main  # heavy: imported when used (docs/decisions.md)

    argv = ["--host", host, "--port", str(port), "--latency-ms", str(latency_ms)]
    for rule in fail or []:
        argv += ["--fail", rule]
    argv += ["--fault", fault, "--seed", str(seed), "--hang-s", str(hang_s)]
    for name, value in (("--rpm", rpm), ("--itpm", itpm), ("--otpm", otpm), ("--batch-delay-ms", batch_delay_ms),
                        ("--batch-errored", batch_errored), ("--batch-expired", batch_expired),
                        ("--batch-seed", batch_seed)):
        if value is not None:
            argv += [name, str(value)]
    raise typer.Exit(stub_main(argv) or 0)


def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create or upgrade the schema to the newest migration."""
    # heavy: imported when used, for start-up time (docs/decisions.md)
    from models import ensure_schema, get_engine
    from models.db import table_names

    settings = cli_settings()
    with errors():
        engine = ensure_schema(settings.effective_database_url)
    tables = table_names(get_engine(settings.effective_database_url))
    if as_json:
        out.print_json(json.dumps({"database": engine.url.render_as_string(hide_password=True),
                                   "tables": tables, "current": True}))
        return
    out.print(f"schema is current: {', '.join(tables)}")
