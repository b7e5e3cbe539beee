"""Orchestrator-worker end to end through real Celery workers on Redis, stored in PostgreSQL, with the real
anthropic SDK calling the stub (issue 23, item 2). The stub's "model" plans one subtask per line of the
document (within the planner's max_tokens), so a document of N clause lines makes a plan of N subtasks."""

from __future__ import annotations

import json

import pytest

from chorus.orchestrate import plan_orchestrate, submit_orchestrate
from chorus.plans import submit
from chorus.runs import wait_for_run
from settings import load_settings
from workflows.errors import ConfigError
from workflows.orchestrating import plan_schema
from workflows.taskfile import OrchestrateTask, PlanStep, Step

pytestmark = pytest.mark.integration

FINDING = {"type": "object", "required": ["clause", "risk"],
           "properties": {"clause": {"type": "string"}, "risk": {"type": "string", "enum": ["low", "high"]}}}


def contract(lines: int) -> str:
    return "\n".join(f"Clause {i} fixes the delivery date of the goods to day {i}." for i in range(1, lines + 1))


def task(max_workers: int = 6, schema: dict | None = None) -> OrchestrateTask:
    return OrchestrateTask("review", PlanStep("List the clauses to check, one subtask each.", model="claude-sonnet-5-5",
                                              max_workers=max_workers),
                           Step("Check the clause of your subtask.", model="claude-haiku-5-5", output_schema=schema),
                           Step("Write the review from the findings.", model="claude-sonnet-5-5"))


def calls_of(stub, run_id: str) -> list[dict]:
    return sorted((r for r in stub.requests() if r["run"] == run_id), key=lambda r: r["time"])


def test_the_planner_then_one_worker_per_subtask_then_one_synthesis(workers, stub):
    stub.reset()
    run = wait_for_run(submit_orchestrate(contract(4), task=task(schema=FINDING)), timeout=90)

    assert run.status == "succeeded", run.reason
    roles = [o.role for o in run.outcomes]
    assert roles == ["planner", "worker", "worker", "worker", "worker", "reduce"]
    assert run.result is not None
    subtasks = run.result["subtasks"]
    assert len(subtasks) == 4 and subtasks[0]["title"].startswith("Clause 1") and run.result["dropped"] == []
    assert [o.title for o in run.outcomes if o.role == "worker"] == [s["title"] for s in subtasks]
    assert run.result["synthesis"] and run.result["missing"] == []

    calls = calls_of(stub, run.id)
    assert [int(c["slot"]) for c in calls][0] == 0 and int(calls[-1]["slot"]) == 5
    planner = calls[0]["body"]
    assert planner["model"] == "claude-sonnet-5-5"
    assert planner["output_config"]["format"]["schema"] == plan_schema(6)
    workers_sent = [c for c in calls if 1 <= int(c["slot"]) <= 4]
    assert sorted(int(c["slot"]) for c in workers_sent) == [1, 2, 3, 4]  # each subtask called exactly once
    for c in workers_sent:
        slot = int(c["slot"])
        body = json.dumps(c["body"])
        assert subtasks[slot - 1]["instructions"] in body.replace("\\n", "\n") or subtasks[slot - 1]["title"] in body
        assert c["body"]["model"] == "claude-haiku-5-5"
    assert len(calls) == 6
    # Every worker's call went after the planner's answer, the synthesis after every worker's.
    assert calls[0]["time"] < min(c["time"] for c in workers_sent) < max(c["time"] for c in workers_sent) \
        < calls[-1]["time"]


def test_a_plan_longer_than_max_workers_runs_max_workers_and_ends_partial_with_the_note(workers, stub):
    stub.reset()
    run = wait_for_run(submit_orchestrate(contract(7), task=task(max_workers=3)), timeout=90)

    assert run.status == "partial"
    assert [o.slot for o in run.outcomes if o.role == "worker"] == [1, 2, 3]
    assert run.result is not None and len(run.result["subtasks"]) == 3 and len(run.result["dropped"]) == 4
    assert "more than max_workers = 3" in (run.error or "")
    assert sorted(int(c["slot"]) for c in calls_of(stub, run.id)) == [0, 1, 2, 3, 4]


def test_a_failed_planner_fails_the_run_and_sends_no_worker(workers, stub):
    stub.reset()
    plan = plan_orchestrate(contract(3), task=task())
    stub.set_rules([{"slot": "0", "status": 400}])  # a permanent error: not retried
    try:
        run = wait_for_run(submit(plan), timeout=60)
    finally:
        stub.reset()

    assert run.status == "failed"
    assert "planner" in (run.error or "") and [o.role for o in run.outcomes] == ["planner"]


def test_a_failed_worker_is_named_missing_and_the_rest_is_synthesized(workers, stub):
    stub.reset()
    plan = plan_orchestrate(contract(3), task=task())
    stub.set_rules([{"slot": "2", "status": 400}])
    try:
        run = wait_for_run(submit(plan), timeout=60)
    finally:
        stub.reset()

    assert run.status == "partial"
    assert run.result is not None and run.result["missing"] == [2]
    assert (run.error or "").startswith("subtask 2 (")
    assert run.result["synthesis"]


def test_results_over_the_synthesis_budget_are_combined_as_a_tree(workers, stub):
    stub.reset()
    tight = load_settings(synthesis_budget_tokens=40)
    run = wait_for_run(submit_orchestrate(contract(5), task=task(), settings=tight), timeout=90)

    assert run.status == "succeeded", run.reason
    steps = [o for o in run.outcomes if o.role == "reduce"]
    assert [o.prompt_variant for o in steps][-1] == "final" and len(steps) >= 2
    assert {int(c["slot"]) for c in calls_of(stub, run.id)} == {o.slot for o in run.outcomes}


def test_a_budget_below_the_estimate_refuses_before_anything_is_sent(workers, stub):
    stub.reset()
    with pytest.raises(ConfigError, match="above the budget|budget"):
        submit_orchestrate(contract(3), task=task(), settings=load_settings(max_cost_usd=0.000001))
    assert stub.requests() == []


def test_a_batch_of_orchestrate_runs_plans_each_document(workers, stub):
    from chorus.batch import run_batch, wait_for_batch
    from models import Session, repo

    stub.reset()
    sub = run_batch([contract(2), contract(3)], pattern="orchestrate", options={"task": task()},
                    name="orchestrate-batch")
    counts = wait_for_batch(sub.batch_id, timeout=90)
    assert (counts.total, counts.succeeded) == (2, 2)
    with Session() as s:
        runs = repo.runs_of_batch(s, sub.batch_id)
        workers_of = sorted(sum(1 for o in r.outcomes if o.role.value == "worker") for r in runs)
    assert workers_of == [2, 3]


def test_a_cancelled_run_sends_no_more_workers_nor_a_synthesis(workers, stub):
    import time

    from chorus.batch import cancel
    from models import Session, repo

    stub.reset()
    stub.set_latency(1500)  # the workers' calls are in flight (or queued) when the cancel comes
    try:
        run_id = submit_orchestrate(contract(12), task=task(max_workers=12))
        deadline = time.monotonic() + 30
        while True:
            with Session() as s:
                slots = repo.outcomes_by_slot(s, run_id)
            if len(slots) > 1:
                break
            assert time.monotonic() < deadline, "the workers were never added"
            time.sleep(0.1)
        cancel(run_id, reason="enough")
        run = wait_for_run(run_id, timeout=60)
        time.sleep(2)  # calls in flight finish; nothing new may start
        called = {int(r["slot"]) for r in stub.requests(bodies=False) if r["run"] == run_id}
    finally:
        stub.set_latency(0)  # the session's stub answers at once (reset keeps the latency)
        stub.reset()

    assert run.status == "cancelled" and run.error == "enough"
    assert [o.role for o in run.outcomes if o.role == "reduce"] == []  # no synthesis was added
    cancelled = {o.slot for o in run.outcomes if o.status == "cancelled"}
    assert cancelled and not cancelled & called  # a slot cancelled before its call was never called
