"""Cost of stored outcomes, runs and batches, computed on read from the measured usage.

Nothing is stored: prices change, usage does not. Offline usage is an estimate and every Cost
built from it says so (`Cost.estimated`).

The *minimum* a run could have cost is computed independently of what chorus did with the cache:

* the shared prefix (system prompt + the document block every voter of a model sends) is measured
  by counting the tokens of that request with the API's `count_tokens` (`providers.counting`), or
  with the local estimate offline (then the minimum is marked estimated);
* each call's whole prompt is what the API billed for it, input + cache write + cache read, a total
  that is the same whatever was cached; its tail is that total minus the prefix;
* the cheapest legal schedule under Anthropic's cache rules: per model with at least two calls and a
  prefix at least the model's minimum, one cache write of the prefix and a read for every other
  call (`workflows.cost.minimum_vote_cost`); otherwise every call pays its whole prompt as input.

So a run that cached nothing shows a ratio well above 1 (about 2x for 3 voters on a long prefix),
and the ratio is 1 only when the run really paid one write and N-1 reads.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tasks.all_patterns  # noqa: F401 - every pattern's entry, for `shared_prefixes`
from models import Session, repo
from providers import provider_capabilities
from providers.counting import count_tokens
from settings import Settings
from tasks import patterns
from workflows.attachments import attachment_of
from workflows.calls import Attachment, CallRequest
from workflows.cost import Cost, TokenUsage, cost_of, cost_without_cache, minimum_vote_cost, total
from workflows.registry import supports_structured_outputs
from workflows.runspec import vote_spec
from workflows.tokens import min_cacheable_tokens
from workflows.voting import Voter, vote_request

# (tokens, estimated?) of a request: `providers.counting.count_tokens` bound to settings, or a test's own.
TokenCounter = Callable[[CallRequest], tuple[int, bool]]


def outcome_usage(o: Any) -> TokenUsage:
    return TokenUsage(o.input_tokens, o.output_tokens, o.cache_write_tokens, o.cache_read_tokens,
                      estimated=o.usage_estimated)



def in_lane(o: Any, run: Any = None) -> bool:
    """Whether the batch lane carried the outcome's call: it names the provider batch that did."""
    return getattr(o, "provider_batch", None) is not None


def outcome_cost(o: Any, run: Any = None) -> Cost:
    """An outcome's cost; a call the batch lane carried at the Batches API price (half) with the 1-hour
    cache-write price the lane's requests use."""
    lane = in_lane(o, run)
    return cost_of(o.model, outcome_usage(o), cache_ttl="1h" if lane else "5m", batch_api=lane)


def request_cost(u: Any) -> Cost:
    """The cost of one request's stored usage (`repo.ModelUsage`), at the lane's price when it went there."""
    return cost_of(u.model, TokenUsage(u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens,
                                       estimated=u.estimated),
                   cache_ttl="1h" if u.lane else "5m", batch_api=u.lane)


def run_cost(run: Any) -> Cost:
    return total(outcome_cost(o, run) for o in run.outcomes)


def run_cost_without_cache(run: Any) -> Cost:
    return total(_without_cache(o, in_lane(o, run)) for o in run.outcomes)


def _without_cache(o: Any, lane: bool) -> Cost:
    if not lane:
        return cost_without_cache(o.model, outcome_usage(o))
    usage = outcome_usage(o)
    return cost_of(o.model, TokenUsage(usage.prompt_tokens, usage.output_tokens, estimated=usage.estimated),
                   batch_api=True)


def _succeeded(run: Any) -> list[Any]:
    """The calls the minimum is for: every succeeded voter, section and synthesis call. A pre-warm is
    not one of them: the minimum's schedule writes the prefix with a voter, so a pre-warm shows as
    cost above the minimum."""
    return [o for o in run.outcomes if o.status == "succeeded" and getattr(o, "role", "voter") != "prewarm"]


def shared_prefixes(run: Any, config: Mapping[str, Any], text: str, count: TokenCounter) -> dict[str, tuple[int, bool]]:
    """model -> (tokens, estimated?) of the prefix the voters of that model share, counted from the
    request itself. Only models with two succeeded calls or more: a lone call has nobody to share with."""
    if not patterns.entry(run.pattern).shares_prefix or "labels" not in config:
        return {}
    spec = vote_spec(config)
    document: str | Attachment = text
    if spec.document is not None:  # a PDF or image: the prefix is the document itself, counted from its bytes
        with Session() as s:  # as base64, even when the run uploaded it: count_tokens takes no file source
            document = attachment_of(spec.document.entry, text=text, data=repo.blob_data(s, spec.document.blob))
    calls_per_model: dict[str, int] = defaultdict(int)
    for o in _succeeded(run):
        calls_per_model[o.model] += 1
    prefixes: dict[str, tuple[int, bool]] = {}
    for model, calls in calls_per_model.items():
        if calls < 2:
            continue
        voter = next((v for v in spec.voters if v.model == model), Voter(0, model, "direct"))
        request = vote_request(voter, spec.task, document, structured=supports_structured_outputs(model))
        prefix_request = request.prefix_request()
        prefixes[model] = count(prefix_request)
    return prefixes


def run_minimum_cost(run: Any, prefixes: Mapping[str, tuple[int, bool]]) -> Cost:
    """The cheapest the run's succeeded calls could have been under Anthropic's cache rules, given
    the independently counted shared prefix of each model (`shared_prefixes`). Failed calls are
    billed nothing and left out."""
    by_model: dict[tuple[str, bool], list[Any]] = defaultdict(list)
    for o in _succeeded(run):
        by_model[(o.model, in_lane(o))].append(o)
    costs = []
    for (model, lane), outcomes in by_model.items():
        prompts = [outcome_usage(o).prompt_tokens for o in outcomes]
        estimated = any(o.usage_estimated for o in outcomes)
        prefix, prefix_estimated = prefixes.get(model, (0, False))
        prefix = min([prefix, *prompts])  # a prefix is never longer than the prompts that hold it
        # The cache floor is the registry's (with its source), unless the responses showed this prefix
        # cached: the provider's own word is then the floor (the registry may take the larger figure).
        shown = any(o.cache_write_tokens or o.cache_read_tokens for o in outcomes)
        floor = 0 if shown else min_cacheable_tokens(model)
        cost = minimum_vote_cost(model, prefix, [p - prefix for p in prompts], [o.output_tokens for o in outcomes],
                                 min_cacheable=floor, lane=lane)
        costs.append(dataclasses.replace(cost, estimated=cost.estimated or estimated or prefix_estimated))
    return total(costs)


def token_counter(settings: Settings) -> TokenCounter:
    """count_tokens with the settings' provider (free with Claude; the local estimate offline),
    remembering each distinct request so a batch of one document's voters is counted once."""
    seen: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], tuple[int, bool]] = {}

    def count(request: CallRequest) -> tuple[int, bool]:
        key = (request.model, request.system, request.user_blocks,
               tuple(a.sha256 or a.file_id or '' for a in request.attachments))
        if key not in seen:
            seen[key] = count_tokens(request, settings)
        return seen[key]

    return count


def minimum_cost(runs: Iterable[Any], settings: Settings, count: TokenCounter | None = None) -> Cost:
    """The minimum of stored runs (their config and document read from the database), summed."""
    count = count or token_counter(settings)
    costs = []
    for run in runs:
        with Session() as s:
            config, text = repo.run_inputs(s, run.id)
        costs.append(run_minimum_cost(run, shared_prefixes(run, config or {}, text, count)))
    return total(costs)


def minimum_counted_with(settings: Settings) -> str:
    return "count_tokens" if provider_capabilities(settings).counts_tokens else "local estimate"


def breakdown(runs: Iterable[Any]) -> dict[str, Any]:
    """Cost split by model and by kind of token, for a run or a batch."""
    per_model: dict[str, Cost] = defaultdict(Cost)
    tokens: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in runs:
        for o in run.outcomes:
            per_model[o.model] = per_model[o.model] + outcome_cost(o, run)
            for kind in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
                tokens[o.model][kind] += getattr(o, kind)
    overall = total(per_model.values())
    return {"total": overall.to_json(),
            "models": {m: {"cost": c.to_json(), "tokens": dict(tokens[m])} for m, c in per_model.items()}}
