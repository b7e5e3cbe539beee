"""Run docker-compose.yml's services as local processes: this machine has no Docker engine.

The file is read through `docker-compose config` (anchors merged, variables filled in from an env
file), and each service built from our image runs its own `command` with its own `environment`.
Only what a container would change is rewritten, and nothing else:
- the hostnames `redis` and `postgres` become the machine's Redis (a private database) and
  PostgreSQL (a fresh database), since the infrastructure services are not started here;
- a named volume becomes a temporary folder, a published container port a free loopback port;
- HOSTNAME is set, as Docker sets it in a container.
One-shot services (restart "no") run to completion first; then the others start, and each is
awaited through its own `healthcheck`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"


def compose_config(env: Mapping[str, str], env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    """The compose file as docker-compose resolves it; raises with its message when it is invalid."""
    proc = subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file),
         "config"],
        env=dict(env), capture_output=True, text=True, timeout=60, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker-compose config failed ({proc.returncode}): {proc.stderr.strip()}")
    config = yaml.safe_load(proc.stdout)
    assert isinstance(config, dict)
    return config


def unescape(value: str) -> str:
    """`docker-compose config` prints a literal `$` as `$$`; the container sees one `$`."""
    return value.replace("$$", "$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    """Where the infrastructure services' hostnames point on this machine."""

    redis_url: str  # e.g. redis://127.0.0.1:6379/7
    postgres_url: str  # e.g. postgresql://postgres@127.0.0.1:5432/chorus_ops_x

    def rewrite(self, value: str) -> str:
        if "://" not in value:
            return value
        parts = urllib.parse.urlsplit(value)
        if parts.hostname == "redis":
            return self.redis_url
        if parts.hostname == "postgres":
            local = urllib.parse.urlsplit(self.postgres_url)
            return urllib.parse.urlunsplit((parts.scheme, local.netloc, local.path, "", ""))
        return value


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def one_shot(self) -> bool:
        return str(self.spec.get("restart", "no")) == "no"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # A session of its own: the service and everything it forks stop together.
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"service {self.name} is not running (exit {code}); log:\n{self.log()[-3000:]}")

    def healthcheck(self) -> list[str] | None:
        test = (self.spec.get("healthcheck") or {}).get("test")
        if not test:
            return None
        kind, rest = test[0], [unescape(t) for t in test[1:]]
        if kind == "CMD-SHELL":
            return ["/bin/sh", "-c", rest[0]]
        if kind == "CMD":
            return rest
        raise ValueError(f"service {self.name}: unsupported healthcheck {test!r}")

    def healthy(self) -> bool:
        argv = self.healthcheck()
        if argv is None:
            return True
        timeout = _seconds(self.spec["healthcheck"].get("timeout", "30s"))
        try:
            result = subprocess.run(argv, env=self.env, cwd=self.cwd, capture_output=True, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


@dataclass
class LocalStack:
    config: dict[str, Any]
    target: Target
    workdir: Path
    base_env: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # service -> loopback port of its first published port

    def ours(self) -> list[str]:
        """Services run from the project's image; the others (redis, postgres) are the machine's own."""
        return [name for name, spec in self.config["services"].items() if "build" in spec]

    def prepare(self) -> None:
        for name in self.ours():
            spec = self.config["services"][name]
            env = dict(self.base_env)
            env.update({k: self.target.rewrite(unescape(str(v))) for k, v in (spec.get("environment") or {}).items()})
            env["HOSTNAME"] = socket.gethostname()
            argv = [unescape(str(a)) for a in spec["command"]]
            for volume in spec.get("volumes") or []:
                source, target = str(volume).split(":")[:2]
                local = self.workdir / "volumes" / source
                local.mkdir(parents=True, exist_ok=True)
                argv = [a.replace(target, str(local)) for a in argv]
                env = {k: v.replace(target, str(local)) for k, v in env.items()}
            for published in spec.get("ports") or []:
                container_port = str(published).split(":")[-1].split("/")[0]
                port = free_port()
                self.ports.setdefault(name, port)
                env = {k: (str(port) if v == container_port else v) for k, v in env.items()}
                env["FLOWER_ADDRESS"] = "127.0.0.1"  # a container listens on all interfaces; here, loopback only
            cwd = self.workdir / "cwd" / name
            cwd.mkdir(parents=True, exist_ok=True)
            self.services[name] = Service(name, spec, argv, env, cwd, self.workdir / f"{name}.log")

    def run_one_shots(self, timeout: float = 90.0) -> None:
        for service in self.services.values():
            if not service.one_shot:
                continue
            service.start()
            assert service.proc is not None
            try:
                code = service.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                service.signal(signal.SIGKILL)
                raise RuntimeError(f"one-shot service {service.name} did not finish in {timeout:.0f} s") from None
            if code != 0:
                raise RuntimeError(f"one-shot service {service.name} exited {code}:\n{service.log()[-3000:]}")

    def start_long_running(self, timeout: float = 90.0) -> None:
        running = [s for s in self.services.values() if not s.one_shot]
        for service in running:
            service.start()
        deadline = time.monotonic() + timeout
        waiting = list(running)
        while waiting:
            for service in waiting:
                service.check_alive()
            # Healthchecks run side by side: a worker's ping waits out its own timeout until it is up.
            with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
                verdicts = list(pool.map(Service.healthy, waiting))
            waiting = [service for service, ok in zip(waiting, verdicts, strict=True) if not ok]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise RuntimeError(f"services not healthy within {timeout:.0f} s: {names}")
            if waiting:
                time.sleep(0.5)

    def down(self, timeout: float = 30.0) -> None:
        started = [s for s in self.services.values() if s.proc is not None]
        for service in started:
            service.signal(signal.SIGTERM)  # warm shutdown for all at once
        deadline = time.monotonic() + timeout
        for service in started:
            assert service.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            service.signal(signal.SIGKILL)  # nothing in the group may outlive the stack
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=5)
