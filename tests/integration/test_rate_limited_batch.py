"""A batch under a tight shared rate limit, with injected 429/529/500: slots wait for the limiter
many times, and a wait must never spend the slot's attempts (chorus's CHORUS_MAX_ATTEMPTS, counted
on the outcome) nor Celery's retry budget. Every slot is called, ends within its attempt limit, and
the batch takes about calls / rate, not the reaper's timeout.

Its own cluster: a private redis-server (broker, results, the shared buckets), a stub limited to
the same requests per minute, real worker processes, the session's PostgreSQL database, and the
`chorus batch` command as a user runs it.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.cluster import LABELS, assert_every_run_agrees_with_its_slots, chorus_finished, write_jsonl
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RPM = 120
DOCS, VOTERS = 14, 3
MAX_ATTEMPTS = 4
BURST = 0.9 * RPM  # chorus keeps 10 % of the provider's bucket in reserve (tasks/limiter.py)


@pytest.mark.cluster(
    stub_latency_ms=20,
    stub_args=("--rpm", str(RPM), "--fault", "429=0.1,529=0.05,500=0.05", "--seed", "11", "--retry-after", "1"),
    env={"CHORUS_RATE_LIMITS": f"claude-haiku-4-5:rpm={RPM}", "CHORUS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
         # A short longest reservation: a slot far back in the line waits, wakes, and waits again, many
         # times over (the issue saw 573 MaxRetriesExceededError this way).
         "CHORUS_RATE_LIMIT_MAX_WAIT_S": "2", "CHORUS_RETRY_BACKOFF_S": "0.2", "CHORUS_RETRY_BACKOFF_MAX_S": "1",
         "CHORUS_REAP_AFTER_S": "600"})
def test_a_batch_under_a_tight_shared_rate_limit_calls_every_slot_within_its_attempts(cluster, tmp_path, schema):
    source = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cluster.start_llm(pool="prefork", concurrency=4)
    cluster.start_callbacks()
    cluster.ready()
    began = time.monotonic()
    with chorus_finished(cluster.chorus("batch", str(source), "--pattern", "vote", "--labels", LABELS, "--voters",
                                        str(VOTERS), "--timeout", "240", "--json", cwd=ROOT)) as batch:
        out, err = batch.communicate(timeout=300)
    elapsed = time.monotonic() - began
    cluster.workers.stop_all()
    log = cluster.stub.requests()

    assert batch.returncode in (0, 1, 3), err[-3000:]  # 3: a document ended partial (exit-code table)
    summary = json.loads(out)
    assert summary["counts"]["running"] == 0 and summary["counts"]["pending"] == 0
    run_ids = {e["run"] for e in log if e.get("run")}
    rows = cluster.outcome_rows(sorted(run_ids))
    assert_every_run_agrees_with_its_slots(sorted(run_ids), schema)  # each run's status, from its own slots
    assert len(rows) == DOCS * VOTERS, "every slot of every document was called at least once"
    calls = Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))
    for row in rows:
        key = (row["run"], row["slot"])
        assert row["status"] in ("succeeded", "failed"), row
        assert 1 <= row["attempts"] <= MAX_ATTEMPTS, row  # a wait is not an attempt
        assert calls[key] == row["attempts"], (row, calls[key])  # the provider's log agrees with the stored attempts
        if row["status"] == "failed":
            assert row["attempts"] == MAX_ATTEMPTS and "gave up" in (row["error"] or ""), row
        assert "reaper" not in (row["error"] or ""), row
    # About calls / limit, as the issue asks: the limit held the batch back (no faster than the
    # burst allows) and nothing else did (no slower than every call at the limit's pace, plus start-up),
    # far from the reaper's 600 s. Calls that drew an injected fault took a token too.
    rate = RPM / 60
    fastest_s, slowest_s = (sum(calls.values()) - BURST) / rate, sum(calls.values()) / rate + 30
    times = sorted(e["time"] for e in log if e.get("run"))
    gaps = sorted((round(b - a, 1) for a, b in zip(times, times[1:], strict=False)), reverse=True)[:5]
    assert 0.9 * fastest_s <= elapsed <= slowest_s, (
        f"batch took {elapsed:.0f} s for {sum(calls.values())} calls at {RPM} RPM (between {0.9 * fastest_s:.0f} "
        f"and {slowest_s:.0f} s expected); calls spanned {times[-1] - times[0]:.0f} s, longest gaps {gaps} s")
    assert [e for e in log if e.get("limited")] == []  # the shared bucket kept every worker under the stub's limit
