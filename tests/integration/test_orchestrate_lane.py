"""Orchestrate runs in the batch lane (issue 23, item 2): the plan, the workers and the synthesis go to the
stub's Message Batches API as successive provider batches, each call once."""

from __future__ import annotations

from collections import Counter

import pytest

from chorus.batch import run_batch, wait_for_batch
from models import Session, repo
from tests.integration.test_batch_lane import lane, lane_log  # noqa: F401 - `lane` is the fixture
from workflows.taskfile import OrchestrateTask, PlanStep, Step

pytestmark = pytest.mark.integration
MODEL = "claude-haiku-4-5"


def contract(lines: int) -> str:
    return "\n".join(f"Clause {i} fixes the delivery date of the goods to day {i}." for i in range(1, lines + 1))


def test_plan_workers_and_synthesis_go_as_successive_provider_batches(lane, stub):  # noqa: F811 - the fixture
    stub.batch_config(delay_ms=100)
    task = OrchestrateTask("review", PlanStep("List the clauses to check.", model=MODEL, max_workers=5),
                           Step("Check the clause of your subtask.", model=MODEL),
                           Step("Write the review.", model=MODEL))
    sub = run_batch([contract(3), contract(2)], pattern="orchestrate", options={"task": task}, name="orchestrate-lane",
                    lane="batch")
    counts = wait_for_batch(sub.batch_id, timeout=90)
    assert (counts.total, counts.succeeded) == (2, 2)

    with Session() as s:
        runs = repo.runs_of_batch(s, sub.batch_id)
        slots = {(r.id, o.slot): o.role.value for r in runs for o in r.outcomes}
    assert sorted(Counter(slots.values()).items()) == [("planner", 2), ("reduce", 2), ("worker", 5)]
    log = lane_log(stub, {run_id for run_id, _ in slots})
    per_slot = Counter((e["run"], int(e["slot"])) for e in log)
    assert set(per_slot) == set(slots) and set(per_slot.values()) == {1}  # every call in a provider batch, once
    # Each run's calls went in three provider batches, one after the other: plan, workers, synthesis.
    for run_id in {run_id for run_id, _ in slots}:
        batches = {role: {e["batch"] for e in log if e["run"] == run_id and slots[(run_id, int(e["slot"]))] == role}
                   for role in ("planner", "worker", "reduce")}
        assert all(len(b) == 1 for b in batches.values()) and len(set.union(*batches.values())) == 3, batches
