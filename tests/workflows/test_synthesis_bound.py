"""The synthesis part of a section run's estimate (`chorus.budget.synthesis_costs`) bounds every tree the
workers can build (issue 22, item 1; issue 25, item 6).

The workers' side is played by the workers' own code: `plan_level` groups each level's items by their
measured size, `SectionSpec.synthesis_request` builds each call (its max_tokens fitted to its parts'
recorded output when the reduce step has an output schema), and each call is priced by `cost_of` on its
own prompt, so Haiku 5.5's long-prompt tier applies call by call. What the model writes is the adversary
(Hypothesis): every reply anywhere from empty to its max_tokens, a retried section's usage counting both
calls, and any size the workers can measure for it, from 8 characters a token down to a character of
3 tokens (emoji), which packs many dense replies into one group. The estimate must be at least what
each such run costs, and it must stay near what the largest run costs (it is a bound, not a guess)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from hypothesis import event, given, settings
from hypothesis import strategies as st

from chorus.budget import OUTPUT_CHARS_PER_TOKEN, UPPER_TOKENS_PER_CHAR, synthesis_costs
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.runspec import SectionSpec, StepSpec
from workflows.sectioning import Part, Section, plan_level, span_label
from workflows.tokens import ESTIMATE_CHARS_PER_TOKEN, tokenizer_ratio, upper_request_tokens

NEW, LEGACY = "claude-haiku-5-5", "claude-haiku-4-5"
OPTIONS = {"type": "object", "required": ["options"], "properties": {"options": {"type": "array", "items": {
    "type": "object", "required": ["flag", "meaning"],
    "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}


def spec_of(n: int, *, schema: bool, synthesis: int = 800) -> SectionSpec:
    step = StepSpec("Merge the lists into one.", None, OPTIONS if schema else None)
    return SectionSpec(sections=tuple(Section(i, f"PART {i}", 0, 1) for i in range(n)), map=step, reduce=step,
                       section_output_tokens=1024 if schema else 400, synthesis_output_tokens=synthesis,
                       page_sections=(), document=None, map_output_fit=schema, synthesis_output_fit=schema)


@dataclasses.dataclass
class Item:
    label: str
    first: int  # the sections it covers (0-based)
    last: int
    text: int  # tokens of its text (in its own model's tokenizer)
    usage: int  # output tokens recorded for it (a retried section: both calls)
    measured: int  # what `output_tokens` measures for its text (4 characters a token)


def measured_for(draw: st.DrawFn, tokens: int) -> int:
    """Any size the workers can measure for a reply of `tokens` tokens: from 8 characters a token down to
    3 tokens a character."""
    chars = draw(st.integers(math.ceil(tokens / UPPER_TOKENS_PER_CHAR), tokens * OUTPUT_CHARS_PER_TOKEN))
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN)


def worker_run_cost(draw: st.DrawFn, spec: SectionSpec, model: str, sections: list[Item], budget: int
                    ) -> tuple[Cost, int]:
    """What one synthesis tree costs when the workers build it (tasks.section.plan_next) and every reply
    is as the adversary draws it, and the largest prompt of its calls."""
    ratio = max(1.0, tokenizer_ratio(model))
    items = list(sections)
    costs = []
    widest = 0
    while True:
        groups = plan_level([i.measured for i in items], budget)
        final = groups is None
        carried: list[Item] = []
        for group in [list(range(len(items)))] if groups is None else groups:
            members = [items[i] for i in group]
            if len(members) == 1 and not final:
                carried.append(members[0])
                continue
            request = spec.synthesis_request(model, [Part(m.label, "", m.usage) for m in members], final=final)
            prompt = upper_request_tokens(request) + sum(math.ceil(m.text * ratio) for m in members)
            written = draw(st.one_of(st.just(request.max_tokens), st.integers(0, request.max_tokens)))
            widest = max(widest, prompt)
            costs.append(cost_of(model, TokenUsage(prompt, written)))
            first, last = members[0].first, members[-1].last
            carried.append(Item(span_label(first + 1, last + 1), first, last, written, written,
                                measured_for(draw, written)))
        if final:
            return total(costs), widest
        items = carried


@st.composite
def runs(draw: st.DrawFn) -> tuple[SectionSpec, str, int, list[int], list[int], tuple[Cost, int]]:
    """A section run's synthesis: its spec, reduce model, budget, the sections' bounds (usage, text) and
    what one tree the workers build for drawn replies costs."""
    schema = draw(st.booleans())
    n = draw(st.integers(2, 40))
    model = draw(st.sampled_from([NEW, LEGACY]))
    spec = spec_of(n, schema=schema, synthesis=draw(st.sampled_from([200, 800, 2048])))
    budget = draw(st.sampled_from([10, 600, 8000, 40_000]))
    # Each section's map budget, and its retry's (twice it) with a schema: its usage bound counts both.
    firsts = draw(st.lists(st.sampled_from([400, 1024, 3000, 9000, 20_000]), min_size=n, max_size=n))
    usage = [m * 3 if schema else m for m in firsts]
    texts = [m * 2 if schema else m for m in firsts]
    sections = []
    for i, (m, u, t) in enumerate(zip(firsts, usage, texts, strict=True)):
        retried = schema and draw(st.booleans())
        text = draw(st.one_of(st.just(t if retried else m), st.integers(0, t if retried else m)))
        recorded = m + text if retried else text
        assert recorded <= u
        sections.append(Item(f"PART {i}", i, i, text, recorded, measured_for(draw, text)))
    return spec, model, budget, usage, texts, worker_run_cost(draw, spec, model, sections, budget)


@settings(max_examples=300, deadline=None)
@given(run=runs())
def test_no_tree_the_workers_can_build_costs_more_than_the_estimate(run):
    spec, model, budget, usage, texts, (paid, widest) = run
    event(f"fitted synthesis budget: {spec.synthesis_output_fit}; a call above 100,000 tokens: {widest > 100_000}")
    estimate = total(synthesis_costs(spec, model, [f"PART {i}" for i in range(len(usage))], budget,
                                     section_outputs=usage, section_texts=texts))
    assert paid.total_usd <= estimate.total_usd * (1 + 1e-9), (paid.to_json(), estimate.to_json())


def largest_tree(spec: SectionSpec, model: str, texts: Sequence[int], budget: int) -> Cost:
    """The tree of replies all at max_tokens, each measured at 4 characters a token (typical text)."""
    ratio = max(1.0, tokenizer_ratio(model))
    items = [(f"PART {i}", i, i, t) for i, t in enumerate(texts)]
    costs = []
    while True:
        groups = plan_level([t for *_, t in items], budget)
        final = groups is None
        carried = []
        for group in [list(range(len(items)))] if groups is None else groups:
            members = [items[i] for i in group]
            if len(members) == 1 and not final:
                carried.append(members[0])
                continue
            request = spec.synthesis_request(model, [Part(m[0], "", m[3]) for m in members], final=final)
            prompt = upper_request_tokens(request) + sum(math.ceil(m[3] * ratio) for m in members)
            costs.append(cost_of(model, TokenUsage(prompt, request.max_tokens)))
            carried.append((span_label(members[0][1] + 1, members[-1][2] + 1), members[0][1], members[-1][2],
                            request.max_tokens))
        if final:
            return total(costs)
        items = carried


def test_many_short_parts_on_haiku_5_5_are_priced_at_the_base_tier_level_by_level():
    # 300 sections: all their outputs together are above Haiku 5.5's 100,000-token tier, while a call of
    # typical text reads ten of them. The estimate of before priced every synthesis call at the upper tier
    # (5x), as if one call read them all: 7.0x the largest tree of typical text. What is left above it is
    # one call of the first level that could read 140,000 tokens (replies dense enough, 3 tokens a
    # character, that one group of 3 or more holds that many), at the upper tier.
    n = 300
    spec = spec_of(n, schema=False)
    estimate = total(synthesis_costs(spec, NEW, [f"PART {i}" for i in range(n)], 8000))
    largest = largest_tree(spec, NEW, [400] * n, 8000)
    assert largest.total_usd <= estimate.total_usd < 4 * largest.total_usd
    assert total(synthesis_costs(spec, LEGACY, [f"PART {i}" for i in range(n)], 8000)).total_usd \
        < 1.5 * largest_tree(spec, LEGACY, [400] * n, 8000).total_usd  # no tier: the level sums alone
