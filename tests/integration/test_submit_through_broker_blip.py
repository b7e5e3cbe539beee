"""The broker down for a few seconds while `chorus batch` is still submitting: the submitter waits
for it (for a bounded time) instead of failing the documents it was sending, and a run that could
not be sent never keeps pending slots.

Its own cluster: a private redis-server (stopped and started again mid-submission), a stub at
100 ms, real worker processes (the callbacks worker runs beat, so the reaper runs), and the
session's PostgreSQL database.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import psycopg
import pytest

from tests.cluster import LABELS, assert_every_run_agrees_with_its_slots, chorus_finished, write_jsonl
from tests.conftest import PG_URL, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS, VOTERS = 30, 3


def document_errors(batch_name: str) -> list[str]:
    with psycopg.connect(PG_URL.replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT d.error FROM document d JOIN batch b ON b.id = d.batch_id "
                            "WHERE b.name = %s AND d.error IS NOT NULL", (batch_name,)).fetchall()
    return [r[0] for r in rows]


@pytest.mark.cluster(stub_latency_ms=100, env={"CHORUS_VISIBILITY_TIMEOUT_S": "10", "CHORUS_REAP_INTERVAL_S": "2",
                                               "CHORUS_REAP_GRACE_S": "3", "CHORUS_REAP_AFTER_S": "120"})
def test_a_broker_outage_while_submitting_fails_no_document(cluster, tmp_path, schema):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    name = f"blip-{time.time_ns()}"
    stub = cluster.stub
    # Supervised: a worker can die on the Redis restart (docs/decisions.md); that is not what this tests.
    cluster.start_llm(pool="prefork", concurrency=4, restarts=3)
    cluster.start_callbacks(beat=True, restarts=3)
    cluster.ready()
    # Few runs in flight at once, so the submitter is still sending when the broker goes away.
    with chorus_finished(cluster.chorus("batch", str(source), "--pattern", "vote", "--labels", LABELS, "--voters",
                                        str(VOTERS), "--max-in-flight", "2", "--name", name, "--timeout", "150",
                                        "--json", cwd=ROOT)) as batch:
        deadline = time.monotonic() + 60
        while len(stub.requests()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        calls_before = len(stub.requests())
        cluster.redis.stop()
        time.sleep(3.0)
        cluster.redis.start()
        out, err = batch.communicate(timeout=240)
    cluster.workers.stop_all()
    log = stub.requests()

    assert 0 < calls_before < DOCS * VOTERS  # the outage came mid-batch
    # The command got through and waited for the end, and no document failed: exit 0, or 3 when a vote
    # was legitimately undecided (a tie among answers), never 1 (a failed document) or 4 (a timeout).
    assert batch.returncode in (0, 3), err[-3000:]
    summary = json.loads(out)
    assert summary["read"] == DOCS and summary["rejected"] == 0 and summary["sent"] == DOCS
    assert summary["counts"]["failed"] == 0 and summary["counts"]["total"] == DOCS, summary["counts"]
    assert document_errors(name) == []  # nothing failed for the outage, in sending or after
    run_ids = sorted({e["run"] for e in log if e.get("run")})
    assert len(run_ids) == DOCS
    rows = cluster.outcome_rows(run_ids)
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    # Every slot was answered, called exactly as often as its stored attempts say.
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == []
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert dict(calls) == {(r["run"], r["slot"]): r["attempts"] for r in rows}
