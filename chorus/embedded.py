"""Embedded mode: no broker configured, so the CLI runs its own worker process.

The worker is a real `celery -A worker worker` on kombu's filesystem transport, with results in a
SQLite key-value backend (native chord join) and data in SQLite, all under CHORUS_DATA_DIR. It is
started in its own process group and stopped, with everything it forked, when the CLI is done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from providers.errors import ChorusError
from settings import Settings, get_settings


class EmbeddedWorkers:
    def __init__(self, settings: Settings | None = None, *, concurrency: int | None = None) -> None:
        self.settings = settings or get_settings()
        self.concurrency = concurrency or self.settings.embedded_concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        data = self.settings.data_path
        self.log_path = data / "worker.log"
        self.ready_path = data / f"worker-{os.getpid()}.ready"
        self.stderr_path = data / "worker.stderr"

    def start(self) -> EmbeddedWorkers:
        from worker import all_queues

        data = self.settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        env = dict(os.environ)
        env["CHORUS_DATA_DIR"] = str(data)
        env["CHORUS_READY_FILE"] = str(self.ready_path)
        cmd = [
            sys.executable, "-m", "celery", "-A", "worker", "worker",
            "--pool", "threads", "--concurrency", str(self.concurrency),
            "--queues", ",".join(all_queues(self.settings)),
            "--hostname", f"embedded-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "INFO", "--logfile", str(self.log_path),
        ]
        # A new session: the worker and anything it forks form one group we can stop together.
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            self.check()
            if time.monotonic() > deadline:
                raise ChorusError(f"the embedded worker did not start within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.02)

    def check(self) -> None:
        """Raise if the worker process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            err = self.stderr_path.read_text(errors="replace")[-2000:] if self.stderr_path.exists() else ""
            raise ChorusError(
                f"the embedded worker exited with code {self.proc.returncode}. {err.strip()} (log: {self.log_path})"
            )

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            # Thread-pool workers fork nothing, but make sure no member of the group outlives us.
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            self.ready_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedWorkers:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def mode_line(settings: Settings) -> str:
    return (
        f"chorus: embedded mode (filesystem broker, SQLite under {Path(settings.data_path)}); "
        "set CHORUS_BROKER_URL to use Redis"
    )
