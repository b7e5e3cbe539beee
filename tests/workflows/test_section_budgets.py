"""Output budgets of section runs with an output schema (issue 25, item 6), against the stub's model: the
offline provider's answer cut by the stub's own tokenizer (`chorus.testing.stub.answering.fit_answer`), the way a
run against the stub gets it. A map call's budget fits its section in the schema's shape; a synthesis's
fits its parts; raising `max_output_tokens` never makes a run worse; the estimate stays an upper bound
with the one retry of a cut map reply counted."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chorus.budget import call_cost, estimate_plan
from chorus.section import plan_section
from chorus.testing.stub.answering import fit_answer
from providers.offline import answer
from settings import Settings
from workflows.calls import CallRequest
from workflows.cost import total
from workflows.registry import max_output_tokens
from workflows.sectioning import (
    RETRY_OUTPUT_FACTOR,
    STRUCTURED_OUTPUT_TOKENS,
    Part,
    fitted_output_budget,
    output_tokens,
    retry_output_budget,
)
from workflows.taskfile import SectionTask, Step

OPTIONS = {"type": "object", "required": ["options"], "properties": {"options": {"type": "array", "items": {
    "type": "object", "required": ["flag", "meaning"],
    "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}
MAP = "List every command-line option this section documents, with its meaning in one line."
CONCAT = SectionTask(name="man-options", split="headings", max_tokens=8000,
                     map=Step(MAP, model="claude-haiku-5-5", output_schema=OPTIONS), merge="concat")
BY_MODEL = replace(CONCAT, merge=None, reduce=Step("Merge the lists into one.", model="claude-haiku-5-5"))


def manual(sections: int, options: int, *, lines: int = 1) -> str:
    """A man page: `sections` headings of `options` options each, every meaning on `lines` lines."""
    out = []
    for s in range(sections):
        out.append(f"# PART {s}")
        for i in range(options):
            out.append(f"-{chr(97 + i % 26)}, --option-{s}-{i}=VALUE")
            out.extend([f"    Set {s}.{i} to N [=0-{i}] (a|b|c); see --opt-{s}-{i}/-x, e.g. 1,2,3."] * lines)
        out.append("")
    return "\n".join(out)


def stub_reply(request: CallRequest) -> tuple[str, str]:
    """(text, stop_reason) as the stub answers the request."""
    reply = answer(request.model, request.system, "".join(request.user_blocks), request.max_tokens,
                   request.output_schema)
    return fit_answer(reply.text, request.max_tokens)


def run_in_process(text: str, task: SectionTask) -> tuple[int, int, str | None]:
    """(sections whose reply is complete JSON, sections, the final synthesis' stop reason or None) of a
    run whose calls the stub answers, a cut map reply sent again once as the worker sends it."""
    plan = plan_section(text, task=task)
    spec = plan.spec()
    parts = []
    for s in plan.sections:
        request = spec.section_request(plan.model, s.index, plan.section_document(s.index))
        reply, stop = stub_reply(request)
        retry = spec.retry_request(request)
        if stop == "max_tokens" and retry is not None:
            reply, stop = stub_reply(retry)
        if stop == "end_turn":
            json.loads(reply)
            parts.append(Part(s.title, reply))
    if plan.reduce_model is None or not parts:
        return len(parts), len(plan.sections), None
    _, stop = stub_reply(spec.synthesis_request(plan.reduce_model, parts, final=True))
    return len(parts), len(plan.sections), stop


def test_a_long_sections_map_budget_fits_its_list_where_the_fixed_budget_cut_it():
    text = manual(1, 150)
    plan = plan_section(text, task=CONCAT)
    request = plan.spec().section_request(plan.model, 0, plan.section_document(0))
    assert request.max_tokens > STRUCTURED_OUTPUT_TOKENS  # was STRUCTURED_OUTPUT_TOKENS for every section
    reply, stop = stub_reply(request)
    assert len(plan.sections) == 1
    assert stop == "end_turn" and len(json.loads(reply)["options"]) == 150
    _, cut = stub_reply(replace(request, max_tokens=STRUCTURED_OUTPUT_TOKENS))
    assert cut == "max_tokens"  # what the fixed budget got


def test_a_short_section_keeps_the_default_and_a_steps_own_budget_is_kept():
    plan = plan_section(manual(2, 2), task=CONCAT)
    assert plan.spec().section_request(plan.model, 0, plan.section_document(0)).max_tokens == STRUCTURED_OUTPUT_TOKENS
    own = replace(CONCAT, map=replace(CONCAT.map, max_output_tokens=300))
    plan = plan_section(manual(1, 150), task=own)
    spec = plan.spec()
    request = spec.section_request(plan.model, 0, plan.section_document(0))
    assert request.max_tokens == 300 and spec.retry_request(request) is None  # the user's cap stands


def test_the_budgets_stay_within_what_the_model_can_write():
    ceiling = max_output_tokens("claude-haiku-5-5")
    assert ceiling is not None
    assert fitted_output_budget(1024, OPTIONS, "word " * 10 * ceiling, "claude-haiku-5-5", ceiling) == ceiling
    assert retry_output_budget(ceiling, ceiling) is None
    assert retry_output_budget(1000, ceiling) == 1000 * RETRY_OUTPUT_FACTOR
    assert retry_output_budget(ceiling - 10, ceiling) == ceiling


@pytest.mark.parametrize("reduce", [False, True], ids=["concat", "reduce"])
def test_raising_max_output_tokens_never_makes_the_run_worse(reduce):
    # Sections of different lengths: a fixed budget cuts the long ones; with a model reduce, the more
    # sections came through, the longer the merge, which a fixed synthesis budget of 2048 then cut
    # (the run failed where a smaller map budget had left it partial).
    text = "\n".join(manual(1, n).replace("PART 0", f"PART {n}") for n in (10, 20, 35, 50, 8))
    task = BY_MODEL if reduce else CONCAT
    seen = []
    for budget in (None, 1024, 2000, 4000, 8000):
        ok, sections, synthesis = run_in_process(text, replace(task, map=replace(task.map, max_output_tokens=budget)))
        run = "failed" if not ok or synthesis == "max_tokens" else "succeeded" if ok == sections else "partial"
        seen.append((budget, ok, run))
        if reduce and ok:
            assert synthesis == "end_turn", seen  # the synthesis fits what the sections returned
    rank = {"failed": 0, "partial": 1, "succeeded": 2}
    explicit = [(ok, rank[run]) for budget, ok, run in seen if budget is not None]
    assert explicit == sorted(explicit), seen  # more budget: as many sections and as good a run, or better
    assert seen[0][2] == "succeeded", seen  # chorus's own budget: every section fits


def test_the_estimate_bounds_the_first_call_its_retry_and_a_synthesis_of_the_largest_replies():
    settings = Settings()
    text = manual(3, 40)
    plan = plan_section(text, task=BY_MODEL, settings=settings)
    spec = plan.spec()
    worst = []
    largest = 0
    for s in plan.sections:
        request = spec.section_request(plan.model, s.index, plan.section_document(s.index))
        retry = spec.retry_request(request)
        assert retry is not None and retry.max_tokens == RETRY_OUTPUT_FACTOR * request.max_tokens
        worst += [call_cost(request), call_cost(retry)]
        largest = max(largest, retry.max_tokens)
    # Each section's reply as long as its retry's budget lets it measure (8 characters a token).
    parts = [Part(s.title, "x" * (8 * largest)) for s in plan.sections]
    assert all(output_tokens(p.text) == 2 * largest for p in parts)
    synthesis = spec.synthesis_request(plan.reduce_model or plan.model, parts, final=True)
    assert synthesis.max_tokens > 2 * STRUCTURED_OUTPUT_TOKENS  # the fixed 2048 cut the merge
    worst.append(call_cost(synthesis))
    estimate = estimate_plan(plan, settings, count=False)
    assert estimate.total_usd >= total(worst).total_usd
