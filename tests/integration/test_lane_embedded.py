"""The batch lane on one machine: `chorus batch --lane batch` in embedded mode (no broker, no beat), in a
clean folder, with the real anthropic SDK pointed at a stub's Message Batches API. The command itself
collects and polls the lane while it waits; stopped, it leaves its provider batches recorded, and the
same command resumes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chorus.testing.stub.testing import StubHandle, running_stub
from tests import clirunner
from tests.clirunner import command
from tests.conftest import clean_env, pids_matching
from workflows.cost import TokenUsage, cost_of

pytestmark = pytest.mark.integration
LABELS = "positive,negative"
TEXTS = ["I love this kettle, excellent and quiet.", "Terrible. It broke after a day, awful.",
         "Great value, I recommend it warmly.", "Bad smell and poor build, a waste of money."]


@pytest.fixture(scope="module")
def lane_stub() -> Iterator[StubHandle]:
    with running_stub() as handle:
        yield handle


@pytest.fixture
def stub(lane_stub: StubHandle) -> Iterator[StubHandle]:
    lane_stub.reset()
    try:
        yield lane_stub
    finally:
        lane_stub.reset()


def documents(folder: Path, n: int) -> Path:
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": TEXTS[i % len(TEXTS)]}) + "\n" for i in range(n)))
    return path


def lane_env(stub: StubHandle) -> dict[str, str]:
    return clean_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=stub.base_url, COLUMNS="200",
                     CHORUS_LANE_COLLECT_S="0.5", CHORUS_LANE_POLL_S="0.5")


def chorus(stub: StubHandle, *args: str, cwd: Path, timeout: float = 90) -> clirunner.CliResult:
    return clirunner.chorus(*args, cwd=cwd, env=lane_env(stub), timeout=timeout)


def batch_args(docs: Path) -> list[str]:
    return ["batch", str(docs), "--lane", "batch", "--labels", LABELS, "--voters", "2", "--json"]


def lane_calls(stub: StubHandle) -> list[dict]:
    return [e for e in stub.requests(bodies=False) if e.get("batch")]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def exported(stub: StubHandle, name: str, cwd: Path) -> list[dict]:
    proc = chorus(stub, "export", name, "--format", "jsonl", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_a_lane_batch_in_embedded_mode_runs_to_the_end_through_the_batches_api_at_half_price(stub, tmp_path):
    stub.batch_config(delay_ms=500)
    proc = chorus(stub, *batch_args(documents(tmp_path, 4)), "--name", "lane-here", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "embedded mode" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["lane"] == "batch" and summary["open_provider_batches"] == 0
    assert summary["counts"]["succeeded"] == summary["counts"]["total"] == 4

    calls = lane_calls(stub)
    assert [e for e in stub.requests(bodies=False) if not e.get("batch")] == []  # nothing went synchronously
    per_slot = Counter((e["run"], e["slot"]) for e in calls)
    assert len(per_slot) == 8 and set(per_slot.values()) == {1}
    assert stub.batches() and all(b["processing_status"] == "ended" for b in stub.batches())

    rows = exported(stub, "lane-here", tmp_path)
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    # The stub's own usage of each call at the synchronous price, halved, is what chorus reports.
    sync = sum(cost_of(e["model"], TokenUsage(e["input_tokens"], e["output_tokens"], e["cache_write_tokens"],
                                               e["cache_read_tokens"])).total_usd for e in calls)
    assert sync > 0
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sync * 0.5, rel=1e-3)
    assert pids_matching(str(tmp_path)) == []


def start(stub: StubHandle, docs: Path, cwd: Path, name: str) -> subprocess.Popen[str]:
    log = (cwd / f"{name}.stderr").open("w")
    try:
        return subprocess.Popen(command(*batch_args(docs), "--name", name), cwd=cwd, env=lane_env(stub),
                                stdout=subprocess.PIPE, stderr=log, text=True, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def stop_once_a_provider_batch_is_open(stub: StubHandle, proc: subprocess.Popen[str], cwd: Path,
                                       name: str) -> str:
    """SIGTERM the command once the stub holds a provider batch in progress; its stderr."""
    try:
        wait_until(lambda: any(b["processing_status"] == "in_progress" for b in stub.batches()) or
                   proc.poll() is not None, 60, "a provider batch")
        assert proc.poll() is None, (cwd / f"{name}.stderr").read_text()
        time.sleep(0.5)  # the collector records the batch it just created (a stop waits for it anyway)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 128 + signal.SIGTERM, (cwd / f"{name}.stderr").read_text()
    return (cwd / f"{name}.stderr").read_text()


@pytest.mark.slow
def test_a_stopped_lane_batch_leaves_its_provider_batch_recorded_and_the_same_command_resumes_it(stub, tmp_path):
    stub.batch_config(delay_ms=4000)
    docs = documents(tmp_path, 4)
    stopped = stop_once_a_provider_batch_is_open(stub, start(stub, docs, tmp_path, "lane-stop"), tmp_path,
                                                 "lane-stop")
    assert "stopped by SIGTERM" in stopped and "provider batches already sent stay recorded" in stopped, stopped
    assert pids_matching(str(tmp_path)) == []

    resumed = chorus(stub, *batch_args(docs), "--name", "lane-stop", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["sent"] == 0 and summary["already_running"] == 4, summary
    assert summary["counts"]["succeeded"] == summary["counts"]["total"] == 4
    assert "cancelled" not in resumed.stderr  # the sweep left the sent lane runs alone

    per_slot = Counter((e["run"], e["slot"]) for e in lane_calls(stub))
    assert len(per_slot) == 8 and set(per_slot.values()) == {1}, per_slot
    assert len(stub.batches()) == 1  # collected, not sent again


@pytest.mark.slow
def test_cancelling_a_stopped_lane_batch_in_embedded_mode_cancels_its_provider_batch(stub, tmp_path):
    stub.batch_config(delay_ms=30_000)
    docs = documents(tmp_path, 3)
    stop_once_a_provider_batch_is_open(stub, start(stub, docs, tmp_path, "lane-cancel"), tmp_path, "lane-cancel")

    done = chorus(stub, "cancel", "lane-cancel", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cancelled"] == 3
    wait_until(lambda: all(b["processing_status"] in ("canceling", "ended") for b in stub.batches()), 10,
               "the provider batch to be cancelled")
    assert len(stub.batches()) == 1
    assert lane_calls(stub) == []  # nothing was processed, nothing paid
