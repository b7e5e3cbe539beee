"""`chorus advise`: measure a single call and a vote on a labelled set, then ask the pure advisor
(`workflows.advisor`) whether to parallelize at all. With escalation (`--escalate-to`, or the task's
`[vote] escalate_to`) also the three ways side by side (`chorus.analysis.compare.three_ways`): the
strong model alone is one more single call on that model (the single call itself when it is that model)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from chorus.analysis.compare import escalation_rules, three_ways, without_escalation
from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternResult, PatternSpec, run_pattern
from settings import Settings
from workflows.advisor import AdviceInputs, ErrorOverlap, Measured, advise, percent, wilson_interval
from workflows.agreement import AgreementReport, Item, analyse
from workflows.sectioning import headings
from workflows.taskfile import VoteTask
from workflows.tokens import estimate_tokens
from workflows.voter_quality import Document, Seat, VoterId, VoterQuality, assess
from workflows.voting import normalize_labels, resolve_panel


def items_of(runs: Sequence[Any]) -> list[Item]:
    """One agreement item per vote run: every slot's valid answer (None for failures/abstentions)."""
    return [
        Item(r.external_id,
             tuple(o.answer if o.status == "succeeded" else None
                   for o in sorted(r.outcomes, key=lambda o: o.slot) if o.role == "voter"),
             r.gold_label, r.answer)
        for r in runs
    ]


def agreement_of(runs: Sequence[Any], labels: Sequence[str], low_agreement_below: float = 0.6) -> AgreementReport:
    return analyse(items_of(runs), labels, low_agreement_below=low_agreement_below)


def voter_of(outcome: Any) -> VoterId:
    """(name, model): the task's voter name, or the built-in variant id of a labels-only run."""
    return VoterId(outcome.prompt_variant or f"slot {outcome.slot}", outcome.model)


def documents_of(runs: Sequence[Any]) -> list[Document]:
    """One per vote run: each voter seat's valid answer (None when it abstained or failed)."""
    return [
        Document(r.external_id,
                 tuple(Seat(voter_of(o), o.answer if o.status == "succeeded" else None, o.status == "failed")
                       for o in sorted(r.outcomes, key=lambda o: o.slot) if o.role == "voter"),
                 r.gold_label, r.answer)
        for r in runs
    ]


def voter_quality_of(runs: Sequence[Any]) -> VoterQuality | None:
    """Per-voter accuracy, double faults and advice over the vote runs; None without any."""
    documents = [d for d in documents_of([r for r in runs if r.pattern == "vote"]) if d.seats]
    return assess(documents) if documents else None


def error_overlap(agreement: AgreementReport, runs: Sequence[Any]) -> ErrorOverlap | None:
    """The pair of voter seats most often wrong together beyond what independent errors give."""
    if not agreement.pairs:
        return None
    worst = max(agreement.pairs, key=lambda p: (p.double_faults - p.expected_double_faults, p.double_faults))
    seats = {o.slot: voter_of(o) for r in runs for o in r.outcomes if o.role == "voter"}
    a, b = seats.get(worst.a), seats.get(worst.b)
    pair = (f"two seats of {a}" if a is not None and a == b
            else f"{a or f'slot {worst.a}'} & {b or f'slot {worst.b}'}")
    return ErrorOverlap(pair, worst.double_faults, worst.both_answered, worst.expected_double_faults)


def _every_call_failed(run: Any) -> bool:
    calls = [o for o in run.outcomes if o.role == "voter" and o.status != "skipped"]
    return bool(calls) and all(o.status == "failed" for o in calls)


def measured(result: PatternResult) -> Measured:
    unanswered = [r for r in result.labelled if r.answer is None]
    return Measured(result.spec.label, result.correct, len(result.labelled), result.cost.total_usd,
                    result.mean_wall_s, result.cost.estimated, answered=len(result.labelled) - len(unanswered),
                    failed=sum(1 for r in unanswered if _every_call_failed(r)))


def voter_accuracy(quality: VoterQuality | None) -> tuple[tuple[str, float], ...]:
    """Each voter's accuracy against gold, for the advisor's wording (voters that answered no gold document
    have none and are left out)."""
    if quality is None:
        return ()
    return tuple((str(v.voter), v.accuracy) for v in quality.voters if v.accuracy is not None)


def shown(m: Measured) -> str:
    """The accuracy and its interval as the table prints them: the advisor's own `percent`."""
    lo, hi = m.interval
    return f"{percent(m.accuracy)} ({percent(lo)}-{percent(hi)})"


def vote_pattern(name: str, task: VoteTask | None, model: str, voters: int | None, *, default_model: str,
                 cache_aware: bool = True, panel_model_given: bool = False) -> PatternSpec:
    """The vote to measure: the task's own panel when there is a task and neither the panel's size nor
    its model is overridden, else `voters` voters on `model` (with the task's prompts, if any)."""
    if task is not None and voters is None and not panel_model_given:
        panel = resolve_panel(task, default_model)
        models = ", ".join(dict.fromkeys(v.model for v in panel))
        return PatternSpec(name, models, len(panel), cache_aware=cache_aware, task_panel=True)
    return PatternSpec(name, model, voters or 3, cache_aware=cache_aware)


def run_advise(
    docs: Sequence[LabelledDoc],
    labels: str | Sequence[str] | None,
    *,
    target: float,
    single_model: str,
    panel_model: str | None,
    voters: int | None,
    source: str,
    task: VoteTask | None = None,
    settings: Settings,
    check: Callable[[], None] | None = None,
    on_run: Callable[[Any], None] | None = None,
    timeout: float | None = None,
    in_flight: int = 2,
    escalate_to: str | None = None,
) -> dict[str, Any]:
    escalation = escalation_rules(task, escalate_to) if escalate_to else None
    task = without_escalation(task)
    label_set = task.label_names if task else normalize_labels(labels or "")
    vote_spec = vote_pattern("advise-vote", task, panel_model or single_model, voters,
                             default_model=settings.default_model, panel_model_given=panel_model is not None)
    single = run_pattern(PatternSpec("advise-single", single_model, 1), docs, labels, task=task, source=source,
                         settings=settings, check=check, on_run=on_run, timeout=timeout, in_flight=in_flight)
    vote = run_pattern(vote_spec, docs, labels, task=task, source=source,
                       settings=settings, check=check, on_run=on_run, timeout=timeout, in_flight=in_flight)
    ways: dict[str, Any] = {}
    if escalation is not None and escalate_to is not None:
        strong = single if escalate_to == single_model else run_pattern(
            PatternSpec("advise-strong", escalate_to, 1), docs, labels, task=task, source=source, settings=settings,
            check=check, on_run=on_run, timeout=timeout, in_flight=in_flight)
        ways = three_ways(vote, strong, escalation, target=target)
    agreement = agreement_of(vote.runs, label_set)
    quality = voter_quality_of(vote.runs)
    inputs = AdviceInputs(
        target=target,
        single=measured(single),
        vote=measured(vote),
        discrete=all(d.label in label_set for d in docs),
        low_agreement_share=len(agreement.low_agreement) / len(docs),
        mean_document_tokens=statistics.fmean(estimate_tokens(d.text) for d in docs),
        splittable_share=sum(1 for d in docs if len(headings(d.text)) >= 2) / len(docs),
        effective_voters=agreement.effective_voters,
        error_overlap=error_overlap(agreement, vote.runs),
        voter_accuracy=voter_accuracy(quality),
    )
    advice = advise(inputs)
    notes = list(advice.notes)
    for m in (inputs.single, inputs.vote):
        if m.unanswered:
            why = f", {m.failed} of them because every call failed" if m.failed else ""
            notes.append(f"{m.name} gave no answer on {m.unanswered} of {m.total} documents{why} "
                         "(`chorus report BATCH` shows each reason)")
    lo, hi = wilson_interval(single.correct, len(single.labelled))
    rows = []
    for result, m in ((single, inputs.single), (vote, inputs.vote)):
        a_lo, a_hi = m.interval
        rows.append({"pattern": m.name, "accuracy": round(m.accuracy, 4), "ci95": [round(a_lo, 4), round(a_hi, 4)],
                     "accuracy_shown": shown(m), "answered": m.answered, "failed": m.failed,
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
        "patterns": rows, "agreement": agreement.to_json(),
        "error_overlap": inputs.error_overlap.to_json() if inputs.error_overlap else None,
        "voter_quality": quality.to_json() if quality else None, **advice.to_json(), "notes": notes, **ways,
    }
