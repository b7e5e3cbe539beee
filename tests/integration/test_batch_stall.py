"""A batch whose call messages were lost with the broker, on a cluster with no beat: `chorus batch`,
waiting for its own runs, sees the batch stop moving and runs the reaper's check for them, so the lost
calls are sent again and the command ends (before issue 22 it waited until its --timeout: only beat's
reaper re-sent lost messages, and a resumed batch could wait for ever).

Its own cluster: a private redis-server, the stub, real worker processes (none runs beat), and the
session's PostgreSQL database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis

from chorus.testing import outcome_rows, private_redis
from chorus.testing.stub.testing import running_stub
from tests.conftest import ROOT
from tests.integration.test_reliability import (  # noqa: F401  (a fixture)
    LABELS,
    QUEUES,
    assert_every_run_agrees_with_its_slots,
    cluster_env,
    documents,
    fleet,
    schema,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS, VOTERS = 6, 3


def queued_calls(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.llen(key)) for key in client.keys(f"{QUEUES}*"))
    finally:
        client.close()


def lose_queued_calls(redis_url: str) -> int:
    """Delete every queued call message: what a broker that lost them (kombu #305, an outage without
    persistence) leaves behind. How many."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(f"{QUEUES}*")
        lost = sum(int(client.llen(key)) for key in keys)
        if keys:
            client.delete(*keys)
        return lost
    finally:
        client.close()


def test_a_batch_whose_call_messages_were_lost_ends_without_beat(tmp_path, schema):  # noqa: F811
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(documents(DOCS))))
    with private_redis(tmp_path / "redis") as redis_server, running_stub(latency_ms=50) as stub:
        env = cluster_env(broker_url=redis_server.url, database_url=schema, data_dir=tmp_path, stub_url=stub.base_url,
                         CHORUS_REAP_GRACE_S="2", CHORUS_REAP_RESEND_AFTER_S="3", CHORUS_REAP_AFTER_S="600")
        with fleet(tmp_path, env) as workers:
            workers.start("callbacks", "callbacks", pool="solo", concurrency=1)  # dispatch and tallies; no beat
            workers.ready()
            batch = subprocess.Popen([sys.executable, "-m", "chorus.cli", "batch", str(source), "--labels", LABELS,
                                      "--voters", str(VOTERS), "--name", f"stall-{time.time_ns()}", "--timeout", "90",
                                      "--json"],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 60
                while queued_calls(redis_server.url) < DOCS * VOTERS:
                    assert batch.poll() is None, batch.communicate()
                    assert time.monotonic() < deadline, "the calls were never queued"
                    time.sleep(0.05)
                assert lose_queued_calls(redis_server.url) == DOCS * VOTERS
                workers.start("llm", concurrency=4)
                workers.ready()
                began = time.monotonic()
                out, err = batch.communicate(timeout=120)
                took = time.monotonic() - began
            finally:
                if batch.poll() is None:  # a failed test never leaves its batch command running
                    batch.kill()
                    batch.communicate()
        log = stub.requests(bodies=False)

    assert batch.returncode in (0, 3), err[-3000:]  # ended, no document failed (3: a tie is legitimate)
    assert took < 60, f"the batch took {took:.0f} s to end after its calls were lost"
    summary = json.loads(out)
    assert summary["counts"]["failed"] == 0 and summary["counts"]["total"] == DOCS, summary["counts"]
    run_ids = sorted({e["run"] for e in log if e.get("run")})
    assert len(run_ids) == DOCS
    rows = outcome_rows(run_ids, schema)
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == []
    assert_every_run_agrees_with_its_slots(run_ids, schema)
    # Each lost call was sent again exactly once: one call, one attempt per slot.
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert dict(calls) == {(r["run"], r["slot"]): 1 for r in rows}
    assert dict(calls) == {(r["run"], r["slot"]): r["attempts"] for r in rows}
