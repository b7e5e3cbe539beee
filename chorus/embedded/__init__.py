"""Worker processes that chorus starts itself.

`WorkerProcess` is one real `celery -A worker worker`, started in its own process group so it and
anything it forks stop together. Embedded mode (no broker configured) runs one of them on kombu's
filesystem transport, with results in a SQLite key-value backend (native chord join) and data in
SQLite, all under CHORUS_DATA_DIR; the CLI stops it when the command is done. Tests and
benchmarks start them against Redis the same way.

A worker can die under us while the command still needs it: celery 5.7 / kombu 5.7 sometimes exit
with `Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")` when the
Redis connection drops (a late ack on the channel of the connection the consumer just closed; kombu
#582, celery #6654; docs/operations.md). So a `WorkerProcess` given `restarts=N` supervises itself:
a worker that exits after it was ready is started again, at most N times in `restart_window_s`, each
time with a warning saying why. One that dies before it is ready, or more often than that, is not
restarted, and `check()` raises with the tail of its output, as without supervision.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from settings import Settings, get_settings
from workflows.errors import ChorusError
from workflows.queues import all_queues

log = logging.getLogger("chorus.embedded")

# The embedded worker: a worker that keeps dying is broken, not unlucky, so the budget is small.
EMBEDDED_RESTARTS = 3
RESTART_WINDOW_S = 60.0
SUPERVISE_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GATE_ENV = "CHORUS_EMBEDDED_GATE"  # the file whose existence lets a gated worker take messages


@dataclass(frozen=True)
class Restart:
    """One unexpected exit that the supervision answered with a new process."""

    at: float  # time.time() of the restart
    old_pid: int
    returncode: int
    reason: str


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
        restarts: int = 0,
        restart_window_s: float = RESTART_WINDOW_S,
        gated: bool = False,
        launcher: str = "celery",
    ) -> None:
        self.launcher = launcher  # the module run with `python -m`: celery, or chorus.embedded.launch
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
        # A gated worker boots at once but takes no message until `open_gate()` (chorus.embedded.transport).
        self.gate_path = log_dir / f"{tag}.gate" if gated else None
        self.hostname = f"{tag}@{socket.gethostname()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.max_restarts = restarts
        self.restart_window_s = restart_window_s
        self.restarts: list[Restart] = []  # every restart so far, oldest first
        self._recent: deque[float] = deque()  # monotonic times of the restarts inside the window
        self._gave_up: str | None = None  # why the supervision stopped restarting, once it has
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._output_from = (0, 0)  # where this process's lines begin in the log file and in stderr

    def start(self) -> WorkerProcess:
        with self._lock:
            self._stopping.clear()
            self._gave_up = None
            self._launch(append=False)
        if self.max_restarts > 0 and (self._supervisor is None or not self._supervisor.is_alive()):
            self._supervisor = threading.Thread(target=self._supervise, name=f"supervise-{self.name}", daemon=True)
            self._supervisor.start()
        return self

    def _launch(self, *, append: bool) -> None:
        self.ready_path.unlink(missing_ok=True)  # a restarted worker announces itself again
        env = dict(self.env)
        env["CHORUS_READY_FILE"] = str(self.ready_path)
        if self.gate_path is not None:
            env[GATE_ENV] = str(self.gate_path)
        cmd = [
            sys.executable, "-m", self.launcher, "-A", self.app, "worker",
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "--queues", ",".join(self.queues), "--hostname", self.hostname,
            "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "--logfile", str(self.log_path), *self.extra_args,
        ]
        # A restart appends: the output of the process that died stays readable above the new one's.
        with self.stderr_path.open("ab" if append else "wb") as err:
            self._output_from = (_size(self.log_path), err.tell())
            # A new session: the worker and its pool children form one group we can stop together.
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            self._tend()
            if self._gave_up is not None:
                return

    def _tend(self) -> None:
        """Restart the worker if it exited unexpectedly and the budget allows; else record why not."""
        with self._lock:
            proc = self.proc
            if (self.max_restarts <= 0 or self._stopping.is_set() or self._gave_up is not None
                    or proc is None or proc.poll() is None):
                return
            was_ready = self.ready_path.exists()
            reason = self._death_reason()
            # Pool children of a prefork worker may outlive their parent; they must not keep running.
            _signal_group(proc.pid, signal.SIGKILL)
            now = time.monotonic()
            while self._recent and now - self._recent[0] > self.restart_window_s:
                self._recent.popleft()
            if not was_ready:
                self._gave_up = "it exited before it was ready"
            elif len(self._recent) >= self.max_restarts:
                self._gave_up = (f"it exited {len(self._recent) + 1} times within "
                                 f"{self.restart_window_s:.0f} s")
            if self._gave_up is not None:
                log.error("worker %s exited with code %s (%s); not restarting it: %s",
                          self.name, proc.returncode, reason, self._gave_up)
                return
            self._recent.append(now)
            restart = Restart(at=time.time(), old_pid=proc.pid, returncode=int(proc.returncode), reason=reason)
            self.restarts.append(restart)
            message = (f"worker {self.name} (pid {proc.pid}) exited with code {proc.returncode} "
                       f"({reason}); restarting it ({len(self._recent)} of {self.max_restarts} restarts "
                       f"allowed in {self.restart_window_s:.0f} s)")
            log.warning("%s", message)
            with contextlib.suppress(OSError), self.log_path.open("a") as out:
                out.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}: WARNING/chorus] {message}\n")
            with contextlib.suppress(OSError), self.stderr_path.open("a") as err:
                err.write(f"--- chorus: {message}\n")
            self._launch(append=True)

    def _death_reason(self) -> str:
        """The line that says why the worker exited: Celery logs an unrecoverable error to its log
        file; a crash before logging is set up ends its stderr."""
        log_from, err_from = self._output_from  # the files also hold earlier processes' lines
        # Celery goes on logging its shutdown after the error, tracebacks included: read far enough back.
        logged = _tail(self.log_path, 256_000, log_from).splitlines()
        found = next((line for line in reversed(logged) if "Unrecoverable error" in line or "CRITICAL" in line), None)
        if found is None:
            found = next((line for line in reversed(_tail(self.stderr_path, 2000, err_from).splitlines())
                          if line.strip()), None)
        return found.strip()[-300:] if found else "no error was logged"

    def open_gate(self) -> None:
        """Let a gated worker take messages (it may still be booting); nothing for a worker without a gate."""
        if self.gate_path is not None:
            self.gate_path.touch()

    def same_as(self, other: WorkerProcess) -> bool:
        """Whether `other` (not started) would run as this one does: same command, queues and environment."""
        def spec(w: WorkerProcess) -> tuple[object, ...]:
            env = {k: v for k, v in w.env.items() if k not in ("CHORUS_READY_FILE", GATE_ENV)}
            return (w.launcher, w.app, w.queues, w.pool, w.concurrency, w.extra_args, w.log_path, w.max_restarts, env)

        return spec(self) == spec(other)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            self.check()
            if time.monotonic() > deadline:
                raise ChorusError(f"worker {self.name} did not start within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.02)
        return self

    def check(self) -> None:
        """Raise if the worker process has died and will not be restarted (with supervision, a worker
        that died is restarted here or by the supervising thread, within its budget)."""
        self._tend()
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is None:
                return
            if self.max_restarts > 0 and self._gave_up is None and not self._stopping.is_set():
                return  # _tend restarts it, or records why not, on its next look
            tail = _tail(self.stderr_path, 1500)
            why = f"; not restarted: {self._gave_up}" if self._gave_up else ""
            raise ChorusError(
                f"worker {self.name} exited with code {proc.returncode}{why} ({self._death_reason()}): "
                f"{tail.strip()} (log: {self.log_path})"
            )

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()  # before taking the lock: the supervisor launches nothing after this
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=5)
        with self._lock:
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
            if self.gate_path is not None:
                self.gate_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to send the worker SIGTERM (a warm shutdown) when the process that
    started it dies, even by SIGKILL (prctl PR_SET_PDEATHSIG). Linux fires it when the *thread* that
    forked exits, so only a launch from the main thread uses it; elsewhere, and on other systems, the
    embedded transport notices the new parent pid instead (`chorus.embedded.transport`)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork: the hook only calls it
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, chars: int, start: int = 0) -> str:
    """The last `chars` bytes of the file after offset `start`, as text ('' if it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - chars))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def embedded_worker(settings: Settings | None = None, *, gated: bool = False) -> WorkerProcess:
    """The one worker of embedded mode: a thread pool on every queue (LLM calls wait on I/O), restarted
    if it dies while the command runs (at most EMBEDDED_RESTARTS times a minute). A `gated` one takes
    no message before `open_gate()`: it can boot while the queue is swept (see `start_early`)."""
    settings = settings or get_settings()
    data = settings.data_path
    env = dict(os.environ)
    env["CHORUS_DATA_DIR"] = str(data)
    # The worker reads its settings from its environment: it must be embedded, on the caller's database,
    # even when the caller's `settings` differ from this process's environment (a broker set there would
    # make it a Redis worker taking other work).
    env["CHORUS_BROKER_URL"] = env["CHORUS_RESULT_BACKEND"] = ""
    env["CHORUS_DATABASE_URL"] = settings.effective_database_url
    if settings.models_file is not None:  # the worker prices and builds requests for the same models
        env["CHORUS_MODELS_FILE"] = str(settings.models_file.expanduser().resolve())
    # No broker events or remote control on the filesystem transport: nothing listens to them.
    return WorkerProcess(all_queues(settings.model_list), log_dir=data, name="worker", pool="threads",
                         concurrency=settings.embedded_concurrency, env=env,
                         extra_args=("--without-heartbeat",), restarts=EMBEDDED_RESTARTS, gated=gated,
                         launcher="chorus.embedded.launch")


# Workers launched before their command needed them, per data directory (see `start_early`).
_early: dict[Path, WorkerProcess] = {}


def start_early(settings: Settings) -> None:
    """Launch the embedded worker of a command that will need one, gated, as early as the command knows it.

    A worker boots in one to three seconds (a new Python importing Celery, SQLAlchemy, the providers and
    the task modules), which every embedded vote waited for after its submit ("overhead 2734 ms"). Booted
    while the command imports, plans and sweeps the queue, it is ready, or nearly, when the work is sent.
    The gate keeps it from taking the stale messages the sweep is about to clear (`chorus.embedded.commands`).
    `take_early` hands it to the command; `stop_early` stops one no command took (the command ended first)."""
    if not settings.embedded or settings.data_path in _early:
        return
    _early[settings.data_path] = embedded_worker(settings, gated=True).start()


def take_early(settings: Settings) -> WorkerProcess | None:
    """The worker `start_early` launched for these settings, still alive and as `embedded_worker(settings)`
    would start it; else None (a different one is stopped)."""
    process = _early.pop(settings.data_path, None)
    if process is None:
        return None
    if process.proc is not None and process.proc.poll() is None and process.same_as(embedded_worker(settings)):
        return process
    process.stop()
    return None


def stop_early() -> None:
    """Stop the workers launched early that no command took (it ended before it sent work)."""
    while _early:
        _early.popitem()[1].stop()


def mode_line(settings: Settings) -> str:
    # A ./.chorus found in the current folder is named as such: other folders store elsewhere.
    found = " (the ./.chorus of this folder)" if settings.data_origin == "folder" else ""
    return (
        f"chorus: embedded mode (filesystem broker, SQLite under {Path(settings.data_path)}{found}); "
        "set CHORUS_BROKER_URL to use Redis"
    )
