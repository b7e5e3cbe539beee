"""docker-compose.yml validates with `docker-compose config` and agrees with the code it deploys:
settings.py, the queues in worker.py, the modules pyproject.toml installs, and .env.example."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from settings import Settings, load_settings
from tests.conftest import clean_env
from tests.ops.stack import COMPOSE_FILE, ENV_EXAMPLE, ROOT, compose_config
from workflows.queues import all_queues

OURS = ["migrate", "worker-haiku", "worker-sonnet", "worker-opus", "worker-callbacks", "beat", "flower"]
# Settings the compose file sets itself (URLs built from the passwords) or that only embedded mode reads.
COMPOSE_OWNED = {"broker_url", "result_backend", "database_url", "data_dir", "embedded_concurrency", "ready_file",
                 "anthropic_api_key", "anthropic_base_url"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; `bash .ci/run` installs it (apt-get install docker-compose)")
    return compose_config(clean_env())


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else f"CHORUS_{field.upper()}"


def env_example() -> tuple[set[str], str]:
    """Variables given a value in .env.example, and its whole text."""
    text = ENV_EXAMPLE.read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M)), text


def test_docker_compose_config_accepts_the_file_with_the_example_env(config):
    assert set(config["services"]) == {"redis", "postgres", *OURS}
    assert set(config["volumes"]) == {"redis-data", "postgres-data", "beat-data"}


def test_docker_compose_config_refuses_to_run_flower_without_a_password(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    with pytest.raises(RuntimeError, match="FLOWER_PASSWORD"):
        compose_config(clean_env(), env_file=empty)


def test_every_chorus_service_waits_for_healthy_redis_and_postgres_and_the_finished_migration(config):
    services = config["services"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert any(str(v).split(":")[0].endswith("-data") for v in services[name]["volumes"]), name
    for name in OURS:
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        if name != "migrate":
            assert depends["redis"] == {"condition": "service_healthy"}, name
            assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["migrate"]["command"] == ["chorus", "db", "upgrade"]


def test_there_is_one_worker_per_model_queue_plus_callbacks_and_llm_workers_use_threads(config):
    queues: dict[str, list[str]] = {}
    for name, spec in config["services"].items():
        cmd = spec.get("command") or []
        if cmd[:4] == ["celery", "-A", "worker", "worker"]:
            for queue in cmd[cmd.index("-Q") + 1].split(","):
                queues.setdefault(queue, []).append(name)
            pool = cmd[cmd.index("-P") + 1]
            assert pool == ("prefork" if name == "worker-callbacks" else "threads"), name
            assert "-E" in cmd, f"{name} sends no task events, so Flower would not see its tasks"
            assert int(cmd[cmd.index("-c") + 1]) <= 30, f"{name}: more threads than the engine's 30 connections"
    default = load_settings(models=Settings.model_fields["models"].default)
    assert sorted(queues) == sorted(all_queues(default.model_list))
    assert all(len(names) == 1 for names in queues.values())


def test_beat_and_flower_are_configured_for_production(config):
    services = config["services"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "worker", "beat"]
    schedule = services["beat"]["command"][services["beat"]["command"].index("--schedule") + 1]
    assert any(schedule.startswith(v.split(":")[1] + "/") for v in services["beat"]["volumes"])
    flower = services["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "admin:change-me"  # from .env.example
    assert not any("basic" in str(arg) for arg in flower["command"]), "the password would show in `ps`"
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_the_env_example_lists_every_variable_of_the_compose_file_and_every_setting():
    listed, text = env_example()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    assert used - listed == set(), "docker-compose.yml uses variables .env.example does not list"
    assert listed - used == set(), ".env.example lists variables docker-compose.yml never reads"
    missing = [env_name(f) for f in Settings.model_fields if not re.search(rf"\b{env_name(f)}\b", text)]
    assert missing == [], f"add these settings to .env.example (a value, or a comment saying why not): {missing}"
    for field in set(Settings.model_fields) - COMPOSE_OWNED:
        if Settings.model_fields[field].default is None:
            continue  # unset by default: a comment in .env.example is enough
        assert env_name(field) in listed, f"{env_name(field)} can be set in production: give it a line"


def test_the_compose_defaults_are_the_settings_defaults(tmp_path):
    only_password = tmp_path / "min.env"
    only_password.write_text("FLOWER_PASSWORD=x\n")
    env = compose_config(clean_env(), env_file=only_password)["services"]["worker-haiku"]["environment"]
    for field, info in Settings.model_fields.items():
        if field in COMPOSE_OWNED or info.default is None:
            continue
        value = env.get(env_name(field))
        assert value is not None, f"docker-compose.yml does not pass {env_name(field)} to the services"
        settings = Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]
        assert getattr(settings, field) == info.default, env_name(field)


def test_the_image_contains_every_module_pyproject_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = [f"{m}.py" for m in project["py-modules"]]
    packages = [p.rstrip("*") for p in project["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {part for line in dockerfile.splitlines() if line.startswith("COPY ") for part in line.split()[1:-1]}
    assert [name for name in modules + packages if name not in copied and Path(ROOT / name).exists()] == []


def test_the_services_urls_carry_the_credentials_redis_and_postgres_are_started_with(tmp_path):
    """The smoke test points the URLs at this machine's servers, so it cannot see these: check them here."""
    secrets_env = tmp_path / "secrets.env"
    secrets_env.write_text("REDIS_PASSWORD=r-secret\nPOSTGRES_PASSWORD=p-secret\nFLOWER_PASSWORD=f\n")
    services = compose_config(clean_env(), env_file=secrets_env)["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--requirepass") + 1] == "r-secret"
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "r-secret"  # its healthcheck authenticates
    pg = services["postgres"]["environment"]
    for name in OURS:
        env = services[name]["environment"]
        for key in ("CHORUS_BROKER_URL", "CHORUS_RESULT_BACKEND"):
            url = urllib.parse.urlsplit(env[key])
            assert (url.scheme, url.hostname, url.port, url.password) == ("redis", "redis", 6379, "r-secret"), key
        db = urllib.parse.urlsplit(env["CHORUS_DATABASE_URL"])
        assert (db.hostname, db.port, db.username, db.password, db.path) == (
            "postgres", 5432, pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "/" + pg["POSTGRES_DB"]
        ), name


LONG_RUNNING = [name for name in ("redis", "postgres", *OURS) if name != "migrate"]


def test_every_long_running_service_is_restarted_and_has_a_healthcheck(config):
    services = config["services"]
    for name in LONG_RUNNING:
        assert services[name].get("restart") in ("unless-stopped", "always"), name
        health = services[name].get("healthcheck") or {}
        assert health.get("test") and not health.get("disable"), f"{name} has no healthcheck"
    # The migration runs once per `up` and the services wait for it to have finished.
    assert services["migrate"]["restart"] == "no"


def test_each_worker_healthcheck_pings_its_own_node_through_the_broker(config):
    for name, spec in config["services"].items():
        cmd = spec.get("command") or []
        if cmd[:4] != ["celery", "-A", "worker", "worker"]:
            continue
        node = cmd[cmd.index("-n") + 1]
        assert node == spec["environment"]["WORKER_NAME"] + "@%h", name  # the name the check pings
        script = spec["healthcheck"]["test"][1]
        assert 'inspect ping --timeout 10 -d "$$WORKER_NAME@$$HOSTNAME"' in script, name
        timeout = int(re.search(r"timeout (\d+) celery", script).group(1))  # type: ignore[union-attr]
        assert timeout < int(spec["healthcheck"]["timeout"].rstrip("s")), name  # its own timeout acts first


FAKE_CELERY = """#!/bin/sh
# `celery inspect ping` as it answers in each case (its output and exit status, celery 5.7).
case "$FAKE_PING" in
  pong) printf '%s\\n' "->  $6: OK" "        pong" "" "1 node online."; exit 0;;
  silent) echo "Error: No nodes replied within time constraint"; exit 69;;
  down) echo "Error: Could not connect to the message broker. Reason: Error 111 connecting to redis:6379."; exit 69;;
esac
"""


@pytest.fixture
def fake_worker(tmp_path):
    """A process that looks like `celery -A worker worker` in its command line, as PID 1 would in the
    container, and a fake `celery` on PATH that answers the ping as told."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "celery").write_text(FAKE_CELERY)
    (bin_dir / "celery").chmod(0o755)
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(15)); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, "celery", "-A", "worker", "worker"])
    time.sleep(0.3)  # its SIGTERM handler is installed
    # The check keeps its count in a file named after the process's start time (field 22 of stat).
    tally = Path("/tmp/chorus-unanswered." + Path(f"/proc/{proc.pid}/stat").read_text().split(" ")[21])
    try:
        yield proc, bin_dir
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        tally.unlink(missing_ok=True)


def run_healthcheck(config: dict[str, Any], pid: int, bin_dir: Path, answer: str) -> int:
    spec = config["services"]["worker-callbacks"]
    script = spec["healthcheck"]["test"][1].replace("$$", "$")  # as Docker passes it to the shell
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_PING": answer,
           "WORKER_NAME": "callbacks", "HOSTNAME": "c0ffee", "HEALTHCHECK_PID": str(pid)}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, timeout=30, check=False).returncode


def test_the_worker_healthcheck_stops_a_worker_whose_consumer_stopped_answering(config, fake_worker):
    proc, bin_dir = fake_worker
    assert run_healthcheck(config, proc.pid, bin_dir, "pong") == 0
    assert [run_healthcheck(config, proc.pid, bin_dir, "silent") for _ in range(2)] == [1, 1]
    assert proc.poll() is None  # two unanswered pings: not yet
    assert run_healthcheck(config, proc.pid, bin_dir, "pong") == 0  # an answer starts the count again
    assert [run_healthcheck(config, proc.pid, bin_dir, "silent") for _ in range(2)] == [1, 1]
    assert proc.poll() is None
    assert run_healthcheck(config, proc.pid, bin_dir, "silent") == 1
    assert proc.wait(10) == 15  # the third in a row: SIGTERM, so the restart policy starts it again


def test_the_worker_healthcheck_leaves_the_worker_alone_while_the_broker_is_down(config, fake_worker):
    proc, bin_dir = fake_worker
    assert [run_healthcheck(config, proc.pid, bin_dir, "down") for _ in range(4)] == [1, 1, 1, 1]
    time.sleep(0.2)
    assert proc.poll() is None  # it reconnects by itself when Redis is back
