"""Embedded mode never blocks on stale work: an interrupted command says what it left and how to cancel
or resume it, a killed command leaves no worker running, and the README's Python snippet works as shown."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirunner import chorus, command
from tests.conftest import ROOT, clean_env, pids_matching, user_store

pytestmark = pytest.mark.integration


def write_docs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Review {i}: I love it, excellent and wonderful."})
                            + "\n" for i in range(n)))
    return path


def start_batch(cwd: Path, docs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command("batch", str(docs), "--pattern", "vote", "--labels", "positive,negative",
                                    "--voters", "5", "--name", "big"),
                            cwd=cwd, env=clean_env(COLUMNS="200"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def wait_until_working(cwd: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until the embedded worker has run some calls (its log names them)."""
    log = user_store(cwd) / "worker.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if log.exists() and log.read_text(errors="replace").count("chorus.vote.call") >= 20:
            return
        time.sleep(0.1)
    pytest.fail("the batch's worker ran no call in time")


def no_worker_within(cwd: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while pids_matching(str(cwd)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids_matching(str(cwd))


def timed_vote(cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.monotonic()
    proc = chorus("vote", "I love this kettle.", "--labels", "positive,negative", "--voters", "3", "--json", cwd=cwd)
    return time.monotonic() - began, proc


def test_a_batch_stopped_by_sigterm_says_how_to_resume_stops_its_worker_and_the_next_vote_does_not_wait(tmp_path):
    baseline_s, baseline = timed_vote(tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    proc = start_batch(tmp_path, write_docs(tmp_path / "docs.jsonl", 400))
    wait_until_working(tmp_path, proc)

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    assert "Run the same command again to resume it" in stderr and "`chorus cancel big`" in stderr
    assert "Traceback" not in stderr
    assert no_worker_within(tmp_path, 5) == []
    assert list((user_store(tmp_path) / "broker" / "queue").glob("*.msg")), "the stopped batch left work queued"

    after_s, after = timed_vote(tmp_path)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["status"] == "succeeded"
    assert re.search(r"cancelled \d+ run\(s\) left unfinished by a command that ended", after.stderr)
    assert after_s < baseline_s + 5, (baseline_s, after_s)
    assert list((user_store(tmp_path) / "broker" / "queue").glob("*.msg")) == []
    assert no_worker_within(tmp_path, 5) == []


def test_a_batch_command_killed_with_sigkill_leaves_no_worker_running(tmp_path):
    proc = start_batch(tmp_path, write_docs(tmp_path / "docs.jsonl", 400))
    wait_until_working(tmp_path, proc)
    assert pids_matching(str(tmp_path)), "the embedded worker should be running"

    proc.kill()
    proc.communicate(timeout=10)

    assert no_worker_within(tmp_path, 5) == []


def readme_python_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README.md's Python API section has no ```python block"
    return found.group(1)


def test_the_readmes_python_snippet_runs_as_written_in_embedded_mode_and_leaves_nothing_running(tmp_path):
    (tmp_path / "snippet.py").write_text(readme_python_snippet())

    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert proc.returncode == 0, proc.stderr
    status, answer, _ = proc.stdout.splitlines()[0].split(" ")
    assert status == "succeeded" and answer in {"positive", "negative", "neutral"}
    assert len(proc.stdout.splitlines()) == 1 + 5  # one line per voter
    assert no_worker_within(tmp_path, 5) == []


def test_a_vote_estimated_above_its_budget_is_refused_before_anything_is_sent(tmp_path):
    proc = chorus("vote", "I love this kettle.", "--labels", "positive,negative", "--voters", "3",
                  "--max-cost", "0.000001", cwd=tmp_path)

    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert re.search(r"estimated at \$0\.\d{4} .* above the budget of \$0\.0000", message), message
    assert "Traceback" not in proc.stderr
    assert not (user_store(tmp_path) / "broker").exists() or not list(user_store(tmp_path).rglob("*.msg"))
    assert pids_matching(str(tmp_path)) == []
