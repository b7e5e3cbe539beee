"""A worker killed (kill -9) in the middle of orchestrate runs costs no subtask and duplicates none
(issue 23, item 2): every run ends, each subtask's slot is called as often as it was claimed, once unless
the dead worker held it (then twice: the interrupted call and the one that took it over)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Sequence

import pytest

from tests.cluster import Cluster, requests_by_slot
from tests.integration.test_reliability import kill_with_every_claim_called

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBTASKS = 5
_SUBMIT = """
import json, sys
from chorus.orchestrate import submit_orchestrate
from workflows.taskfile import OrchestrateTask, PlanStep, Step
job = json.loads(sys.stdin.read())
task = OrchestrateTask("review", PlanStep("List the clauses to check, one subtask each.", max_workers=8),
                       Step("Check the clause of your subtask."), Step("Write the review from the findings."))
print(json.dumps([submit_orchestrate(text, task=task, external_id=f"doc-{i}") for i, text in enumerate(job)]))
"""


def contracts(n: int) -> list[str]:
    return ["\n".join(f"Clause {i} of contract {c} fixes the delivery date to day {i}." for i in range(1, SUBTASKS + 1))
            for c in range(n)]


def submit(cluster: Cluster, texts: Sequence[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _SUBMIT], env=dict(cluster.env), capture_output=True, text=True,
                          input=json.dumps(list(texts)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.cluster(stub_latency_ms=300, env={
    "CHORUS_VISIBILITY_TIMEOUT_S": "5", "CHORUS_RETRY_BACKOFF_S": "0.1", "CHORUS_REAP_INTERVAL_S": "2",
    "CHORUS_REAP_GRACE_S": "3", "CHORUS_REAP_RESEND_AFTER_S": "10", "CHORUS_REAP_AFTER_S": "120"})
def test_a_worker_killed_mid_run_still_ends_with_every_subtask_called_once(cluster, schema):
    concurrency = 3
    cluster.start_llm("llm-a", pool="prefork", concurrency=concurrency)
    cluster.start_llm("llm-b", pool="prefork", concurrency=concurrency)
    cluster.start_callbacks(beat=True)
    cluster.ready()
    run_ids = submit(cluster, contracts(16))
    killed_at, held = kill_with_every_claim_called(cluster.workers, "llm-a", cluster.stub, schema,  # type: ignore[arg-type]
                                                   concurrency)
    cluster.start_llm("llm-a", pool="prefork", concurrency=concurrency).wait_ready()
    statuses = cluster.wait_terminal(run_ids, timeout=150)
    log = cluster.stub.requests(bodies=False)

    assert set(statuses.values()) == {"succeeded"}, statuses
    rows = cluster.outcome_rows(run_ids)
    # One row per slot: the planner (0), the workers (1-5, one per subtask), the synthesis (6).
    assert sorted((r["run"], r["slot"]) for r in rows) == sorted((run, slot) for run in run_ids
                                                                 for slot in range(SUBTASKS + 2))
    assert all(r["status"] == "succeeded" for r in rows)
    calls = requests_by_slot(log)
    attempts = {(r["run"], r["slot"]): r["attempts"] for r in rows}
    assert set(calls) == set(attempts)  # every slot (planner, worker, synthesis) was called
    for key, entries in calls.items():
        assert all(later["time"] >= earlier["time"] + earlier["latency_ms"] / 1000
                   for earlier, later in itertools.pairwise(entries)), (key, entries)  # never twice at once
        assert len(entries) == attempts[key], (key, attempts[key], entries)
        if key not in held:
            assert len(entries) == 1, (key, entries)
        else:
            assert len(entries) == 2 and entries[0]["time"] < killed_at < entries[1]["time"], (key, entries)
