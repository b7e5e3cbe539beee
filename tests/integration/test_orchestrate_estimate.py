"""An orchestrate run's estimate is an upper bound of what the stub bills (issue 23, item 2), and the stub
answers the planner's structured-output request with a plan chorus reads.

The bill is taken without workers, as tests/integration/test_estimate_property.py takes it for votes and
section runs: the planner's request, each worker's and each synthesis call are built by the run spec (the
one request builder), sent with the real anthropic SDK to the stub (its own tokenizer and prompt cache),
and priced with `cost_of`; every reply is billed at its max_tokens. The planner is the adversary: its plan
is drawn (any number of subtasks up to max_workers, any text, as long as the plan's JSON is a reply the
planner could write within its max_tokens by the stub's count), read by chorus's own `read_plan`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bench.estimates import call, filler, priced
from chorus.budget import estimate_orchestrate
from chorus.testing.stub.tokenizer import count_text
from tests.integration.test_estimate_property import UNITS
from workflows.cost import Cost, total
from workflows.orchestrating import SubtaskPlan, part_label
from workflows.runspec import OrchestrateSpec, orchestrate_spec_of
from workflows.sectioning import Part, output_tokens, plan_level, span_label
from workflows.taskfile import OrchestrateTask, PlanStep, Step

pytestmark = [pytest.mark.integration]

MODELS = ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-haiku-4-5", "claude-sonnet-4-6"]
FINDING = {"type": "object", "required": ["risk", "finding"], "additionalProperties": False,
           "properties": {"risk": {"type": "string", "enum": ["low", "high"]}, "finding": {"type": "string"}}}


@pytest.fixture(scope="module")
def client(stub: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test-key", base_url=stub.base_url, max_retries=0, timeout=60)


def bill(spec: OrchestrateSpec, document: str, plan: SubtaskPlan, client: anthropic.Anthropic, *,
         lane: bool) -> Cost:
    """What the stub bills for the run at its worst: the planner, then the first worker (it writes the
    shared prefix) and the rest, then the synthesis tree the workers would plan (`plan_level` on the
    measured replies), every reply billed at max_tokens and read by the synthesis at that length."""
    def send(request: Any, in_lane: bool) -> Cost:
        if in_lane:
            request = dataclasses.replace(request, cache_ttl="1h")
        usage, _, _ = call(client, request)
        return priced(request, usage, lane=in_lane, output_tokens=request.max_tokens)

    costs = [send(spec.planner_request(document), False)]
    items = []
    for i, subtask in enumerate(plan.subtasks):
        request = spec.worker_request(plan, i, document)
        costs.append(send(request, lane))
        items.append((part_label(i, subtask.title), filler(subtask.instructions, request.max_tokens), (i, i),
                      request.max_tokens))
    while True:
        groups = plan_level([output_tokens(text) for _, text, _, _ in items], spec.synthesis_budget_tokens)
        final = groups is None
        carried = []
        for group in [list(range(len(items)))] if groups is None else groups:
            members = [items[i] for i in group]
            if len(members) == 1 and not final:
                carried.append(members[0])
                continue
            request = spec.synthesis_request(spec.reduce_model, [Part(label, text, recorded)
                                                                  for label, text, _, recorded in members], final=final)
            costs.append(send(request, False))
            first, last = members[0][2][0], members[-1][2][1]
            carried.append((span_label(first + 1, last + 1), filler("partial", request.max_tokens), (first, last),
                            request.max_tokens))
        if final:
            return total(costs)
        items = carried


@st.composite
def runs(draw: st.DrawFn) -> tuple[OrchestrateSpec, str, str]:
    """A task on any three models, max_workers 1-6, and a plan's reply of 1 to max_workers subtasks."""
    workers = draw(st.integers(1, 6))
    task = OrchestrateTask("review", PlanStep("List the parts to check.", max_workers=workers),
                           Step("Check your part.", output_schema=draw(st.sampled_from([None, FINDING]))),
                           Step("Write the review."))
    spec = orchestrate_spec_of(task, plan_model=draw(st.sampled_from(MODELS)), work_model=draw(st.sampled_from(MODELS)),
                               reduce_model=draw(st.sampled_from(MODELS)),
                               synthesis_budget_tokens=draw(st.sampled_from([10, 600, 8000])))
    unit = draw(st.sampled_from(sorted(UNITS)).flatmap(lambda kind: UNITS[kind]))
    document = "\n".join([unit] * draw(st.sampled_from([1, 40, 400])))
    texts = st.text(st.sampled_from("abc XYZ 123 .'\"&<\n日😀"), max_size=60).map(lambda t: t * 40)
    subtasks = [{"title": draw(texts)[:200], "instructions": "Check " + draw(texts), "focus": draw(texts)}
                for _ in range(draw(st.integers(1, workers)))]
    reply = json.dumps({"subtasks": subtasks}, ensure_ascii=False)
    while count_text(reply) > spec.plan_output_tokens:  # a reply the planner can write within its budget
        for s in subtasks:
            s.update({key: value[: max(len(value) // 2, 6 if key == "instructions" else 0)]
                      for key, value in s.items()})
        reply = json.dumps({"subtasks": subtasks}, ensure_ascii=False)
    return spec, document, reply


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(run=runs(), lane=st.booleans())
def test_what_the_stub_bills_for_an_orchestrate_run_never_exceeds_its_estimate(stub, client, run, lane):
    spec, document, reply = run
    plan, problem = spec.read_plan(reply, "end_turn")
    assume(plan is not None)
    assert plan is not None, problem
    stub.reset()
    estimate = estimate_orchestrate(spec, document, lane="batch" if lane else "sync")
    billed = bill(spec, document, plan, client, lane=lane)
    event(f"workers: {len(plan.subtasks)} of {spec.max_workers}")
    assert 0 < billed.total_usd <= estimate.total_usd * (1 + 1e-9), (estimate.to_json(), billed.to_json())


def test_the_stub_plans_one_subtask_a_line_of_the_document_and_chorus_reads_it(stub, client):
    # The stub's "model" fills the subtask array from the document, one item per line (within the planner's
    # max_tokens): the count of subtasks it plans is the document's lines. Beyond max_workers, the plan is cut.
    task = OrchestrateTask("review", PlanStep("List the clauses to check.", max_workers=4), Step("Check it."),
                           Step("Write the review."))
    spec = orchestrate_spec_of(task, plan_model="claude-sonnet-5-5", work_model="claude-haiku-5-5",
                               reduce_model="claude-sonnet-5-5", synthesis_budget_tokens=8000)
    for lines, ran, dropped in ((3, 3, 0), (7, 4, 3)):
        document = "\n".join(f"Clause {i} fixes the delivery date of the goods" for i in range(1, lines + 1))
        request = spec.planner_request(document)
        assert request.output_schema is not None  # sent as output_config.format: the stub checked the schema
        _, text, stop = call(client, request)
        plan, problem = spec.read_plan(text, stop)
        assert problem is None and plan is not None, problem
        assert (len(plan.subtasks), len(plan.dropped)) == (ran, dropped)
        assert plan.subtasks[0].title.startswith("Clause 1") and plan.subtasks[0].instructions
        assert (plan.note is None) == (dropped == 0)
