"""`chorus compare`: the same documents as one call on one model and as a vote on a cheaper panel,
with and without cache-aware dispatch. Every figure comes from the stored usage and timestamps;
the ratios are computed, never quoted.

With escalation (`--escalate-to MODEL`, or a task with `[vote] escalate_to`) the single call is the
strong model's, and the three ways (panel alone, strong model alone, panel+escalation) are set side by
side with `workflows.cascade`: the panel is measured without escalating, and where its stored tally
escalates (`escalation_reason`) the strong model's call on that document stands for the escalated call
(docs/decisions.md, "Escalation")."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternResult, PatternSpec, run_pattern
from chorus.costing import run_cost
from providers import provider_capabilities
from settings import Settings
from workflows.cascade import Call, Case, compare_ways, recommend_way
from workflows.escalation import escalation_reason
from workflows.taskfile import VoteRules, VoteTask
from workflows.voting import Tally, VoteStatus

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


def escalates_to(task: VoteTask | None, given: str | None) -> str | None:
    """The strong model of the three ways: `--escalate-to`, else the task's `[vote] escalate_to`."""
    return given or (task.vote.escalate_to if task is not None else None)


def without_escalation(task: VoteTask | None) -> VoteTask | None:
    """The task as measured: the panel alone, never escalating (the third way is computed, not run)."""
    if task is None or task.vote.escalate_to is None:
        return task
    return replace(task, vote=replace(task.vote, escalate_to=None, escalate_when=VoteRules().escalate_when))


def stored_tally(result: dict[str, Any] | None) -> Tally | None:
    """A vote run's stored tally (`Tally.to_json`) read back; None for a run with none (it failed to send)."""
    if not result or "counts" not in result:
        return None
    known = {f.name for f in fields(Tally)}
    values = {k: v for k, v in result.items() if k in known}
    values["status"] = VoteStatus(values["status"])
    try:
        return Tally(**values)
    except TypeError:
        return None


def _call(run: Any) -> Call:
    """One run as one way's outcome on its document: its answer, cost, wall time and calls made."""
    made = [o for o in run.outcomes if o.status != "skipped"]
    cost = run_cost(run)
    return Call(run.answer, cost.total_usd, run.wall_s or 0.0, calls=len(made),
                failed=run.answer is None and bool(made) and all(o.status == "failed" for o in made),
                cost_estimated=cost.estimated)


def escalation_cases(panel: PatternResult, strong: PatternResult, rules: VoteRules) -> list[Case]:
    """One `Case` per labelled document both ways ran: the panel's run, whether its tally escalates under
    `rules` (the task's escalate_when and threshold, with the strong model as escalate_to), the strong
    model's run."""
    strong_runs = {r.external_id: r for r in strong.labelled}
    cases = []
    for run in panel.labelled:
        other = strong_runs.get(run.external_id)
        if other is None:
            continue
        tallied = stored_tally(run.result)
        why = escalation_reason(tallied, rules) if tallied is not None else None
        cases.append(Case(run.external_id, run.gold_label, _call(run), why, _call(other)))
    return cases


def three_ways(panel: PatternResult, strong: PatternResult, rules: VoteRules, *, target: float | None = None
               ) -> dict[str, Any]:
    """The three ways' rows (`--json`: `ways`) and which to use (`way_recommendation`)."""
    cases = escalation_cases(panel, strong, rules)
    if not cases:
        return {"ways": [], "way_recommendation": None}
    rows = compare_ways(cases, panel_name=panel.spec.label, strong_name=strong.spec.label)
    return {"ways": [r.to_json() for r in rows], "way_recommendation": recommend_way(rows, target=target).to_json()}


def escalation_rules(task: VoteTask | None, strong: str) -> VoteRules:
    return replace(task.vote if task is not None else VoteRules(), escalate_to=strong)


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
    escalate_to: str | None = None,
) -> dict[str, Any]:
    """Measure each pattern in turn; with `escalate_to` (the first pattern is then that model's single
    call, the second the panel), the three ways side by side too."""
    escalation = escalation_rules(task, escalate_to) if escalate_to else None
    task = without_escalation(task)
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
    ways = three_ways(results[1], results[0], escalation) if escalation is not None and len(results) > 1 else {}
    return {"provider": settings.provider_name, "documents": len(docs),
            "patterns": [r.to_json() for r in results], "ratios": ratios(results), "notes": notes, **ways,
            "_results": results}
