"""The upper bound of a text's tokens (`workflows.tokens.upper_tokens`), the request's prompt bound, the
cost of an estimate's call (cache-write premium, tier) and the synthesis tree it assumes (issue 22, item 1).

The bound is chorus's own rule; the stub's tokenizer (our independent model of Anthropic's) is only read
here to check that the bound holds on any text, never copied."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.budget import OUTPUT_CHARS_PER_TOKEN, call_cost, synthesis_costs
from chorus.testing.stub.tokenizer import count_text
from providers.anthropic_provider import message_body
from workflows.calls import CallRequest
from workflows.cost import TokenUsage, cost_of
from workflows.runspec import SectionSpec, StepSpec
from workflows.sectioning import Section, plan_level
from workflows.tokens import (
    FRAMING_TOKENS,
    estimate_tokens,
    marks_prefix,
    upper_request_tokens,
    upper_text_tokens,
    upper_tokens,
)
from workflows.voting import Voter, vote_request

NEW, LEGACY = "claude-haiku-5-5", "claude-haiku-4-5"


@pytest.mark.parametrize(("text", "tokens"), [
    ("", 0),
    ("kettle", 2),  # lower-case letters: one token per started 3
    ("a", 1),
    ("Internationalization", 7),
    ("NASA", 2),  # capitals: one per started 2
    ("HTTPServer", 4),  # HTTP + Server
    ("2026", 4),  # every digit
    ("1 2 3", 5),  # a space before a digit stands alone
    ("a b c", 3),  # a space before a letter joins it
    ("x        y", 4),  # 8 spaces before a letter: 7 more, ceil(7/4)
    ("a.b,c!", 6),
    ("line\n\nline", 6),
    ("café", 2),  # caf + é (2 bytes: 1)
    ("привет", 6),  # Cyrillic: 2 bytes a letter, 1 token each
    ("日本語", 6),  # CJK: 3 bytes, 2 tokens each
    ("😀", 3),  # 4 bytes: 3
    ("👨\u200d👩", 8),  # two emoji and a zero-width joiner
])
def test_the_upper_bound_counts_each_kind_of_character_at_its_worst(text, tokens):
    assert upper_text_tokens(text) == tokens


def test_the_bound_is_scaled_by_the_models_tokenizer_ratio_and_an_unknown_model_takes_the_largest():
    text = "The quarterly review was excellent. " * 20
    legacy = upper_tokens(text, LEGACY)
    assert legacy == upper_text_tokens(text)
    assert upper_tokens(text, NEW) == -(-legacy * 135 // 100)
    assert upper_tokens(text, "claude-someday-9") == upper_tokens(text, NEW)


def test_the_bound_is_above_the_typical_estimate_on_prose_numbers_and_other_scripts():
    for text in ["The board was happy with the results. " * 50, "12 345 6789.25\n" * 50, "日本語の文章。" * 50]:
        assert upper_tokens(text, LEGACY) > estimate_tokens(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(exclude_categories=["Cs"])), model=st.sampled_from([NEW, LEGACY]))
def test_the_bound_holds_against_the_stubs_tokenizer_on_any_text(text, model):
    assert upper_tokens(text, model) >= count_text(text, model)


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("ab1 .\n日😀")), cut=st.integers(0, 200))
def test_the_bound_of_two_pieces_is_at_least_the_bound_of_their_join_minus_one(text, cut):
    # Blocks are bounded one by one: cutting a text never lowers its bound by more than the cut space.
    head, tail = text[:cut], text[cut:]
    assert upper_text_tokens(head) + upper_text_tokens(tail) + 1 >= upper_text_tokens(text)


def vote(document: str, model: str = NEW) -> CallRequest:
    return vote_request(Voter(0, model, "direct"), ["alpha", "beta"], document, structured=True)


def test_a_requests_bound_adds_framing_and_the_schema_and_its_prefix_leaves_out_the_tail():
    request = vote("Numbers: " + "4821 0.375 1299\n" * 400)
    total, prefix = upper_request_tokens(request), upper_request_tokens(request, prefix_only=True)
    tail = request.user_blocks[-1]
    assert total - prefix == upper_tokens(tail, NEW)
    without_schema = dataclasses.replace(request, output_schema=None)
    assert upper_request_tokens(without_schema) < total
    assert upper_request_tokens(dataclasses.replace(request, system="", user_blocks=())) >= FRAMING_TOKENS


@pytest.mark.parametrize("repeat", [10, 1000, 1500, 3000])
def test_marks_prefix_follows_the_rule_of_the_request_body(repeat):
    request = vote("The review was excellent. " * repeat)
    marked = any("cache_control" in block for block in message_body(request)["messages"][0]["content"])
    assert marks_prefix(request) == marked


def test_a_marked_prefix_is_priced_as_a_cache_write_at_the_ttl_of_its_lane():
    request = vote("The review was excellent. " * 3000)
    assert marks_prefix(request)
    sync, lane = call_cost(request), call_cost(request, lane=True)
    prefix = upper_request_tokens(request, prefix_only=True)
    assert sync.cache_write_usd == pytest.approx(prefix * 0.125 / 1e6)  # Haiku 5.5, 5-minute write
    assert lane.cache_write_usd == pytest.approx(prefix * 0.20 / 2 / 1e6)  # 1-hour write, Batches price
    unmarked = call_cost(dataclasses.replace(request, cache_blocks=0))
    assert unmarked.cache_write_usd == 0 and unmarked.total_usd < sync.total_usd


def test_a_call_above_the_long_prompt_tier_by_its_bound_pays_the_tier_on_every_token():
    text = " ".join(str(i % 10) for i in range(60_000))  # 4 characters a token says 30,000; the bound 160,000
    request = dataclasses.replace(vote(text), cache_blocks=0)
    cost = call_cost(request)
    assert cost.input_usd == pytest.approx(upper_request_tokens(request) * 0.50 / 1e6)
    assert cost.output_usd == pytest.approx(request.max_tokens * 2.50 / 1e6)


def test_the_tier_of_an_estimate_can_be_picked_by_a_larger_prompt_and_never_by_a_smaller_one():
    usage = TokenUsage(1000, 100)
    assert cost_of(NEW, usage, tier_prompt_tokens=200_000).input_usd == pytest.approx(1000 * 0.50 / 1e6)
    assert cost_of(NEW, TokenUsage(150_000), tier_prompt_tokens=10).input_usd == pytest.approx(150_000 * 0.50 / 1e6)
    assert cost_of(NEW, usage).input_usd == pytest.approx(1000 * 0.10 / 1e6)


def section_spec(n: int, output: int = 400, synthesis: int = 800) -> SectionSpec:
    step = StepSpec("Summarize.", None, None)
    return SectionSpec(sections=tuple(Section(i, f"part {i}", 0, 1) for i in range(n)), map=step, reduce=step,
                       section_output_tokens=output, synthesis_output_tokens=synthesis, page_sections=(),
                       document=None)


def worker_calls(sizes: list[int], budget: int, partial_size: int) -> int:
    """The synthesis calls the workers make (tasks.section.plan_next) for outputs measured at `sizes`."""
    calls, items = 0, list(sizes)
    while True:
        groups = plan_level(items, budget)
        if groups is None:
            return calls + 1
        calls += sum(1 for g in groups if len(g) > 1)
        items = [items[g[0]] if len(g) == 1 else partial_size for g in groups]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 60), budget=st.sampled_from([10, 500, 2000, 8000, 40_000]),
       output=st.sampled_from([100, 400, 1024]), synthesis=st.sampled_from([200, 800, 2048]))
def test_the_estimates_tree_has_at_least_the_calls_of_any_tree_the_workers_can_plan(data, n, budget, output,
                                                                                      synthesis):
    cap = output * OUTPUT_CHARS_PER_TOKEN // 4
    sizes = data.draw(st.lists(st.integers(1, cap), min_size=n, max_size=n))
    partial = data.draw(st.integers(1, synthesis * OUTPUT_CHARS_PER_TOKEN // 4))
    estimated = synthesis_costs(section_spec(n, output, synthesis), NEW, [f"part {i}" for i in range(n)], budget)
    assert len(estimated) >= worker_calls(sizes, budget, partial)


def test_outputs_that_fit_the_synthesis_budget_are_one_synthesis_reading_each_at_max_tokens():
    spec = section_spec(5)
    (final,) = synthesis_costs(spec, NEW, [f"part {i}" for i in range(5)], 8000)
    request = spec.synthesis_request(NEW, [], final=True)
    assert final.output_usd == pytest.approx(800 * 0.50 / 1e6)
    assert final.input_usd * 1e6 / 0.10 >= 5 * 400 * 1.35 + upper_request_tokens(request)
