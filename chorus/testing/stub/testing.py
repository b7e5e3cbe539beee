"""Run the stub as a subprocess for a test, and always stop it afterwards."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]  # the checkout (or site-packages) holding chorus
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# Loopback admin calls must never go through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class StubHandle:
    host: str
    port: int
    pid: int
    exit_code: int | None = None  # set once the stub has stopped

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with _OPENER.open(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def requests(self, bodies: bool = True) -> list[dict[str, Any]]:
        """The request log, oldest first; each entry keeps the whole request body under `body` (the
        `system`, the `messages`, `output_config`, ...), unless `bodies` is False."""
        return self._admin("GET", "/_stub/requests" if bodies else "/_stub/requests?bodies=0")

    def inflight(self) -> list[dict[str, Any]]:
        """The Messages requests the stub has read and not yet answered (`time`, `run`, `slot`,
        `request_id`). Read `requests()` first and this second: a request answered in between is then
        in neither, never in both."""
        return self._admin("GET", "/_stub/inflight")

    def set_rules(self, rules: Sequence[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
        return self._admin("POST", "/_stub/rules", list(rules))

    def reset(self) -> None:
        self._admin("POST", "/_stub/reset", {})

    def health(self) -> dict[str, Any]:
        return self._admin("GET", "/_stub/health")

    def set_latency(self, latency_ms: float, ms_per_output_token: float = 0.0, jitter_ms: float = 0.0,
                    seed: int | None = None, ms_per_input_page: float = 0.0) -> None:
        """Change the delay before each answer begins (the time to the first token: `latency_ms` plus a
        uniform draw in [-jitter_ms, +jitter_ms], at least 0, plus `ms_per_input_page` per PDF page of
        the request; a `seed` restarts the draws) and the generation time per output token after it
        (`reset` leaves them alone)."""
        body: dict[str, Any] = {"latency_ms": latency_ms, "ms_per_output_token": ms_per_output_token,
                                "latency_jitter_ms": jitter_ms, "ms_per_input_page": ms_per_input_page}
        if seed is not None:
            body["latency_seed"] = seed
        self._admin("POST", "/_stub/latency", body)

    def set_limits(self, max_request_bytes: int) -> dict[str, Any]:
        """The Messages / count_tokens request size limit (413 request_too_large above it); `reset`
        restores the startup value (`--max-request-bytes`, default 32 MB)."""
        return self._admin("POST", "/_stub/limits", {"max_request_bytes": max_request_bytes})

    def files(self) -> dict[str, Any]:
        """The Files API as the stub saw it since the last reset: `uploads` and `deletes` (counts),
        `live` (files not deleted nor expired), and `files`, oldest first (each its metadata plus
        `sha256`, `deleted_at` and `live`)."""
        return self._admin("GET", "/_stub/files")

    def batch_config(self, **knobs: Any) -> dict[str, Any]:
        """Set Message Batches knobs and return them all: `delay_ms` (before a batch is processed),
        `errored` / `expired` (seeded shares, 0..1), `seed`, and `rules`, e.g.
        `[{"custom_id": "doc-1", "result": "expired", "times": 1}]` (or matching `run` / `slot` of a chorus
        custom_id; `"result": "errored"` takes an `error` type, default api_error). Keys not given keep
        their values; the seeded draws start over. `reset` restores the startup knobs."""
        return self._admin("POST", "/_stub/batches", knobs)

    def batches(self) -> list[dict[str, Any]]:
        """Every Message Batch, oldest first: `id`, `processing_status`, `request_counts`, `custom_ids`, and
        `results` ({custom_id: result type}) once it has ended."""
        return self._admin("GET", "/_stub/batches")


@contextmanager
def running_stub(
    latency_ms: float = 0, rules: Sequence[str] = (), extra_args: Sequence[str] = ()
) -> Iterator[StubHandle]:
    """Start `python -m chorus.testing.stub --port 0` and yield a handle; the process is stopped on exit
    (SIGTERM, then SIGKILL after a few seconds) even when the body raises."""
    args = [sys.executable, "-m", "chorus.testing.stub", "--host", "127.0.0.1", "--port", "0",
            "--latency-ms", str(latency_ms)]
    for rule in rules:
        args += ["--fail", rule]
    args += list(extra_args)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    handle: StubHandle | None = None
    try:
        info = _first_line(proc)
        handle = StubHandle(host=info["host"], port=int(info["port"]), pid=int(info["pid"]))
        yield handle
    finally:
        code = _stop(proc)
        if handle is not None:
            handle.exit_code = code


def _first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        raise RuntimeError(f"the stub printed nothing within {STARTUP_TIMEOUT_S:g} s") from None
    if not line.strip():
        raise RuntimeError(f"the stub exited before listening (exit code {proc.wait(STOP_TIMEOUT_S)})")
    return json.loads(line)


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
