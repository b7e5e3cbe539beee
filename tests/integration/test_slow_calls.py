"""A call that outlives the broker's visibility timeout: Redis redelivers its task while the first
worker is still calling. The slot's lease keeps the copy from calling the provider again, and once
the run is tallied no copy claims one of its slots.

Its own cluster: a private redis-server with a 4 s visibility timeout, a stub that answers after
9 s, real worker processes and the session's PostgreSQL database.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.cluster import assert_every_run_agrees_with_its_slots, documents

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VOTERS = 3


@pytest.mark.cluster(stub_latency_ms=9000, env={"CHORUS_VISIBILITY_TIMEOUT_S": "4", "CHORUS_CALL_TIMEOUT_S": "20",
                                                "CHORUS_REAP_AFTER_S": "600"})
def test_a_call_longer_than_the_visibility_timeout_is_made_once_and_a_tallied_run_stays_closed(cluster, schema):
    # More processes than calls: a redelivered copy finds a free process while the first still calls.
    cluster.start_llm(pool="prefork", concurrency=8)
    cluster.start_callbacks()
    cluster.ready()
    run_ids = cluster.submit_votes(documents(1), voters=VOTERS)
    statuses = cluster.wait_terminal(run_ids, timeout=90)
    settled = cluster.outcome_rows(run_ids)
    time.sleep(8)  # copies still in flight get their turn; none may claim a slot of the tallied run
    later = cluster.outcome_rows(run_ids)
    cluster.workers.stop_all()
    log = cluster.stub.requests()

    assert statuses == dict.fromkeys(run_ids, "succeeded")
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert calls == Counter({(run_ids[0], slot): 1 for slot in range(VOTERS)}), calls
    assert sorted(settled, key=lambda r: r["slot"]) == sorted(later, key=lambda r: r["slot"])
    assert all(r["attempts"] == 1 and r["status"] == "succeeded" for r in later), later
