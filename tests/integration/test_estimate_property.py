"""The estimate is an upper bound of the bill (issue 22, item 1), as a property against the stub.

For documents of prose, numbers, code, CJK, emoji and any text, on every model of the registry the stub
can read, a vote (1-5 voters, cache-aware with a leader or a pre-warm, or all at once; in the batch lane
or not) and a section run (any section size and synthesis budget, so that trees happen): what the stub
bills never exceeds `chorus.budget.estimate_plan`. The bill is taken without workers: each call's request
is built as a worker builds it (`plan.spec()`), sent with the real anthropic SDK in the dispatch's order,
and the stub's usage priced with `workflows.cost.cost_of` (`bench.estimates.bill`, which the benchmark
uses too); every reply is taken at its max_tokens (billed so and read so by the synthesis: the worst
case). The stub counts with its own tokenizer and keeps its own cache, never chorus's estimate.

One end-to-end check runs a small batch of numbers through real workers: `estimate_batch` before it is at
least the cost recorded for its runs after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bench.estimates import EMOJI, bill, digits
from chorus.budget import estimate_plan
from chorus.section import plan_section
from chorus.testing.stub.models import traits
from chorus.vote import plan_vote
from settings import get_settings
from workflows import registry
from workflows.cost import Cost
from workflows.errors import ConfigError

# The SDK warns on every call to a model it knows as deprecated; retired models are part of the property.
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")]

STUB_MODELS = [m.id for m in registry.all_models() if traits(m.id) is not None]
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# A unit of text of each kind, repeated to the document's size: small and adversarial (Hypothesis shrinks
# it), while the repetitions take the prefix over the cache minimums and a document into many sections.
UNITS = {
    "prose": st.lists(st.text(LETTERS, min_size=1, max_size=16), min_size=1, max_size=30).flatmap(
        lambda words: st.lists(st.sampled_from(" ,.;!?'-\n"), min_size=len(words), max_size=len(words)).map(
            lambda seps: "".join(w + s for w, s in zip(words, seps, strict=True)))),
    "digits": st.text("0123456789 .,-/:%\n", min_size=1, max_size=200),
    "code": st.text("".join(chr(c) for c in range(32, 127)) + "\n\t    ", min_size=1, max_size=200),
    "cjk": st.text(st.one_of(st.characters(min_codepoint=0x3040, max_codepoint=0x30FF),
                             st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                             st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3), st.sampled_from("。、 \n")),
                   min_size=1, max_size=200),
    "emoji": st.lists(st.one_of(st.sampled_from(EMOJI), st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
                                st.text(LETTERS, min_size=1, max_size=8), st.sampled_from([" ", "\n", "\u200d"])),
                      min_size=1, max_size=60).map("".join),
    "any": st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=200),
}


def documents(sizes: list[int]) -> st.SearchStrategy[str]:
    """A unit of one kind, repeated (a line each) to at least one of `sizes` characters."""
    def repeat(unit: str, size: int) -> str:
        return "\n".join([unit] * max(1, -(-size // (len(unit) + 1))))

    return st.builds(repeat, st.sampled_from(sorted(UNITS)).flatmap(lambda kind: UNITS[kind]), st.sampled_from(sizes))


@pytest.fixture(scope="module")
def client(stub: Any) -> anthropic.Anthropic:
    # An explicit timeout, as the workers' provider has: without one the SDK refuses a non-streamed call
    # whose max_tokens could take over 10 minutes (a fitted synthesis budget can be the model's 128k).
    return anthropic.Anthropic(api_key="test-key", base_url=stub.base_url, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def every_model() -> Any:
    return get_settings().model_copy(update={"models": ",".join(STUB_MODELS)})


def check(estimate: Cost, billed: Cost, what: str) -> None:
    assert billed.total_usd > 0, what
    # Float sums of the same prices in another order differ in the last bits.
    assert billed.total_usd <= estimate.total_usd * (1 + 1e-9), (what, estimate.to_json(), billed.to_json())


@pytest.mark.parametrize("model", STUB_MODELS)
@settings(max_examples=7, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(text=documents([0, 20_000, 30_000]), voters=st.integers(1, 5),
       # (dispatch, in the batch lane?): the lane refuses a pre-warm
       way=st.sampled_from([("leader", False), ("leader", True), ("prewarm", False), ("off", False), ("off", True)]))
def test_what_the_stub_bills_for_a_vote_never_exceeds_its_estimate(stub, client, every_model, model, text, voters,
                                                                    way):
    way, lane = way
    try:
        plan = plan_vote(text, "alpha,beta,gamma", voters=voters, models=[model] * voters, cache_aware=way != "off",
                         cache_warm="prewarm" if way == "prewarm" else "leader", settings=every_model)
    except ConfigError:
        assume(False)  # not a document chorus sends (empty, binary-looking)
    estimate = estimate_plan(plan, every_model, count=False, lane="batch" if lane else "sync")
    billed = bill(plan, client, stub.reset, lane=lane, worst_case=True)
    event(f"cache writes billed: {billed.cache_write_usd > 0}, reads: {billed.cache_read_usd > 0}")
    check(estimate, billed, f"{voters} x {model}, {way}, lane={lane}")


@pytest.mark.parametrize("model", STUB_MODELS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(text=documents([0, 3_000, 12_000]), section_tokens=st.sampled_from([100, 400, 2000]),
       budget=st.sampled_from([10, 600, 8000]), lane=st.booleans())
def test_what_the_stub_bills_for_a_section_run_never_exceeds_its_estimate(stub, client, every_model, model, text,
                                                                           section_tokens, budget, lane):
    configured = every_model.model_copy(update={"synthesis_budget_tokens": budget})
    try:
        plan = plan_section(text, model=model, max_tokens=section_tokens, settings=configured)
    except ConfigError:
        assume(False)
    estimate = estimate_plan(plan, configured, lane="batch" if lane else "sync")
    billed = bill(plan, client, stub.reset, lane=lane, worst_case=True)
    event(f"sections: {'1' if len(plan.sections) == 1 else '2-5' if len(plan.sections) <= 5 else 'over 5'}")
    check(estimate, billed, f"{len(plan.sections)} sections of {model}, budget {budget}, lane={lane}")


# Units of text the stub answers quickly at the worst case (a reply of 128k tokens of CJK or digits takes
# it over a minute): prose, emoji, and one letter a line (the estimate's narrowest margin, 1.009x).
SCHEMA_CASES = [("The quick brown fox, jumps; over the lazy dog!", 10), ("hi 😀🎉 👨\u200d👩\u200d👧 ok", 600),
                ("a", 8000)]


@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-haiku-4-5"])
@pytest.mark.parametrize(("unit", "budget"), SCHEMA_CASES)
def test_what_the_stub_bills_for_a_schema_task_merged_by_a_model_never_exceeds_its_estimate(
        stub, client, every_model, model, unit, budget):
    # examples/man-options.toml with a model merge: map budgets fitted to each section, every map reply cut
    # and sent once more (the worst case), merges whose budgets fit what their parts recorded. The
    # estimate is within 1.1x of this worst case (the budgets, not the bound, make it far above a real bill).
    from bench.estimates import plan_of

    configured = every_model.model_copy(update={"synthesis_budget_tokens": budget})
    plan = plan_of("section, schema", model, "\n".join([unit] * (12_000 // (len(unit) + 1))), configured)
    assert len(plan.sections) == 2
    estimate = estimate_plan(plan, configured)
    billed = bill(plan, client, stub.reset, worst_case=True)
    check(estimate, billed, f"{len(plan.sections)} sections of {model}, schema, budget {budget}")
    assert estimate.total_usd < 1.1 * billed.total_usd, (estimate.to_json(), billed.to_json())


def test_a_prompt_above_the_long_prompt_tier_is_estimated_at_that_tier(stub, client, every_model):
    # Single digits: the 4-characters estimate of before said ~55,000 tokens, the stub counts ~140,000,
    # above Haiku 5.5's 100,000-token tier, where every token of the request costs 5x.
    text = " ".join(str(i % 10) for i in range(110_000))
    plan = plan_vote(text, "alpha,beta", voters=1, models=["claude-haiku-5-5"], settings=every_model)
    billed = bill(plan, client, stub.reset)
    check(estimate_plan(plan, every_model, count=False), billed, "one Haiku 5.5 voter above the tier")
    assert billed.input_usd > 100_000 * 0.50 / 1e6  # the stub's bill is at the upper tier


@pytest.fixture
def numbers(tmp_path: Path) -> Iterator[Path]:
    import json
    import random

    path = tmp_path / "digits.jsonl"
    rows = [{"id": f"d{i}", "text": digits(random.Random(i), 18_000)} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yield path


def test_a_batch_of_numbers_costs_no_more_than_its_estimate_said(workers, stub, numbers):
    from chorus.batch import estimate_batch, prepare_batch, run_batch, wait_for_batch
    from chorus.costing import run_cost
    from models import Session, repo
    from workflows.cost import total

    stub.reset()
    settings_ = get_settings()
    prepared = prepare_batch(numbers, pattern="vote", options={"labels": "a,b,c", "voters": 3,
                                                                "models": ["claude-haiku-5-5"] * 3},
                             name=f"estimate-digits-{time.time_ns()}", settings=settings_)
    estimate, to_send = estimate_batch(prepared, settings_)
    assert to_send == 4
    submitted = run_batch(prepared, settings=settings_)
    wait_for_batch(submitted.batch_id, timeout=120, settings=settings_)
    with Session() as s:
        runs = repo.runs_of_batch(s, submitted.batch_id)
        recorded = total(run_cost(run) for run in runs)
    # Labels a, b, c on numbers: the offline answers abstain and the votes fail, but every call was made
    # and paid, which is what the estimate is about.
    assert len(runs) == 4 and all(run.status.terminal for run in runs)
    calls = [o for run in runs for o in run.outcomes]
    assert len(calls) == 12 and all(o.input_tokens + o.cache_write_tokens + o.cache_read_tokens > 0 for o in calls)
    assert 0 < recorded.total_usd <= estimate.total_usd, (recorded.to_json(), estimate.to_json())


def test_a_long_section_run_on_haiku_5_5_costs_no_more_than_its_estimate_nor_much_less(workers, stub):
    # 70 sections through real workers: the synthesis reads 70 summaries in a few calls, each far below
    # Haiku 5.5's 100,000-token tier. The estimate of before priced every synthesis call at the upper
    # tier (5x), as if one call could read every summary and as many partial syntheses: 2.8x the bill;
    # level by level, no call of typical text can reach the tier and the estimate is 1.4x the bill.
    import random

    from bench.estimates import prose
    from chorus.costing import run_cost
    from chorus.runs import wait_for_run
    from chorus.section import submit_section_plan

    stub.reset()
    settings_ = get_settings()
    plan = plan_section(prose(random.Random(260_000), 260_000), model="claude-haiku-5-5", max_tokens=1000,
                        settings=settings_)
    assert len(plan.sections) >= 60
    estimate = estimate_plan(plan, settings_)
    run = wait_for_run(submit_section_plan(plan, settings=settings_), timeout=240)
    assert run.status == "succeeded", run.error
    steps = [o for o in run.outcomes if o.role == "synthesis"]
    assert len(steps) > 1  # a tree: partial syntheses, then the final one
    paid = run_cost(run)
    assert 0 < paid.total_usd <= estimate.total_usd, (paid.to_json(), estimate.to_json())
    assert estimate.total_usd < 1.6 * paid.total_usd, (paid.to_json(), estimate.to_json())


def test_a_schema_task_merged_by_haiku_costs_no_more_than_its_estimate(workers, stub):
    # A map step with an output schema (budgets fitted to each section, a cut reply sent once more) and a
    # model merge whose budget is fitted to what the sections recorded: the estimate bounds the bill. It
    # is a bound of what the budgets allow, far above this bill (docs/decisions.md): each level of the
    # merge may write 1.25 x ratio x what it read.
    from chorus.costing import run_cost
    from chorus.runs import wait_for_run
    from chorus.section import submit_section_plan
    from workflows.taskfile import SectionTask, Step

    schema = {"type": "object", "required": ["options"], "properties": {"options": {"type": "array", "items": {
        "type": "object", "required": ["flag", "meaning"],
        "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}
    task = SectionTask(name="man-options", split="headings", max_tokens=2000,
                       map=Step("List every command-line option this section documents, with its meaning in one "
                                "line.", model="claude-haiku-5-5", output_schema=schema),
                       reduce=Step("Merge the lists into one.", model="claude-haiku-5-5"))
    text = "\n".join(f"# PART {s}\n" + "\n".join(f"-{chr(97 + i % 26)}, --option-{s}-{i}=N\n    Set {s}.{i} to N "
                                                  f"(default {i}); see --opt-{s}-{i}." for i in range(8 + 6 * s))
                     for s in range(12))
    stub.reset()
    settings_ = get_settings().model_copy(update={"synthesis_budget_tokens": 2000})  # a tree of merges
    plan = plan_section(text, task=task, settings=settings_)
    estimate = estimate_plan(plan, settings_)
    run = wait_for_run(submit_section_plan(plan, settings=settings_), timeout=240)
    assert run.status == "succeeded", run.error
    assert len([o for o in run.outcomes if o.role == "synthesis"]) > 1
    paid = run_cost(run)
    assert 0 < paid.total_usd <= estimate.total_usd, (paid.to_json(), estimate.to_json())
