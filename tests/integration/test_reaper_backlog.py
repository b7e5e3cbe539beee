"""A backlog that takes longer than CHORUS_REAP_RESEND_AFTER_S: slots that are only waiting in the
queue are not lost, and the reaper re-sends none of them (it asks the broker first).

Its own cluster: a private redis-server, a stub at 400 ms, one LLM worker that takes one call at a
time, a callbacks worker running beat (so the reaper runs every 2 s, as in production), and the
session's PostgreSQL database.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.cluster import assert_every_run_agrees_with_its_slots, documents

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS, VOTERS = 8, 3


@pytest.mark.cluster(stub_latency_ms=400, env={"CHORUS_REAP_INTERVAL_S": "2", "CHORUS_REAP_GRACE_S": "3",
                                               "CHORUS_REAP_RESEND_AFTER_S": "5", "CHORUS_REAP_AFTER_S": "600"})
def test_the_reaper_re_sends_nothing_that_is_only_queued(cluster, tmp_path, schema):
    cluster.start_llm(pool="threads", concurrency=1)  # 24 calls of 0.4 s, one at a time: ~10 s
    cluster.start_callbacks(beat=True)
    cluster.ready()
    run_ids = cluster.submit_votes(documents(DOCS), voters=VOTERS)
    statuses = cluster.wait_terminal(run_ids, timeout=120)
    cluster.workers.stop_all()
    log = cluster.stub.requests()
    callbacks_log = (tmp_path / "callbacks.log").read_text(errors="replace")

    assert statuses == dict.fromkeys(run_ids, "succeeded")
    assert_every_run_agrees_with_its_slots(run_ids, schema)  # each run's status, from its own slots
    assert "chorus.maintenance.reap" in callbacks_log  # the reaper did run, many times, during the backlog
    times = sorted(e["time"] for e in log if e.get("run"))
    assert times[-1] - times[0] > 5 + 3, "the backlog must outlast the re-send threshold for this test to mean much"
    assert "re-sent the call" not in callbacks_log
    rows = cluster.outcome_rows(run_ids)
    assert len(rows) == DOCS * VOTERS and all(r["attempts"] == 1 for r in rows)
    assert Counter((e["run"], int(e["slot"])) for e in log if e.get("run")) == Counter(
        {(r["run"], r["slot"]): 1 for r in rows})
