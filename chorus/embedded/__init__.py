"""Worker processes that chorus starts itself.

`WorkerProcess` is one real `celery -A worker worker`, started in its own process group so it and
anything it forks stop together. Embedded mode (no broker configured) runs one of them on kombu's
filesystem transport, with results in a SQLite key-value backend (native chord join) and data in
SQLite, all under CHORUS_DATA_DIR; the CLI stops it when the command is done. Tests and
benchmarks start them against Redis the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from settings import Settings, get_settings
from workflows.errors import ChorusError
from workflows.queues import all_queues


class WorkerProcess:
    def __init__(
        self,
        queues: list[str],
        *,
        log_dir: Path,
        name: str = "worker",
        pool: str = "threads",
        concurrency: int = 8,
        env: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        app: str = "worker",
    ) -> None:
        self.app = app
        self.queues = queues
        self.name = name
        self.pool = pool
        self.concurrency = concurrency
        self.env = dict(os.environ if env is None else env)
        self.extra_args = extra_args
        log_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"{name}.log"
        self.stderr_path = log_dir / f"{name}.stderr"
        self.ready_path = log_dir / f"{tag}.ready"
        self.hostname = f"{tag}@{socket.gethostname()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = dict(self.env)
        env["CHORUS_READY_FILE"] = str(self.ready_path)
        cmd = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "--queues", ",".join(self.queues), "--hostname", self.hostname,
            "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "--logfile", str(self.log_path), *self.extra_args,
        ]
        with self.stderr_path.open("wb") as err:
            # A new session: the worker and its pool children form one group we can stop together.
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            self.check()
            if time.monotonic() > deadline:
                raise ChorusError(f"worker {self.name} did not start within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.02)
        return self

    def check(self) -> None:
        """Raise if the worker process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace")[-1500:] if self.stderr_path.exists() else ""
            raise ChorusError(
                f"worker {self.name} exited with code {self.proc.returncode}: {tail.strip()} (log: {self.log_path})"
            )

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)  # warm shutdown: running tasks finish
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
            _signal_group(proc.pid, signal.SIGKILL)  # nothing in the group may outlive us
            proc.wait(timeout=5)
        finally:
            self.ready_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def embedded_worker(settings: Settings | None = None) -> WorkerProcess:
    """The one worker of embedded mode: a thread pool on every queue (LLM calls wait on I/O)."""
    settings = settings or get_settings()
    data = settings.data_path
    env = dict(os.environ)
    env["CHORUS_DATA_DIR"] = str(data)
    # No broker events or remote control on the filesystem transport: nothing listens to them.
    return WorkerProcess(all_queues(settings.model_list), log_dir=data, name="worker", pool="threads",
                         concurrency=settings.embedded_concurrency, env=env,
                         extra_args=("--without-heartbeat",))


def mode_line(settings: Settings) -> str:
    return (
        f"chorus: embedded mode (filesystem broker, SQLite under {Path(settings.data_path)}); "
        "set CHORUS_BROKER_URL to use Redis"
    )
