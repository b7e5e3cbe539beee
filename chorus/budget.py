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
* output at max_tokens; a map call with an output schema twice, the second at its retry's larger
  budget (a reply cut before its JSON was complete is sent once more, `SectionSpec.retry_request`);
* a vote whose task escalates (`escalate_to`): one more call at that model, as if every document
  escalated, at the normal price (above the Batches API's, whichever way it is sent);
* each request's own price tier (Haiku 5.5 bills every token of a prompt above 100,000 at 5x) by its
  bounded prompt;
* a section run's synthesis, level by level over any tree the workers can build (`synthesis_costs`):
  each section's reply read once at its last call's max_tokens, the partial syntheses of a tree reduce
  at what their budgets let them write, each level's calls at the base tier unless one of them can read
  past the model's long-prompt tier (tests/workflows/test_synthesis_bound.py plays the workers' side).
"""

from __future__ import annotations

import dataclasses
import math
from html import escape
from typing import Any

from providers.counting import count_tokens
from settings import Settings
from workflows.calls import Attachment, CallRequest
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.errors import ConfigError
from workflows.escalation import escalation_request
from workflows.orchestrating import TITLE_MAX, Subtask, SubtaskPlan, part_label
from workflows.registry import max_output_tokens, model_info
from workflows.runspec import OrchestrateSpec, SectionSpec
from workflows.sectioning import (
    SYNTHESIS_OUTPUT_MARGIN,
    plan_level,
    skeleton_tokens,
    span_label,
    synthesis_budget_for,
)
from workflows.tokens import (
    ESTIMATE_CHARS_PER_TOKEN,
    marks_prefix,
    tokenizer_ratio,
    upper_request_tokens,
    upper_tokens,
)

# The most characters one output token can stand for, as far as the tree reduce's sizes go: the workers
# measure a section's output by the typical estimate (4 characters a token, `sectioning.output_tokens`),
# so a reply of max_tokens tokens measures at most max_tokens * 8 / 4. Prose runs 4-5 characters a token,
# code and long words up to about 7; a reply padded with long runs of spaces could measure more.
OUTPUT_CHARS_PER_TOKEN = 8
# The most tokens of the older tokenizer one character can be (`workflows.tokens.upper_text_tokens`: a
# character of 4 UTF-8 bytes, an emoji); a run of characters measured by the workers bounds its tokens so.
UPPER_TOKENS_PER_CHAR = 3


def estimate_plan(plan: Any, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
    """An upper bound of what one planned run costs, marked as an estimate (see the module's docstring):
    the plan's own `estimate` (`chorus.plans.Plan`; a vote's is `estimate_vote`, a section run's
    `estimate_section`). With `lane="batch"` the calls the lane carries are priced at the Batches API
    price with the lane's 1-hour cache writes."""
    return plan.estimate(settings, count=count, lane=lane)


def estimate_vote(plan: Any, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
    """A vote's upper bound: every voter's call (and a pre-warm's), each prompt counted with Claude's
    `count_tokens` when `count` and the provider counts tokens, else bounded locally. In the batch lane
    the voters' calls are at the Batches API price (a pre-warm goes the normal way)."""
    in_lane = lane == "batch"
    spec = plan.spec()  # the requests the workers will build from the stored config
    calls = [(spec.voter_request(voter, plan.document), in_lane) for voter in spec.voters]
    dispatch = getattr(plan, "dispatch", None)
    calls += [(spec.prewarm_request(model, plan.document), False) for _, model in (dispatch.prewarm
                                                                                   if dispatch else ())]
    escalation = escalation_request(spec, plan.document)
    if escalation is not None:  # every document may escalate; at the normal price, above the lane's
        calls.append((escalation, False))
    return total(call_cost(request, lane=sent_in_lane,
                           counted=_counted(request, settings) if count else None)
                 for request, sent_in_lane in calls)


def estimate_section(plan: Any, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
    """A section run's upper bound: every section's map call (always bounded locally: a long document has
    thousands; `count` is not used) and the synthesis. In the batch lane the map calls are at the Batches
    API price (the synthesis goes the normal way)."""
    in_lane = lane == "batch"
    spec = plan.spec()  # the requests the workers will build from the stored config
    costs = []
    outputs = []  # the most output tokens each section's slot can record: both calls' when retried
    texts = []  # the most tokens its reply's text can have: the last call's max_tokens
    for s in plan.sections:
        request = spec.section_request(plan.model, s.index, plan.section_document(s.index))
        costs.append(call_cost(request, lane=in_lane))
        retry = spec.retry_request(request)  # a JSON reply cut at max_tokens is sent once more, with more
        if retry is not None:
            costs.append(call_cost(retry, lane=in_lane))
        outputs.append(request.max_tokens + (retry.max_tokens if retry else 0))
        texts.append(max(request.max_tokens, retry.max_tokens if retry else 0))
    config = plan.config()
    reduce = plan.task.reduce
    if reduce is not None and plan.reduce_model is not None and not plan.task.merge \
            and (len(plan.sections) > 1 or config["synthesize_single"]):
        costs += synthesis_costs(spec, plan.reduce_model, [s.title for s in plan.sections],
                                 config["synthesis_budget_tokens"], section_outputs=outputs,
                                 section_texts=texts)
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


def synthesis_costs(spec: SectionSpec | OrchestrateSpec, model: str, titles: list[str], budget: int, *,
                    section_outputs: list[int] | None = None, section_texts: list[int] | None = None) -> list[Cost]:
    """Upper bounds of the synthesis calls of a section run whose sections (their `titles`) all succeed:
    the cost of every level of the tree the workers can build, one entry per call of the estimate's tree
    (a level's bound shared evenly by its calls). `section_outputs`: the most output tokens each section's
    slot can record (its usage: both calls when a cut JSON reply is sent again), which sizes a fitted
    synthesis budget; `section_texts`: the most tokens of the reply text the synthesis reads (the last
    call's, at most its max_tokens); `spec.section_output_tokens` each by default.

    What the workers do (tasks/section.py): each level groups its items (the sections' replies, then the
    partial syntheses and a lone last item carried up) by their measured size (`output_tokens`, 4
    characters a token) with `plan_level`, which makes groups of at least two items and puts three or
    more in one group only when their sizes add up to the budget; a group is one call, whose max_tokens
    is `synthesis_output_tokens`, or with an output schema the fitted budget of its parts' recorded output
    (`synthesis_budget_for`: 1.25 x the tokenizer ratio x their sum, plus the schema's keys, at most the
    model's max output). The grouping is not known before the replies are, so the bound does not follow
    one tree; level by level it bounds:

    * how many calls: `plan_level` on every item at the largest size an item of the level can measure
      (`OUTPUT_CHARS_PER_TOKEN`) makes at least as many groups, and as many levels, as on any smaller
      sizes (the end of each greedy group can only move right when sizes shrink), so its count of calls
      and items bounds the workers' level by level; a level that ends in one synthesis costs no more
      than the same level bounded as groups (it reads the same items once, writes at most one group's
      most), so stopping early is covered;
    * what all its calls read together: every item of the level once (a section at its text bound in the
      reduce model's tokenizer, a partial at what the calls of the level below may write), each call's
      own prompt (`upper_request_tokens`) and each part's framing;
    * what they write together: at most each call's most, and with a fitted budget at most 1.25 x ratio
      x the usage the level holds plus each call's offset (the budget is affine in its parts' sum);
    * the price tier (Haiku 5.5 bills every token of a request above 100,000 at 5x) call by call: one call
      reads at most two items, or three and more of at most `budget` measured units (4 x budget
      characters, 3 tokens a character at most), so a level whose largest call is below the tier is
      priced at the base tier; otherwise as many calls as the level's reading can fill above the tier
      pay the upper tier on what they read and write at most.

    A section whose reply fails is not read (fewer items: every sum above is smaller). The workers'
    budgets are what make the bound large: with a fitted budget each level may write 1.25 x ratio x what
    it read, at most the model's max output a call (docs/decisions.md)."""
    n = len(titles)
    ratio = max(1.0, tokenizer_ratio(model))
    usage = list(section_outputs or [spec.section_output_tokens] * n)
    texts = list(section_texts or usage)
    schema = spec.reduce.output_schema
    fit = spec.synthesis_output_fit and schema is not None
    ceiling = max_output_tokens(model)
    fixed = spec.synthesis_output_tokens
    slope = SYNTHESIS_OUTPUT_MARGIN * ratio if fit else 0.0  # fitted budget <= slope * usage + offset
    offset = max(fixed, skeleton_tokens(schema, model) + 1) if fit and schema is not None else fixed

    def most_written(parts_usage: int) -> int:
        """The largest max_tokens of one call whose parts recorded at most this many output tokens."""
        if not fit or schema is None:
            return fixed
        return synthesis_budget_for(fixed, schema, [parts_usage], model, ceiling)

    digits = len(str(max(n, 1)))  # a part's number and the count of parts are at most n

    def framing(label: str) -> int:
        """A part's framing in the synthesis block, a token either side of its text for the joins."""
        return upper_tokens(f'<part n="{"9" * digits}" label="{escape(label)}">\n\n</part>\n', model) + 2

    labels = [title[:200] or f"part {n}" for title in titles]
    # The prompt of a synthesis call with no parts (its scope, final or partial, the larger), its count's digits.
    base = max(upper_request_tokens(spec.synthesis_request(model, [], final=final)) for final in (True, False)) \
        + math.ceil(ratio) * digits
    frame = max(framing(label) for label in [*labels, span_label(n, n), span_label(1, n)])
    dense = math.ceil(ratio * UPPER_TOKENS_PER_CHAR * ESTIMATE_CHARS_PER_TOKEN * budget)
    info = model_info(model)
    above = info.long_prompt.above_prompt_tokens if info is not None and info.long_prompt is not None else None

    items = n
    held = sum(usage)  # the output tokens the level's items recorded, at most
    held_one = max(usage)
    fresh = sum(math.ceil(t * ratio) for t in texts)  # the text of the items made by the level below, as read
    carried = 0  # at most the text of an item carried up unchanged (priced where it was made)
    read_one = max(math.ceil(t * ratio) for t in texts)
    frames = sum(framing(label) for label in labels)
    size = max(_measured(t) for t in texts)
    costs: list[Cost] = []
    while True:
        groups = plan_level([size] * items, budget)
        calls = 1 if groups is None else sum(1 for group in groups if len(group) > 1)
        most = most_written(held)  # one call reading every item of the level
        written = calls * most if not fit else min(calls * most, math.ceil(slope * held) + calls * offset)
        read = fresh + carried
        level = _priced(model, calls * base + fresh + frames, written, upper=False)
        widest = base + min(read + frames, max(2 * (read_one + frame), min(read, dense) + frames))
        if above is not None and widest > above:
            big = calls if base >= above else min(calls, (read + frames) // (above - base + 1))
            if big:
                big_prompt, big_written = min(big * widest, big * base + read + frames), min(big * most, written)
                upper, lower = (_priced(model, big_prompt, big_written, upper=tier) for tier in (True, False))
                level = Cost(level.input_usd + upper.input_usd - lower.input_usd,
                             level.output_usd + upper.output_usd - lower.output_usd, estimated=True)
        costs += [Cost(level.input_usd / calls, level.output_usd / calls, estimated=True)] * calls
        if groups is None:
            return costs
        # The next level: the partials (each at most `most`) and a lone item carried up (at most the largest).
        items = len(groups)
        held = min(written + held_one, math.ceil(slope * held) + calls * offset) if fit else written + held_one
        fresh, carried = math.ceil(written * ratio) + calls, read_one
        held_one, read_one = max(held_one, most), max(read_one, math.ceil(most * ratio))
        frames = items * frame
        size = max(size, _measured(most))


# A subtask's text joins its tags in the worker's prompt: a token either side of each of its three strings.
SUBTASK_JOIN_TOKENS = 6


def estimate_orchestrate(spec: OrchestrateSpec, document: str | Attachment, *, lane: str = "sync") -> Cost:
    """An upper bound of an orchestrate run's cost before its plan is known (`workflows.orchestrating`):

    * the planner's call, output at its max_tokens, at the normal price (above the Batches API's,
      whichever way it is sent);
    * `max_workers` workers, each at its output budget and writing the shared prefix (no read counted).
      Each prompt is the worker's request for an empty subtask (the largest number, the fallback title
      `subtask N`), plus its subtask's text: every subtask's title, instructions and focus come from the
      planner's reply, so together they are at most its max_tokens (read in the workers' tokenizer, x its
      ratio, as a synthesis reads section replies), plus a token either side of each string. Every worker
      is priced at the tier of a prompt holding the whole reply. In the batch lane, at its price and 1-hour
      writes;
    * the synthesis of `max_workers` results, each at the workers' budget and labelled with the longest
      label a title can make (`part_label`: `TITLE_MAX` apostrophes, 6 tokens each once escaped), by the
      section run's bound of every tree the workers can build (`synthesis_costs`), at the normal price.

    A plan of fewer subtasks costs less on every line. The planner is counted once: a plan that fails is
    not asked again."""
    in_lane = lane == "batch"
    n = spec.max_workers
    planner = call_cost(spec.planner_request(document))
    empty = SubtaskPlan(tuple(Subtask(f"subtask {n}", "", "") for _ in range(n)))
    worker = spec.worker_request(empty, n - 1, document)
    share = math.ceil(spec.plan_output_tokens * max(1.0, tokenizer_ratio(worker.model)))
    widest = upper_request_tokens(worker) + share + SUBTASK_JOIN_TOKENS
    workers = [call_cost(worker, lane=in_lane, extra_input=SUBTASK_JOIN_TOKENS + (share if i == 0 else 0),
                         tier_prompt_tokens=widest) for i in range(n)]
    label = part_label(n - 1, "'" * TITLE_MAX)
    synthesis = synthesis_costs(spec, spec.reduce_model, [label] * n, spec.synthesis_budget_tokens,
                                section_outputs=[spec.work_output_tokens] * n,
                                section_texts=[spec.work_output_tokens] * n)
    return total([planner, *workers, *synthesis])


def _priced(model: str, prompt: int, output: int, *, upper: bool) -> Cost:
    """`prompt` input and `output` tokens at the model's base tier, or at its long-prompt tier (`upper`)."""
    info = model_info(model)
    tier = info.long_prompt.above_prompt_tokens + 1 if upper and info is not None and info.long_prompt else None
    unit = cost_of(model, TokenUsage(1, 1), tier_prompt_tokens=tier)
    return Cost(unit.input_usd * prompt, unit.output_usd * output, estimated=True)


def _measured(output_tokens: int) -> int:
    """The largest size the workers can measure for a reply of `output_tokens` tokens."""
    return math.ceil(output_tokens * OUTPUT_CHARS_PER_TOKEN / ESTIMATE_CHARS_PER_TOKEN)


def check_budget(estimate: Cost, budget: float | None, what: str) -> None:
    """Refuse (ConfigError, before anything is sent) when the estimate is above the budget."""
    if budget is not None and estimate.total_usd > budget:
        raise ConfigError(
            f"{what} is estimated at ${estimate.total_usd:.4f} (an upper bound: prompts bounded, output counted at "
            f"max_tokens, cache writes on every call that marks its prefix), above the budget of ${budget:.4f} "
            f"(--max-cost / CHORUS_MAX_COST_USD); nothing was sent. Raise the budget, or send fewer documents, "
            f"voters or sections")
