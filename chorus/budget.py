"""Budgets: an upper-bound estimate of a planned run's cost, and the refusal when it is above the
budget (`--max-cost`, CHORUS_MAX_COST_USD). Below the plans' modules, so submitting checks it too.

The estimate is an upper bound of what the provider then bills, call by call, for the requests the
workers will build (`plan.spec()`, the one request builder):

* each prompt by `workflows.tokens.upper_request_tokens` (a bound of any subword tokenizer's count, in
  the model's tokenizer), or by the API's `count_tokens` where the caller counts;
* a prefix the request marks for the cache (`marks_prefix`) at the cache-write price of the TTL in use
  (5 minutes, or 1 hour in the batch lane), on EVERY call that marks it: cache-aware dispatch expects one
  write per model and reads for the rest, but a follower may still miss (anthropic-sdk-python #1451), and
  voters sent at once all write; no cache read is ever counted on;
* output at max_tokens;
* each request's own price tier (Haiku 5.5 bills every token of a prompt above 100,000 at 5x) by its
  bounded prompt;
* a section run's synthesis reading every section's output at its max_tokens, and the partial
  syntheses of a tree reduce when those outputs could exceed `synthesis_budget_tokens`
  (`synthesis_costs`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from providers.counting import count_tokens
from settings import Settings
from workflows.calls import CallRequest
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.errors import ConfigError
from workflows.runspec import SectionSpec, VoteSpec
from workflows.sectioning import Part, plan_level, span_label
from workflows.tokens import ESTIMATE_CHARS_PER_TOKEN, marks_prefix, tokenizer_ratio, upper_request_tokens

# The most characters one output token can stand for, as far as the tree reduce's sizes go: the workers
# measure a section's output by the typical estimate (4 characters a token, `sectioning.output_tokens`),
# so a reply of max_tokens tokens measures at most max_tokens * 8 / 4. Prose runs 4-5 characters a token,
# code and long words up to about 7; a reply padded with long runs of spaces could measure more.
OUTPUT_CHARS_PER_TOKEN = 8


def estimate_plan(plan: Any, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
    """An upper bound of what one planned run costs, marked as an estimate (see the module's docstring).
    A vote: every voter's call (and a pre-warm's), each prompt counted with Claude's `count_tokens` when
    `count` and the provider is Claude, else bounded locally. A section run: every section's map call
    (always bounded locally: a long document has thousands) and the synthesis. With `lane="batch"` the
    voter and section calls are priced at the Batches API price with the lane's 1-hour cache writes (the
    synthesis, like a pre-warm, goes the normal way)."""
    in_lane = lane == "batch"
    spec = plan.spec()  # the requests the workers will build from the stored config
    if isinstance(spec, VoteSpec):
        calls = [(spec.voter_request(voter, plan.document), in_lane) for voter in spec.voters]
        dispatch = getattr(plan, "dispatch", None)
        calls += [(spec.prewarm_request(model, plan.document), False) for _, model in (dispatch.prewarm
                                                                                       if dispatch else ())]
        return total(call_cost(request, lane=sent_in_lane,
                               counted=_counted(request, settings) if count else None)
                     for request, sent_in_lane in calls)
    assert isinstance(spec, SectionSpec)
    costs = [call_cost(spec.section_request(plan.model, s.index, plan.section_document(s.index)), lane=in_lane)
             for s in plan.sections]
    config = plan.config()
    reduce = plan.task.reduce
    if reduce is not None and plan.reduce_model is not None and not plan.task.merge \
            and (len(plan.sections) > 1 or config["synthesize_single"]):
        costs += synthesis_costs(spec, plan.reduce_model, [s.title for s in plan.sections],
                                 config["synthesis_budget_tokens"])
    return total(costs)


def _counted(request: CallRequest, settings: Settings) -> int | None:
    """The prompt as Claude's count_tokens counts it, or None offline (then the local bound prices it)."""
    tokens, estimated = count_tokens(request, settings)
    return None if estimated else tokens


def call_cost(request: CallRequest, *, lane: bool = False, counted: int | None = None,
              extra_input: int = 0, tier_prompt_tokens: int | None = None) -> Cost:
    """An upper bound of one call's cost: its prompt (`counted` by the API, else bounded) plus
    `extra_input` tokens, the marked prefix at the write price of its TTL (`lane`: the Batches API's
    price, with the lane's 1-hour TTL), output at max_tokens, priced at the tier of its prompt (or of
    `tier_prompt_tokens` when larger)."""
    if lane:
        request = dataclasses.replace(request, cache_ttl="1h")
    prompt = (counted if counted is not None else upper_request_tokens(request)) + extra_input
    write = min(prompt, upper_request_tokens(request, prefix_only=True)) if marks_prefix(request) else 0
    usage = TokenUsage(prompt - write, request.max_tokens, cache_write_tokens=write, estimated=True)
    return cost_of(request.model, usage, cache_ttl="1h" if request.cache_ttl == "1h" else "5m", batch_api=lane,
                   tier_prompt_tokens=tier_prompt_tokens)


def synthesis_costs(spec: SectionSpec, model: str, titles: list[str], budget: int) -> list[Cost]:
    """Upper bounds of the synthesis calls of a section run whose sections (their `titles`) all succeed.

    Each section's output is read once, at its max_tokens in the reduce model's tokenizer, and each
    partial synthesis' output once at its max_tokens. The workers group the outputs by their measured
    size (`plan_level`, on the typical estimate of the text they got); the tree is planned here on the
    largest size an output can measure (`OUTPUT_CHARS_PER_TOKEN`), all equal: the greedy grouping then
    makes at least as many groups, level by level, as on any smaller sizes, so this tree has at least
    the workers' number of calls and of partial outputs, and reads at least as much. Every call is
    priced at the tier of the largest prompt any synthesis call could have: all the sections' outputs
    in one."""
    ratio = max(1.0, tokenizer_ratio(model))
    section_in = math.ceil(spec.section_output_tokens * ratio)
    partial_in = math.ceil(spec.synthesis_output_tokens * ratio)
    section_size = _measured(spec.section_output_tokens)
    partial_size = _measured(spec.synthesis_output_tokens)
    partial_label = span_label(1, len(titles))  # the longest label a partial synthesis can have
    items = [(title[:200], section_in) for title in titles]
    size = section_size
    calls: list[tuple[list[tuple[str, int]], bool]] = []
    while True:
        groups = plan_level([size] * len(items), budget)
        if groups is None:
            calls.append((items, True))
            break
        carried: list[tuple[str, int]] = []
        for group in groups:
            if len(group) == 1:
                carried.append(items[group[0]])
                continue
            calls.append(([items[i] for i in group], False))
            carried.append((partial_label, partial_in))
        items = carried
        size = max(section_size, partial_size)
    widest = max(section_in, partial_in)
    largest = _synthesis_prompt(spec, model, [(title[:200], widest) for title in titles])
    costs = []
    for parts, final in calls:
        request = spec.synthesis_request(model, [Part(label, "") for label, _ in parts], final=final)
        costs.append(call_cost(request, extra_input=sum(tokens for _, tokens in parts), tier_prompt_tokens=largest))
    return costs


def _measured(output_tokens: int) -> int:
    """The largest size the workers can measure for a reply of `output_tokens` tokens."""
    return math.ceil(output_tokens * OUTPUT_CHARS_PER_TOKEN / ESTIMATE_CHARS_PER_TOKEN)


def _synthesis_prompt(spec: SectionSpec, model: str, parts: list[tuple[str, int]]) -> int:
    """The bounded prompt of one final synthesis call reading `parts` (label, tokens of its text)."""
    request = spec.synthesis_request(model, [Part(label, "") for label, _ in parts], final=True)
    return upper_request_tokens(request) + sum(tokens for _, tokens in parts)


def check_budget(estimate: Cost, budget: float | None, what: str) -> None:
    """Refuse (ConfigError, before anything is sent) when the estimate is above the budget."""
    if budget is not None and estimate.total_usd > budget:
        raise ConfigError(
            f"{what} is estimated at ${estimate.total_usd:.4f} (an upper bound: prompts bounded, output counted at "
            f"max_tokens, cache writes on every call that marks its prefix), above the budget of ${budget:.4f} "
            f"(--max-cost / CHORUS_MAX_COST_USD); nothing was sent. Raise the budget, or send fewer documents, "
            f"voters or sections")
