"""`chorus advise`: measure a single call and a vote on a labelled set, then ask the pure advisor
(`workflows.advisor`) whether to parallelize at all."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternResult, PatternSpec, run_pattern
from settings import Settings
from workflows.advisor import AdviceInputs, Measured, advise, wilson_interval
from workflows.agreement import AgreementReport, Item, analyse
from workflows.sectioning import headings
from workflows.tokens import estimate_tokens
from workflows.voting import normalize_labels


def items_of(runs: Sequence[Any]) -> list[Item]:
    """One agreement item per vote run: every slot's valid answer (None for failures/abstentions)."""
    return [
        Item(r.external_id,
             tuple(o.answer if o.status == "succeeded" else None for o in sorted(r.outcomes, key=lambda o: o.slot)),
             r.gold_label, r.answer)
        for r in runs
    ]


def agreement_of(runs: Sequence[Any], labels: Sequence[str], low_agreement_below: float = 0.6) -> AgreementReport:
    return analyse(items_of(runs), labels, low_agreement_below=low_agreement_below)


def measured(result: PatternResult) -> Measured:
    return Measured(result.spec.label, result.correct, len(result.labelled), result.cost.total_usd,
                    result.mean_wall_s, result.cost.estimated)


def run_advise(
    docs: Sequence[LabelledDoc],
    labels: str,
    *,
    target: float,
    single_model: str,
    panel_model: str,
    voters: int,
    source: str,
    settings: Settings,
    check: Callable[[], None] | None = None,
    timeout: float | None = None,
    in_flight: int = 2,
) -> dict[str, Any]:
    label_set = normalize_labels(labels)
    single = run_pattern(PatternSpec("advise-single", single_model, 1), docs, labels, source=source,
                         settings=settings, check=check, timeout=timeout, in_flight=in_flight)
    vote = run_pattern(PatternSpec("advise-vote", panel_model, voters), docs, labels, source=source,
                       settings=settings, check=check, timeout=timeout, in_flight=in_flight)
    agreement = agreement_of(vote.runs, label_set)
    abstained = sum(1 for r in single.runs if r.answer is None)
    inputs = AdviceInputs(
        target=target,
        single=measured(single),
        vote=measured(vote),
        discrete=all(d.label in label_set for d in docs),
        low_agreement_share=len(agreement.low_agreement) / len(docs),
        mean_document_tokens=statistics.fmean(estimate_tokens(d.text) for d in docs),
        splittable_share=sum(1 for d in docs if len(headings(d.text)) >= 2) / len(docs),
        effective_voters=agreement.effective_voters,
    )
    advice = advise(inputs)
    notes = list(advice.notes)
    if abstained:
        notes.append(f"the single call named no allowed label on {abstained} of {len(docs)} documents")
    lo, hi = wilson_interval(single.correct, len(single.labelled))
    rows = []
    for result, m in ((single, inputs.single), (vote, inputs.vote)):
        a_lo, a_hi = m.interval
        rows.append({"pattern": m.name, "accuracy": round(m.accuracy, 4), "ci95": [round(a_lo, 4), round(a_hi, 4)],
                     "cost_usd": round(m.cost_usd, 6), "cost_estimated": m.cost_estimated,
                     "mean_wall_s": round(m.wall_s, 4), "mean_overhead_s": round(result.mean_overhead_s, 4),
                     "batch_id": result.batch_id})
    return {
        "documents": len(docs), "labels": list(label_set), "target": target, "provider": settings.provider_name,
        "single_accuracy": round(inputs.single.accuracy, 4), "single_ci95": [round(lo, 4), round(hi, 4)],
        "meets_target": inputs.single.accuracy >= target, "discrete": inputs.discrete,
        "low_agreement_share": round(inputs.low_agreement_share, 4),
        "mean_document_tokens": round(inputs.mean_document_tokens, 1),
        "splittable_share": round(inputs.splittable_share, 4),
        "patterns": rows, "agreement": agreement.to_json(), **advice.to_json(), "notes": notes,
    }
