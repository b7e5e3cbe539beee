"""A batch whose call messages were lost with the broker, on a cluster with no beat: `chorus batch`,
waiting for its own runs, sees the batch stop moving and runs the reaper's check for them, so the lost
calls are sent again and the command ends (before issue 22 it waited until its --timeout: only beat's
reaper re-sent lost messages, and a resumed batch could wait for ever).

Its own cluster: a private redis-server, the stub, real worker processes (none runs beat), and the
session's PostgreSQL database.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import redis

from tests.cluster import LABELS, QUEUES, assert_every_run_agrees_with_its_slots, chorus_finished, write_jsonl
from tests.conftest import ROOT

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


@pytest.mark.cluster(stub_latency_ms=50, env={"CHORUS_REAP_GRACE_S": "2", "CHORUS_REAP_RESEND_AFTER_S": "3",
                                              "CHORUS_REAP_AFTER_S": "600"})
def test_a_batch_whose_call_messages_were_lost_ends_without_beat(cluster, tmp_path, schema):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    redis_url = cluster.redis.url
    cluster.start_callbacks()  # dispatch and tallies; no beat
    cluster.ready()
    with chorus_finished(cluster.chorus("batch", str(source), "--labels", LABELS, "--voters", str(VOTERS), "--name",
                                        f"stall-{time.time_ns()}", "--timeout", "90", "--json", cwd=ROOT)) as batch:
        deadline = time.monotonic() + 60
        while queued_calls(redis_url) < DOCS * VOTERS:
            assert batch.poll() is None, batch.communicate()
            assert time.monotonic() < deadline, "the calls were never queued"
            time.sleep(0.05)
        assert lose_queued_calls(redis_url) == DOCS * VOTERS
        cluster.start_llm(concurrency=4)
        cluster.ready()
        began = time.monotonic()
        out, err = batch.communicate(timeout=120)
        took = time.monotonic() - began
    cluster.workers.stop_all()
    log = cluster.stub.requests(bodies=False)

    assert batch.returncode in (0, 3), err[-3000:]  # ended, no document failed (3: a tie is legitimate)
    assert took < 60, f"the batch took {took:.0f} s to end after its calls were lost"
    summary = json.loads(out)
    assert summary["counts"]["failed"] == 0 and summary["counts"]["total"] == DOCS, summary["counts"]
    run_ids = sorted({e["run"] for e in log if e.get("run")})
    assert len(run_ids) == DOCS
    rows = cluster.outcome_rows(run_ids)
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == []
    assert_every_run_agrees_with_its_slots(run_ids, schema)
    # Each lost call was sent again exactly once: one call, one attempt per slot.
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert dict(calls) == {(r["run"], r["slot"]): 1 for r in rows}
    assert dict(calls) == {(r["run"], r["slot"]): r["attempts"] for r in rows}
