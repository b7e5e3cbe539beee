"""A backlog that takes longer than CHORUS_REAP_RESEND_AFTER_S: slots that are only waiting in the
queue are not lost, and the reaper re-sends none of them (it asks the broker first).

Its own cluster: a private redis-server, a stub at 400 ms, one LLM worker that takes one call at a
time, a callbacks worker running beat (so the reaper runs every 2 s, as in production), and the
session's PostgreSQL database.
"""

from __future__ import annotations

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

DOCS, VOTERS = 8, 3


def test_the_reaper_re_sends_nothing_that_is_only_queued(tmp_path, schema):  # noqa: F811
    with private_redis(tmp_path / "redis") as redis, running_stub(latency_ms=400) as stub:
        env = cluster_env(broker_url=redis.url, database_url=schema, data_dir=tmp_path, stub_url=stub.base_url,
                         CHORUS_REAP_INTERVAL_S="2", CHORUS_REAP_GRACE_S="3", CHORUS_REAP_RESEND_AFTER_S="5",
                         CHORUS_REAP_AFTER_S="600")
        with fleet(tmp_path, env) as workers:
            workers.start("llm", pool="threads", concurrency=1)  # 24 calls of 0.4 s, one at a time: ~10 s
            workers.start("callbacks", "callbacks", pool="solo", concurrency=1,
                          extra_args=("--beat", "--schedule", str(tmp_path / "beat-schedule")))
            workers.ready()
            run_ids = submit_votes(env, documents(DOCS), LABELS, voters=VOTERS)
            statuses = wait_terminal(run_ids, timeout=120, database_url=schema)
        log = stub.requests()
        callbacks_log = (tmp_path / "callbacks.log").read_text(errors="replace")

    assert statuses == dict.fromkeys(run_ids, "succeeded")
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    assert "chorus.maintenance.reap" in callbacks_log  # the reaper did run, many times, during the backlog
    times = sorted(e["time"] for e in log if e.get("run"))
    assert times[-1] - times[0] > 5 + 3, "the backlog must outlast the re-send threshold for this test to mean much"
    assert "re-sent the call" not in callbacks_log
    rows = outcome_rows(run_ids, schema)
    assert len(rows) == DOCS * VOTERS and all(r["attempts"] == 1 for r in rows)
    assert Counter((e["run"], int(e["slot"])) for e in log if e.get("run")) == Counter(
        {(r["run"], r["slot"]): 1 for r in rows})
