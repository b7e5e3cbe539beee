"""PostgreSQL terminating chorus's connections mid-batch, three times: a transient database error is
tried again in place (the call task, the tally, the submitter), so no slot fails after the
provider answered it, no run waits for the reaper, and the submitting command keeps going.

Its own cluster: a private redis-server, a stub at 300 ms, real worker processes, the session's
PostgreSQL database, and `chorus batch` as a user runs it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import psycopg
import pytest

from tests.cluster import LABELS, assert_every_run_agrees_with_its_slots, chorus_finished, write_jsonl
from tests.conftest import PG_DB, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS, VOTERS = 40, 3
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def terminate_chorus_connections() -> int:
    """pg_terminate_backend on every connection to the session's database but this one."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (PG_DB,)).fetchall()
    return sum(1 for (ok,) in rows if ok)


@pytest.mark.cluster(stub_latency_ms=300, env={"CHORUS_REAP_AFTER_S": "600"})
def test_terminated_database_connections_mid_batch_fail_no_paid_slot_and_no_run(cluster, tmp_path, schema):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    stub = cluster.stub
    cluster.start_llm(pool="prefork", concurrency=4)
    cluster.start_callbacks()
    cluster.ready()
    terminated: list[int] = []
    calls_at_blip: list[int] = []

    def blips() -> None:
        deadline = time.monotonic() + 60
        while len(stub.requests()) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)  # the batch is under way
        for _ in range(3):
            calls_at_blip.append(len(stub.requests()))
            terminated.append(terminate_chorus_connections())
            time.sleep(1.5)

    with chorus_finished(cluster.chorus("batch", str(source), "--pattern", "vote", "--labels", LABELS, "--voters",
                                        str(VOTERS), "--max-in-flight", "8", "--timeout", "180", "--json",
                                        cwd=ROOT)) as batch:
        blipper = threading.Thread(target=blips)
        blipper.start()
        try:
            out, err = batch.communicate(timeout=240)
        finally:
            blipper.join()
    cluster.workers.stop_all()
    log = stub.requests()

    assert len(terminated) == 3 and all(n > 0 for n in terminated), terminated  # the blips hit live connections
    assert calls_at_blip[0] > 0 and calls_at_blip[-1] < DOCS * VOTERS, calls_at_blip  # ... while calls ran
    assert batch.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["counts"] == {"total": DOCS, "succeeded": DOCS, "partial": 0, "failed": 0, "cancelled": 0,
                                 "running": 0, "pending": 0}, summary
    run_ids = sorted({e["run"] for e in log if e.get("run")})
    rows = cluster.outcome_rows(run_ids)
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    assert len(rows) == DOCS * VOTERS
    assert [r for r in rows if r["status"] != "succeeded"] == []  # no answer thrown away for a failed write
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert {k: n for k, n in calls.items() if n != 1} == {}  # and none paid for twice
