"""A dry-run cost estimate of a pattern before anything is sent (always marked as an estimate).

Prompt tokens come from `count_tokens` with Claude (free, nothing is generated) or from the local
estimate offline. The cache is modelled with the rules the dispatch will meet: a marked prefix
above the model's minimum is written once and read by the other voters with cache-aware dispatch,
written by every voter without it. Output tokens are counted at `max_tokens`, an upper bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternSpec
from providers.counting import count_tokens
from settings import Settings
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.dispatch import plan_dispatch, shares_prefix
from workflows.voting import build_panel, normalize_labels, vote_request


def estimate_document(spec: PatternSpec, doc: LabelledDoc, labels: Sequence[str], settings: Settings) -> Cost:
    panel = build_panel(spec.voters, [spec.model])
    requests = [vote_request(v, labels, doc.text) for v in panel]
    shared = shares_prefix([v.model for v in panel], spec.model)
    full = [count_tokens(r, settings) for r in requests]
    prefix_request = dataclasses.replace(requests[0], user_blocks=requests[0].user_blocks[:1])
    prefix, _ = count_tokens(prefix_request, settings)
    estimated_prefix = prefix if shared else 0
    dispatch = plan_dispatch(panel, estimated_prefix, cache_aware=spec.cache_aware)
    # plan_dispatch refuses to lead under the minimum; the same test decides whether anything is cached.
    cached = shared and plan_dispatch(panel, estimated_prefix, cache_aware=True).leaders != ()
    usages = []
    for voter, (tokens, _) in zip(panel, full, strict=True):
        if not cached:
            usages.append(TokenUsage(tokens, requests[0].max_tokens, estimated=True))
        elif voter.slot in dispatch.leaders or not dispatch.leaders:
            usages.append(TokenUsage(tokens - prefix, requests[0].max_tokens, cache_write_tokens=prefix,
                                     estimated=True))
        else:
            usages.append(TokenUsage(tokens - prefix, requests[0].max_tokens, cache_read_tokens=prefix,
                                     estimated=True))
    return total(cost_of(spec.model, u) for u in usages)


def estimate_pattern(spec: PatternSpec, docs: Sequence[LabelledDoc], labels: str, settings: Settings) -> dict[str, Any]:
    label_set = normalize_labels(labels)
    cost = total(estimate_document(spec, d, label_set, settings) for d in docs)
    return {"pattern": spec.label, "documents": len(docs), "estimated_cost": cost.to_json(),
            "counted_with": "count_tokens" if settings.provider_name == "anthropic" else "local estimate",
            "note": "estimate: output counted at max_tokens (an upper bound)"}
