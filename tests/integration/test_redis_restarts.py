"""Redis restarted five times in a row under load: the workers survive it (or are started again by
chorus's supervision), every run ends with every slot answered, and the provider is called exactly as
often as the stored attempts say.

The set-up follows the outage that killed a worker (issue 15): prefork LLM workers and a prefork
callbacks worker running beat, the stub answering in 300 ms, a batch in flight. With celery 5.7 /
kombu 5.7 a worker sometimes exits on the lost connection with `Unrecoverable error:
AttributeError("'NoneType' object has no attribute 'hostname'")` (a late ack on the closed
connection's channel, see docs/operations.md); a supervised `WorkerProcess` starts it again.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from tests.cluster import TERMINAL, assert_every_run_agrees_with_its_slots, documents
from tests.conftest import pids_matching

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESTARTS = 5
DOWN_S = 1.0  # how long Redis stays down each time
UP_S = 2.5  # how long it runs between two restarts: the workers reconnect and work


# A task whose ack was lost with the connection is redelivered after the visibility timeout; the call
# timeout stays well inside it. The reaper (beat, every 2 s) tallies a run whose callback was lost and
# re-sends a slot whose message was lost.
@pytest.mark.cluster(stub_latency_ms=300, env={
    "CHORUS_VISIBILITY_TIMEOUT_S": "15", "CHORUS_CALL_TIMEOUT_S": "4", "CHORUS_RATE_LIMIT_MAX_WAIT_S": "2",
    "CHORUS_RETRY_BACKOFF_S": "0.1", "CHORUS_REAP_INTERVAL_S": "2", "CHORUS_REAP_GRACE_S": "3",
    "CHORUS_REAP_RESEND_AFTER_S": "20", "CHORUS_REAP_AFTER_S": "60"})
def test_five_redis_restarts_under_load_leave_no_worker_dead_no_run_open_and_no_extra_call(cluster, tmp_path, schema):
    started = time.monotonic()
    # The cluster: two prefork LLM workers and a prefork callbacks worker that runs beat (the
    # reaper), each restarted by chorus if it dies (at most 5 times a minute).
    for name in ("llm-a", "llm-b"):
        cluster.start_llm(name, pool="prefork", concurrency=4, restarts=RESTARTS)
    cluster.start_callbacks(beat=True, pool="prefork", concurrency=2, restarts=RESTARTS)
    cluster.ready()
    workers = cluster.workers.procs
    run_ids = cluster.submit_votes(documents(90), voters=3)
    done_before = []
    for _ in range(RESTARTS):
        time.sleep(UP_S)
        done_before.append(sum(s in TERMINAL for s in cluster.wait_terminal(run_ids, timeout=0).values()))
        cluster.redis.stop()
        time.sleep(DOWN_S)
        cluster.redis.start()
    statuses = cluster.wait_terminal(run_ids, timeout=75)
    time.sleep(0.5)  # a call still in flight (there should be none) is logged when it answers
    log = cluster.stub.requests()
    # No worker is left dead: each is alive now, whether it survived or was started again.
    for proc in workers.values():
        proc.check()
    alive = {name: proc.proc is not None and proc.proc.poll() is None for name, proc in workers.items()}
    restarts = {name: [(r.returncode, r.reason) for r in proc.restarts] for name, proc in workers.items()}
    cluster.stop()
    elapsed = time.monotonic() - started

    assert alive == dict.fromkeys(workers, True), restarts
    # The outages hit the batch in the middle, not before it started or after it ended.
    assert done_before[0] < len(run_ids), done_before
    open_runs = {r: s for r, s in statuses.items() if s not in TERMINAL}
    assert len(statuses) == len(run_ids) and not open_runs, (Counter(statuses.values()), restarts)
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots

    rows = cluster.outcome_rows(run_ids)
    assert Counter(r["run"] for r in rows) == dict.fromkeys(run_ids, 3)  # none lost, none duplicated
    assert {r["status"] for r in rows} <= {"succeeded", "failed"}
    assert all(r["error"] for r in rows if r["status"] == "failed")
    # No extra call, and no attempt without its call: each slot was called exactly as often as its stored
    # attempts say (a call whose ack was lost with a connection is redelivered, finds its slot answered
    # and calls nobody), and the restarts cost no answer (a slot whose message was lost is sent again).
    calls: dict[tuple[str, int], int] = defaultdict(int)
    for entry in log:
        if entry.get("run"):
            calls[(entry["run"], int(entry["slot"]))] += 1
    attempts = {(r["run"], r["slot"]): r["attempts"] for r in rows}
    differ = {key: (calls.get(key, 0), n) for key, n in attempts.items() if calls.get(key, 0) != n}
    assert dict(calls) == attempts, differ
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == [], restarts
    assert pids_matching(str(tmp_path)) == []  # every worker, pool child and server stopped
    assert elapsed < 120
    print(f"redis restarts: {RESTARTS}; worker restarts: {restarts}; {elapsed:.0f} s")
