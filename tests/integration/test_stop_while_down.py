"""A stopped command stops: SIGTERM to `chorus batch` while its broker (Redis) is down ends the command
within seconds, saying what it could not record and how to resume (an operator shutting a machine down,
a systemd stop during an outage). Nothing it had already sent is lost: once Redis is back, running the
same command again finishes the batch, with no beat running (the waiting command checks its own stalled
runs, `tasks.maintenance.BatchStallWatch`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from chorus.embedded import WorkerProcess
from chorus.testing import outcome_rows, private_redis, worker_env
from chorus.testing.stub.testing import running_stub
from tests.conftest import PG_URL, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["I love this kettle, excellent and quiet.", "Terrible. It broke after a day, awful."]


@pytest.fixture
def schema(postgres: str) -> str:
    from models import ensure_schema

    ensure_schema(PG_URL)
    return PG_URL


def test_sigterm_while_redis_is_down_ends_chorus_batch_within_5_s_and_the_batch_resumes(tmp_path: Path, schema):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXTS[i % 2]}) + "\n" for i in range(40)))
    command = [sys.executable, "-m", "chorus.cli", "batch", str(source), "--labels", "positive,negative",
               "--voters", "2", "--max-in-flight", "4", "--name", "stop-while-down", "--json"]
    with private_redis(tmp_path / "redis") as redis, running_stub(latency_ms=400) as stub:
        env = worker_env(broker_url=redis.url, database_url=schema, data_dir=tmp_path, stub_url=stub.base_url,
                         CHORUS_RETRY_BACKOFF_S="0.2", CHORUS_REAP_GRACE_S="3", CHORUS_REAP_RESEND_AFTER_S="5",
                         CHORUS_VISIBILITY_TIMEOUT_S="6")
        worker = WorkerProcess(["llm.claude-haiku-5-5", "callbacks"], log_dir=tmp_path, name="stopper",
                               pool="threads", concurrency=8, env=env, restarts=3)
        worker.start().wait_ready()
        try:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            try:
                deadline = time.monotonic() + 60
                while len([r for r in stub.requests(bodies=False) if r["status"] == 200]) < 6:
                    assert proc.poll() is None, proc.communicate()
                    assert time.monotonic() < deadline, "the batch never got going"
                    time.sleep(0.1)
                redis.stop()
                time.sleep(1.0)
                began = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                out, errors = proc.communicate(timeout=20)
                took = time.monotonic() - began
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert took < 5.0, f"chorus batch took {took:.1f} s to stop after SIGTERM:\n{errors[-3000:]}"
            assert proc.returncode == 128 + signal.SIGTERM, errors[-3000:]
            assert "stopped by SIGTERM" in errors and "Traceback" not in errors, errors[-3000:]
            assert "run the same command again" in " ".join(errors.lower().split()), errors[-3000:]

            redis.start()
            again = subprocess.run([*command, "--timeout", "120"], cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=180)
            log = stub.requests(bodies=False)
        finally:
            worker.stop()
    assert again.returncode in (0, 3), again.stderr[-3000:]  # 3: a tie between two voters is legitimate
    summary = json.loads(again.stdout)
    assert summary["counts"]["total"] == 40 and summary["counts"]["failed"] == 0, summary["counts"]
    runs = sorted({e["run"] for e in log if e.get("run")})
    rows = outcome_rows(runs, schema)
    # What the first command had sent was not lost: its runs ended with every slot answered, and no slot
    # was called more often than its stored attempts.
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == []
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert {key: n for key, n in calls.items() if n > attempts_of(rows)[key]} == {}


def attempts_of(rows: list[dict]) -> dict[tuple[str, int], int]:
    return {(r["run"], r["slot"]): r["attempts"] for r in rows}
