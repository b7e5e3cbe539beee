"""Run the `chorus` command line as a user does: the installed console script, in a subprocess.

`chorus(*args)` runs it to the end in a fresh user's environment (no CHORUS_* or ANTHROPIC_* variables:
embedded mode and the offline provider) unless `env` is given; `session_env()` is the test session's
own environment (its Redis database, PostgreSQL database and stub). `command(*args)` is the argument
list, for a test that starts the command with `subprocess.Popen` and stops it itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, clean_env

COLUMNS = 200  # wide enough that Rich never wraps a line a test reads


def command(*args: str) -> list[str]:
    """The `chorus` console script of this interpreter (not a pyenv shim found on PATH, which is slower),
    or `python -m chorus.cli` when the package is not installed with its scripts."""
    script = Path(sysconfig.get_path("scripts")) / "chorus"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "chorus.cli", *args]


def session_env(**extra: str) -> dict[str, str]:
    """The test session's environment (tests/conftest.py points it at the session's Redis database,
    PostgreSQL database and stub), plus `extra`."""
    return {**os.environ, **extra}


class CliResult(subprocess.CompletedProcess[str]):
    """A finished command: `returncode`, `stdout`, `stderr`, and `json()`."""

    def json(self) -> Any:
        """stdout read as JSON; when it is not JSON, the failure names the command, its exit code and the
        end of its stderr."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"`chorus {' '.join(map(str, self.args[1:]))}` exited {self.returncode} without "
                                 f"JSON on stdout:\n{self.stdout[-2000:]}\nstderr:\n{self.stderr[-3000:]}") from None


def chorus(*args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None, timeout: float = 240,
           input: str | None = None, columns: int | None = COLUMNS,  # noqa: A002 - subprocess.run's name
           **extra_env: str) -> CliResult:
    """Run `chorus *args` in `cwd` and wait for it (at most `timeout` seconds). The environment is `env`
    (a fresh user's when None) plus `extra_env`, with LINES unset and COLUMNS set to `columns` (unset
    when None: a pipe with no terminal width)."""
    environ = {k: v for k, v in (clean_env() if env is None else env).items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        environ["COLUMNS"] = str(columns)
    environ.update(extra_env)
    done = subprocess.run(command(*args), cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    return CliResult(done.args, done.returncode, done.stdout, done.stderr)


def session_chorus(*args: str, env: Mapping[str, str] | None = None, **options: Any) -> CliResult:
    """`chorus(*args)` in the test session's environment (unless `env` is given): against the session's
    Redis, PostgreSQL and stub, the `workers` fixture's cluster."""
    return chorus(*args, env=session_env() if env is None else env, **options)
