"""What every command shares: the consoles, exit codes, `--json`, turning chorus errors into a
message and an exit code, and (in embedded mode) running chorus's own worker for the command.

Exit codes, the same for every command (a batch takes the worst of its documents, in this order):
1 a run (or document) failed, or chorus hit an error; 5 cancelled (`chorus cancel`, or the budget);
3 partial (below quorum, an undecided tie, a missing section); 0 success. And: 2 bad input or
configuration (nothing was sent); 4 timed out waiting (the work goes on); 130 interrupted (Ctrl-C),
128 + the signal for SIGTERM / SIGHUP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import rich.table
import typer
from rich.console import Console

from workflows.errors import ChorusError, ConfigError, NotFoundError, RunTimeout

if TYPE_CHECKING:
    from settings import Settings
    from workflows.calls import Attachment

# Start-up time: the CLI modules import at their top only Typer, Rich and light pure modules; the rest
# (settings, SQLAlchemy, Celery, the anthropic SDK, the document readers) is imported inside the command
# that needs it, so `chorus --help` and `chorus models` do not import the world (docs/decisions.md).

PIPED_WIDTH = 160  # a table written to a file or a pipe: wide enough for every column, none cut


def _width(stream: Any) -> int | None:
    """Rich takes 80 columns when the output is not a terminal (and COLUMNS is unset); then tables
    squeezed answers and ids into "…". A terminal keeps its own width."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return PIPED_WIDTH


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))


# The commands that run work on the embedded worker: it is launched as soon as they read their settings.
WORK_COMMANDS = frozenset({"vote", "section", "orchestrate", "demo", "batch", "compare", "advise"})
_invocation: dict[str, Any] = {}  # the command being run: its name, and whether it launched a worker


def begin_command(ctx: typer.Context) -> None:
    """Called before every command (the app's callback)."""
    fit_consoles()
    _invocation.clear()
    _invocation.update(name=ctx.invoked_subcommand, early=False)
    ctx.call_on_close(_end_command)


def _end_command() -> None:
    early = _invocation.get("early")
    _invocation.clear()
    if early:
        from chorus.embedded import stop_early  # heavy (settings): only when a worker was launched early

        stop_early()  # a worker launched for a command that ended before it sent work


def _start_worker_early(settings: Settings) -> None:
    """In embedded mode, launch the worker of a command that runs work now, while it still imports, reads
    its input and plans (chorus.embedded.start_early): it boots meanwhile instead of after the submit."""
    if not settings.embedded or _invocation.get("name") not in WORK_COMMANDS or _invocation.get("early"):
        return
    from chorus.embedded import start_early  # heavy (settings, Celery's queues): only for these commands

    _invocation["early"] = True
    start_early(settings)


def fit_consoles() -> None:
    """Size the consoles for this invocation (the environment and the streams may differ from when the
    module was imported: a test runner, or an app embedding the CLI)."""
    out.width = _width(sys.stdout) or Console().width
    err.width = _width(sys.stderr) or Console(stderr=True).width

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_TIMEOUT, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5

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
    from settings import get_settings  # heavy (pydantic-settings): start-up time, see the imports above

    try:
        settings = get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    _start_worker_early(settings)
    return settings


class Interrupted(BaseException):
    """The command was asked to stop by SIGTERM or SIGHUP (kill, `timeout`, systemd, a closed terminal).

    A BaseException, as KeyboardInterrupt is: the retry loops that catch `Exception` around the broker
    and the database (a publish retried while Redis is down, a transaction tried again) must not take
    the stop for one more error to retry."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command the way Ctrl-C does: through `finally`, so the embedded
    worker is stopped, instead of leaving it orphaned (the default action ends Python at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def workers_for(settings: Settings, leftover: Callable[[], str | None] | None = None) -> Iterator[Any]:
    """In embedded mode, run our own worker for the duration of the command (after clearing the stale
    work of commands that ended, see `chorus.embedded.commands`).

    However the command stops early (Ctrl-C, SIGTERM, SIGHUP, a timeout), the worker is stopped and
    `leftover()` says what is still queued and how to cancel or resume it: after the timeout's own
    message, or on stderr with exit code 130 (128 + the signal for SIGTERM and SIGHUP)."""
    # heavy (Celery, SQLAlchemy): start-up time, see the imports above
    from chorus.embedded import mode_line
    from chorus.runs import embedded_workers

    with stop_signals():
        try:
            if not settings.embedded:
                yield None
                return
            err.print(mode_line(settings), highlight=False)
            with embedded_workers(settings) as started:
                assert started is not None
                workers, swept = started
                if swept.cancelled:
                    err.print(f"cancelled {len(swept.cancelled)} run(s) left unfinished by a command that ended "
                              f"(nothing ran them any more); a batch run again sends its documents again",
                              highlight=False, soft_wrap=True)
                yield workers
        except TimeoutError as exc:
            hint = _leftover(leftover)
            if hint is None:
                raise
            raise RunTimeout(f"{exc}\n{hint}") from None
        except (KeyboardInterrupt, Interrupted) as exc:
            # The stop may have landed inside a database call: the connection it left half-used is thrown
            # away, and the pool's traceback about failing to reset it says nothing the user needs.
            logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
            hint = _leftover(leftover)
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {exc}"
            err.print(f"{why}." + (f" {hint}" if hint else ""), highlight=False, soft_wrap=True)
            raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 128 + exc.signum) from None


def _leftover(describe: Callable[[], str | None] | None) -> str | None:
    if describe is None:
        return None
    try:
        return describe()
    except Exception as exc:  # noqa: BLE001 - the hint must never hide why the command stopped
        return f"(could not read what is left: {exc})"


def left_in_run(run_id: str | None, settings: Settings) -> str | None:
    """What a vote or section command leaves behind when it stops before its run finished."""
    if run_id is None:
        return None
    # heavy (SQLAlchemy, Celery): start-up time, see the imports above
    from chorus.runs import get_run
    from models import RunStatus

    status = get_run(run_id, settings=settings).status
    if RunStatus(status).terminal:
        return None
    where = (" Embedded mode: nothing works on it after this command; the next command cancels it."
             if settings.embedded else " Your workers go on with it.")
    return (f"Run {run_id} is still {status}.{where} `chorus cancel {run_id[:12]}` cancels it now "
            f"(calls in flight finish and are recorded); `chorus status {run_id[:12]}` shows it.")


def left_in_batch(name: str | None, settings: Settings) -> str | None:
    """What a batch command leaves behind when it stops before every document finished."""
    if name is None:
        return None
    from chorus.batch import batch_counts, find_batch  # heavy (SQLAlchemy, Celery): start-up time, as above

    try:
        batch = find_batch(name, settings=settings)
    except NotFoundError:
        return None
    counts = batch_counts(batch.id, settings=settings)
    unfinished = counts.pending + counts.running
    if not unfinished:
        return None
    where = (" Embedded mode: nothing works on them after this command." if settings.embedded
             else " Your workers go on with the runs already sent.")
    return (f"Batch {name!r}: {unfinished} document(s) unfinished ({counts.pending} not sent, {counts.running} "
            f"running).{where} Run the same command again to resume it, or `chorus cancel {name}` to cancel them.")


def exit_code(statuses: list[str]) -> int:
    if "failed" in statuses:
        return EXIT_FAILED
    if "cancelled" in statuses:
        return EXIT_CANCELLED
    if "partial" in statuses:
        return EXIT_PARTIAL
    return EXIT_OK


def read_document(arg: str, settings: Settings) -> str | Attachment:
    """The document a command is given: a file of any kind chorus reads (PDF, image, Word, HTML, text),
    or the text itself. A file it cannot read is refused (exit 2) with the file's name and the reason."""
    path = Path(arg)
    looks_like_path = len(arg) < 4096 and "\n" not in arg and (path.suffix or "/" in arg)
    if looks_like_path and not path.exists() and len(arg.split()) == 1:
        raise fail(f"no such file: {arg} (pass the text itself in quotes, or an existing file)", EXIT_USAGE)
    if looks_like_path and path.is_dir():
        raise fail(f"{arg} is a folder; one document at a time here (`chorus batch {arg}` takes a folder)",
                   EXIT_USAGE)
    if looks_like_path and path.is_file():
        from chorus.native import load_document  # heavy (the document readers): start-up time, as above

        try:
            return load_document(path, settings=settings)
        except ConfigError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    return arg
