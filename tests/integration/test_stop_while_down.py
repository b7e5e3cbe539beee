"""A stopped command stops: SIGTERM to `chorus batch` while its broker (Redis) is down ends the command
within seconds, saying what it could not record and how to resume (an operator shutting a machine down,
a systemd stop during an outage). Nothing it had already sent is lost: once Redis is back, running the
same command again finishes the batch, with no beat running (the waiting command checks its own stalled
runs, `tasks.maintenance.BatchStallWatch`)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cluster import chorus_finished
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["I love this kettle, excellent and quiet.", "Terrible. It broke after a day, awful."]
MODEL = "claude-haiku-5-5"


@pytest.mark.cluster(stub_latency_ms=400, env={
    "CHORUS_DEFAULT_MODEL": MODEL, "CHORUS_RETRY_BACKOFF_S": "0.2", "CHORUS_REAP_GRACE_S": "3",
    "CHORUS_REAP_RESEND_AFTER_S": "5", "CHORUS_VISIBILITY_TIMEOUT_S": "6"})
def test_sigterm_while_redis_is_down_ends_chorus_batch_within_5_s_and_the_batch_resumes(cluster, tmp_path: Path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": TEXTS[i % 2]}) + "\n" for i in range(40)))
    command = ["batch", str(source), "--labels", "positive,negative", "--voters", "2", "--max-in-flight", "4",
               "--name", "stop-while-down", "--json"]
    stub = cluster.stub
    cluster.workers.start("stopper", f"llm.{MODEL},callbacks", pool="threads", concurrency=8, restarts=3)
    cluster.ready()
    with chorus_finished(cluster.chorus(*command, cwd=ROOT)) as proc:
        deadline = time.monotonic() + 60
        while len([r for r in stub.requests(bodies=False) if r["status"] == 200]) < 6:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the batch never got going"
            time.sleep(0.1)
        cluster.redis.stop()
        time.sleep(1.0)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, errors = proc.communicate(timeout=20)
        took = time.monotonic() - began
    assert took < 5.0, f"chorus batch took {took:.1f} s to stop after SIGTERM:\n{errors[-3000:]}"
    assert proc.returncode == 128 + signal.SIGTERM, errors[-3000:]
    assert "stopped by SIGTERM" in errors and "Traceback" not in errors, errors[-3000:]
    assert "run the same command again" in " ".join(errors.lower().split()), errors[-3000:]

    cluster.redis.start()
    with chorus_finished(cluster.chorus(*command, "--timeout", "120", cwd=ROOT)) as again:
        again_out, again_err = again.communicate(timeout=180)
    log = stub.requests(bodies=False)
    cluster.workers.stop_all()
    assert again.returncode in (0, 3), again_err[-3000:]  # 3: a tie between two voters is legitimate
    summary = json.loads(again_out)
    assert summary["counts"]["total"] == 40 and summary["counts"]["failed"] == 0, summary["counts"]
    runs = sorted({e["run"] for e in log if e.get("run")})
    rows = cluster.outcome_rows(runs)
    # What the first command had sent was not lost: its runs ended with every slot answered, and no slot
    # was called more often than its stored attempts.
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == []
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert {key: n for key, n in calls.items() if n > attempts_of(rows)[key]} == {}


def attempts_of(rows: list[dict]) -> dict[tuple[str, int], int]:
    return {(r["run"], r["slot"]): r["attempts"] for r in rows}
