"""`chorus compare`: the same documents as one call on one model and as a vote on a cheaper panel,
with and without cache-aware dispatch. Every figure comes from the stored usage and timestamps;
the ratios are computed, never quoted."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternResult, PatternSpec, run_pattern
from providers import provider_capabilities
from settings import Settings
from workflows.taskfile import VoteTask

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_specs(single_model: str, panel_model: str, voters: int, *, task_panel: PatternSpec | None = None
                  ) -> list[PatternSpec]:
    """One call, then the vote with and without cache-aware dispatch: `voters` on `panel_model`, or the
    task's own panel (`task_panel`, see chorus.analysis.advise.vote_pattern)."""
    vote = task_panel or PatternSpec("compare-vote", panel_model, voters)
    return [
        PatternSpec("compare-single", single_model, 1),
        replace(vote, name="compare-vote", cache_aware=True),
        replace(vote, name="compare-vote-nocache", cache_aware=False),
    ]


def stub_cache_reset(settings: Settings) -> Callable[[], None] | None:
    """With the chorus stub as the API, a function that empties its prompt cache between patterns
    (so one pattern never reads what another wrote); None against anything else."""
    base = (settings.anthropic_base_url or "").rstrip("/")
    if not provider_capabilities(settings).caches_prompts or not base:
        return None
    try:
        with _OPENER.open(f"{base}/_stub/health", timeout=2) as response:
            if not json.loads(response.read()).get("ok"):
                return None
    except (OSError, ValueError):
        return None

    def reset() -> None:
        request = urllib.request.Request(f"{base}/_stub/reset", data=b"{}", method="POST",
                                         headers={"content-type": "application/json"})
        with _OPENER.open(request, timeout=10):
            pass

    return reset


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 and not math.isnan(a) and not math.isnan(b) else None


def ratios(results: Sequence[PatternResult]) -> dict[str, float | None]:
    single = next((r for r in results if r.spec.voters == 1), None)
    aware = next((r for r in results if r.spec.voters > 1 and r.spec.cache_aware), None)
    naive = next((r for r in results if r.spec.voters > 1 and not r.spec.cache_aware), None)
    out: dict[str, float | None] = {}
    if aware is not None:
        out["vote_cost / minimum_cost"] = _ratio(aware.cost.total_usd, aware.minimum_cost.total_usd)
    if naive is not None:
        out["vote_cost_without_cache_aware / minimum_cost"] = _ratio(naive.cost.total_usd,
                                                                     naive.minimum_cost.total_usd)
    if aware is not None and naive is not None:
        out["vote_cost / vote_cost_without_cache_aware"] = _ratio(aware.cost.total_usd, naive.cost.total_usd)
        out["vote_wall / vote_wall_without_cache_aware"] = _ratio(aware.mean_wall_s, naive.mean_wall_s)
    if aware is not None and single is not None:
        out["vote_cost / single_cost"] = _ratio(aware.cost.total_usd, single.cost.total_usd)
        out["vote_wall / single_wall"] = _ratio(aware.mean_wall_s, single.mean_wall_s)
    return out


def run_compare(
    docs: Sequence[LabelledDoc],
    labels: str | Sequence[str] | None,
    specs: Sequence[PatternSpec],
    *,
    source: str,
    task: VoteTask | None = None,
    settings: Settings,
    check: Callable[[], None] | None = None,
    on_run: Callable[[Any], None] | None = None,
    timeout: float | None = None,
    in_flight: int = 2,
) -> dict[str, Any]:
    reset = stub_cache_reset(settings)
    results = []
    for spec in specs:
        if reset is not None:
            reset()
        results.append(run_pattern(spec, docs, labels, task=task, source=source, settings=settings, check=check,
                                   on_run=on_run, timeout=timeout, in_flight=in_flight))
    notes = []
    if any(r.cost.estimated for r in results):
        notes.append("costs are estimates: the offline provider's token counts, priced as if on each model")
    if reset is None and provider_capabilities(settings).caches_prompts:
        notes.append("the patterns share the provider's prompt cache (5 min): a later vote may read entries an "
                     "earlier one wrote")
    return {"provider": settings.provider_name, "documents": len(docs),
            "patterns": [r.to_json() for r in results], "ratios": ratios(results), "notes": notes,
            "_results": results}
