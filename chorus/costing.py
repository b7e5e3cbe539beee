"""Cost of stored outcomes, runs and batches, computed on read from the measured usage.

Nothing is stored: prices change, usage does not. Offline usage is an estimate and every Cost
built from it says so (`Cost.estimated`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from workflows.cost import Cost, TokenUsage, cost_of, cost_without_cache, minimum_vote_cost, total
from workflows.tokens import min_cacheable_tokens


def outcome_usage(o: Any) -> TokenUsage:
    return TokenUsage(o.input_tokens, o.output_tokens, o.cache_write_tokens, o.cache_read_tokens,
                      estimated=o.usage_estimated)


def outcome_cost(o: Any) -> Cost:
    return cost_of(o.model, outcome_usage(o))


def run_cost(run: Any) -> Cost:
    return total(outcome_cost(o) for o in run.outcomes)


def run_cost_without_cache(run: Any) -> Cost:
    return total(cost_without_cache(o.model, outcome_usage(o)) for o in run.outcomes)


def run_minimum_cost(run: Any) -> Cost:
    """The cheapest the same calls could have been under Anthropic's cache rules: per model, the
    shared prefix written once and read by every other voter (see workflows.cost.minimum_vote_cost)."""
    by_model: dict[str, list[Any]] = defaultdict(list)
    for o in run.outcomes:
        if o.status == "succeeded":
            by_model[o.model].append(o)
    costs = []
    for model, outcomes in by_model.items():
        prefix = max(o.cache_write_tokens + o.cache_read_tokens for o in outcomes)
        costs.append(minimum_vote_cost(model, prefix, [o.input_tokens for o in outcomes],
                                       [o.output_tokens for o in outcomes], min_cacheable=min_cacheable_tokens(model)))
    return total(costs)


def breakdown(runs: Iterable[Any]) -> dict[str, Any]:
    """Cost split by model and by kind of token, for a run or a batch."""
    per_model: dict[str, Cost] = defaultdict(Cost)
    tokens: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in runs:
        for o in run.outcomes:
            per_model[o.model] = per_model[o.model] + outcome_cost(o)
            for kind in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
                tokens[o.model][kind] += getattr(o, kind)
    overall = total(per_model.values())
    return {"total": overall.to_json(),
            "models": {m: {"cost": c.to_json(), "tokens": dict(tokens[m])} for m, c in per_model.items()}}
