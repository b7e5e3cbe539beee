"""The embedded worker boots while its command still works (issue 25: "slowest voter 120 ms + overhead
2734 ms", the overhead being the worker's boot after the submit), and a worker launched early takes no
message before the stale work is swept.

Real `chorus` processes and real workers on the filesystem broker; the order of events is recorded by
wrapping the functions the command calls, never by timing them (times are in bench/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection, Queue

import chorus.embedded.transport as transport
from chorus.embedded import embedded_worker
from settings import load_settings
from tests.conftest import clean_env, pids_matching

ROOT = Path(__file__).resolve().parents[3]

# Runs the CLI with the worker's start and stop, the plan and the submit recorded in order in EVENTS.
RECORDING = """
import json, os, sys
import chorus.embedded as embedded
import chorus.plans as plans
import chorus.vote as vote
events = []

def record(owner, name, label):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        events.append(label)
        return real(*args, **kwargs)
    setattr(owner, name, wrapped)

record(embedded.WorkerProcess, "start", "worker started")
record(embedded.WorkerProcess, "open_gate", "gate opened")
record(embedded.WorkerProcess, "stop", "worker stopped")
record(vote, "plan_vote", "planned")
record(plans, "submit", "submitted")
from chorus.cli import app
try:
    app(sys.argv[1:])
finally:
    open(os.environ["EVENTS"], "w").write(json.dumps(events))
"""


def recorded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    events = tmp_path / "events.json"
    env = clean_env(CHORUS_DATA_DIR=str(tmp_path / "data"), EVENTS=str(events), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", RECORDING, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    return proc, json.loads(events.read_text())


@pytest.mark.integration
def test_a_vote_launches_its_worker_before_it_plans_and_lets_it_take_work_only_after_the_sweep(tmp_path):
    proc, events = recorded(tmp_path, "vote", "The kettle is great.", "--labels", "positive,negative", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "succeeded"
    # One worker: the one launched early is the one the command used (not a second one after the plan).
    assert events == ["worker started", "planned", "gate opened", "submitted", "worker stopped"]
    assert pids_matching(str(tmp_path / "data")) == []


@pytest.mark.integration
def test_a_command_that_ends_before_sending_stops_the_worker_it_launched(tmp_path):
    proc, events = recorded(tmp_path, "vote", "The kettle is great.", "--labels", "positive,negative", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "nothing was sent" in proc.stdout
    assert events == ["worker started", "planned", "worker stopped"]
    assert pids_matching(str(tmp_path / "data")) == []


@pytest.mark.integration  # the command, in a process of its own
def test_the_help_of_a_work_command_launches_no_worker(tmp_path):
    proc, events = recorded(tmp_path, "vote", "--help")
    assert proc.returncode == 0, proc.stderr
    assert events == []


def test_a_gated_consumer_takes_no_message_until_its_gate_file_exists(tmp_path, monkeypatch):
    gate = tmp_path / "worker.gate"
    monkeypatch.setattr(transport, "_gate", str(gate))
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
               "control_folder": str(tmp_path / "control"), "polling_interval": 0.001}
    with Connection(transport=transport.Transport, transport_options=options) as conn:
        queue = conn.SimpleQueue(Queue("callbacks", routing_key="callbacks"))
        queue.put({"stale": True})
        with pytest.raises(Empty):
            queue.get(block=True, timeout=0.3)
        assert [p.name for p in tmp_path.glob("*.msg")]  # still there, for the sweep to judge
        gate.touch()
        assert queue.get(block=True, timeout=5).payload == {"stale": True}


def test_an_early_worker_is_taken_over_only_if_it_runs_as_the_command_would_start_it(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    gated = embedded_worker(settings, gated=True)
    assert gated.same_as(embedded_worker(settings))
    assert not gated.same_as(embedded_worker(settings.model_copy(update={"embedded_concurrency": 3})))
    assert gated.gate_path is not None and embedded_worker(settings).gate_path is None


@pytest.mark.integration  # celery, in a process of its own
@pytest.mark.parametrize("args", [["--version"], ["-A", "no_such_module_anywhere", "worker"], ["no-such-command"]])
def test_the_embedded_launcher_ends_with_the_code_and_output_celery_gives(args, tmp_path):
    """`chorus.embedded.launch` skips only Python's teardown after the exit handlers (the embedded worker's
    stop took a second more for it): what Celery prints and its exit code are the same as `celery`'s."""
    def run(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=clean_env(), capture_output=True,
                              text=True, timeout=120)

    ours, celery = run("chorus.embedded.launch"), run("celery")
    assert (ours.returncode, ours.stdout) == (celery.returncode, celery.stdout)
    assert ours.stderr.splitlines()[-1:] == celery.stderr.splitlines()[-1:]
