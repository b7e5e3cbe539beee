"""A dry-run cost estimate of a pattern before anything is sent (always marked as an estimate).

Prompt tokens come from `count_tokens` with Claude (free, nothing is generated) or from the local
estimate offline. The cache is modelled with the rules the dispatch will meet: a marked prefix
above the model's minimum is written once and read by the other voters with cache-aware dispatch,
written by every voter without it. Output tokens are counted at `max_tokens`, an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternSpec, pattern_task
from chorus.vote import check_panel_models, resolve_vote_task
from providers import provider_capabilities
from providers.counting import count_tokens
from settings import Settings
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.dispatch import plan_dispatch, shares_prefix
from workflows.registry import supports_structured_outputs
from workflows.taskfile import VoteTask, labels_task
from workflows.voting import resolve_panel, vote_request


def estimate_document(spec: PatternSpec, doc: LabelledDoc, task: VoteTask, settings: Settings) -> Cost:
    """The cost of one document under `spec`: the task's panel (or `spec.voters` on `spec.model` with the
    task's prompts), each voter's prompt counted, the cache modelled per model as the dispatch will meet it."""
    panel_options: dict[str, Any] = {} if spec.task_panel else {"voters": spec.voters, "models": [spec.model]}
    panel = resolve_panel(resolve_vote_task(task=pattern_task(spec, task), **panel_options), settings.default_model)
    check_panel_models(panel, settings)  # a misspelt --single-model / --panel-model: "did you mean", not a traceback
    requests = [vote_request(v, task, doc.text, structured=supports_structured_outputs(v.model)) for v in panel]
    prefixes: dict[str, int] = {}
    for voter, request in zip(panel, requests, strict=True):
        if voter.model not in prefixes and shares_prefix([v.model for v in panel], voter.model):
            prefix_request = request.prefix_request()
            prefixes[voter.model] = count_tokens(prefix_request, settings)[0]
    # plan_dispatch refuses to lead under the minimum; the same test decides whether anything is cached.
    cached_models = {m for m, tokens in prefixes.items()
                     if plan_dispatch([v for v in panel if v.model == m], tokens, cache_aware=True).leaders}
    first_of_model: set[str] = set()
    costs = []
    for voter, request in zip(panel, requests, strict=True):
        tokens, _ = count_tokens(request, settings)
        prefix = prefixes.get(voter.model, 0)
        if voter.model not in cached_models:
            usage = TokenUsage(tokens, request.max_tokens, estimated=True)
        elif not spec.cache_aware or voter.model not in first_of_model:  # sent at once, or the model's leader
            usage = TokenUsage(tokens - prefix, request.max_tokens, cache_write_tokens=prefix, estimated=True)
        else:
            usage = TokenUsage(tokens - prefix, request.max_tokens, cache_read_tokens=prefix, estimated=True)
        first_of_model.add(voter.model)
        costs.append(cost_of(voter.model, usage))
    return total(costs)


def estimate_pattern(spec: PatternSpec, docs: Sequence[LabelledDoc], labels: str | None, settings: Settings,
                     task: VoteTask | None = None) -> dict[str, Any]:
    vote_task = task or labels_task(labels or "", voters=1)
    cost = total(estimate_document(spec, d, vote_task, settings) for d in docs)
    return {"pattern": spec.label, "documents": len(docs), "estimated_cost": cost.to_json(),
            "counted_with": "count_tokens" if provider_capabilities(settings).counts_tokens else "local estimate",
            "note": "estimate: output counted at max_tokens (an upper bound)"}
