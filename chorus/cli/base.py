"""What every command shares: the consoles, exit codes, `--json`, turning chorus errors into a
message and an exit code, and (in embedded mode) running chorus's own worker for the command.

Exit codes: 0 success; 1 a run failed or chorus hit an error; 2 bad input or configuration;
3 a run ended partial (below quorum or an undecided tie); 4 timed out waiting.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import rich.table
import typer
from rich.console import Console

from chorus.embedded import embedded_worker, mode_line
from settings import Settings, get_settings
from workflows.errors import ChorusError, ConfigError, NotFoundError

PIPED_WIDTH = 160  # a table written to a file or a pipe: wide enough for every column, none cut


def _width(stream: Any) -> int | None:
    """Rich takes 80 columns when the output is not a terminal (and COLUMNS is unset); then tables
    squeezed answers and ids into "…". A terminal keeps its own width."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return PIPED_WIDTH


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_TIMEOUT = 0, 1, 2, 3, 4

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


class Table(rich.table.Table):
    """Rich's table, folding a long cell onto more lines instead of cutting it with "…": an answer, a
    label or an id is never shown cut, whatever the terminal's width (80 columns when piped)."""

    def __init__(self, *headers: str, **options: Any) -> None:
        super().__init__(*headers, **options)
        for column in self.columns:
            column.overflow = "fold"

    def add_column(self, *args: Any, **options: Any) -> None:
        options.setdefault("overflow", "fold")
        super().add_column(*args, **options)


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """Turn chorus errors into a clear message and an exit code, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except NotFoundError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except TimeoutError as exc:
        raise fail(str(exc), EXIT_TIMEOUT) from None
    except ChorusError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def cli_settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


@contextlib.contextmanager
def workers_for(settings: Settings) -> Iterator[Any]:
    """In embedded mode, run our own worker for the duration of the command."""
    if not settings.embedded:
        yield None
        return
    err.print(mode_line(settings), highlight=False)
    workers = embedded_worker(settings).start()
    try:
        yield workers
    finally:
        workers.stop()


def exit_code(statuses: list[str]) -> int:
    if "failed" in statuses:
        return EXIT_FAILED
    if "partial" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


def read_document(arg: str) -> str:
    path = Path(arg)
    looks_like_path = len(arg) < 4096 and "\n" not in arg and (path.suffix or "/" in arg)
    if looks_like_path and not path.exists() and len(arg.split()) == 1:
        raise fail(f"no such file: {arg} (pass the text itself in quotes, or an existing file)", EXIT_USAGE)
    if looks_like_path and path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise fail(f"{arg} is not UTF-8 text", EXIT_USAGE) from None
    return arg
