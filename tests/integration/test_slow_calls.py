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

from chorus.testing import outcome_rows, private_redis, submit_votes, wait_terminal
from chorus.testing.stub.testing import running_stub
from tests.integration.test_reliability import (  # noqa: F401  (a fixture)
    LABELS,
    assert_every_run_agrees_with_its_slots,
    cluster_env,
    documents,
    fleet,
    schema,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VOTERS = 3


def test_a_call_longer_than_the_visibility_timeout_is_made_once_and_a_tallied_run_stays_closed(
        tmp_path, schema):  # noqa: F811
    with private_redis(tmp_path / "redis") as redis, running_stub(latency_ms=9000) as stub:
        env = cluster_env(broker_url=redis.url, database_url=schema, data_dir=tmp_path, stub_url=stub.base_url,
                         CHORUS_VISIBILITY_TIMEOUT_S="4", CHORUS_CALL_TIMEOUT_S="20", CHORUS_REAP_AFTER_S="600")
        with fleet(tmp_path, env) as workers:
            # More processes than calls: a redelivered copy finds a free process while the first still calls.
            workers.start("llm", pool="prefork", concurrency=8)
            workers.start("callbacks", "callbacks", pool="solo", concurrency=1)
            workers.ready()
            run_ids = submit_votes(env, documents(1), LABELS, voters=VOTERS)
            statuses = wait_terminal(run_ids, timeout=90, database_url=schema)
            settled = outcome_rows(run_ids, schema)
            time.sleep(8)  # copies still in flight get their turn; none may claim a slot of the tallied run
            later = outcome_rows(run_ids, schema)
        log = stub.requests()

    assert statuses == dict.fromkeys(run_ids, "succeeded")
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    assert calls == Counter({(run_ids[0], slot): 1 for slot in range(VOTERS)}), calls
    assert sorted(settled, key=lambda r: r["slot"]) == sorted(later, key=lambda r: r["slot"])
    assert all(r["attempts"] == 1 and r["status"] == "succeeded" for r in later), later
