"""Budgets: an upper-bound estimate of a planned run's cost, and the refusal when it is above the
budget (`--max-cost`, CHORUS_MAX_COST_USD). Below the plans' modules, so submitting checks it too."""

from __future__ import annotations

from typing import Any

from providers.counting import count_tokens
from settings import Settings
from workflows.cost import Cost, TokenUsage, cost_of, total
from workflows.errors import ConfigError
from workflows.runspec import VoteSpec
from workflows.sectioning import Part
from workflows.tokens import attachment_tokens, estimate_tokens


def estimate_plan(plan: Any, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
    """An upper bound of what one planned run costs, marked as an estimate: each call's prompt counted
    (count_tokens with Claude when `count`, else the local estimate), its output at max_tokens, no
    cache discount. A section run: every section's map call (always the local estimate: a long document
    has thousands) and one final synthesis reading every section's output at its max_tokens. With
    `lane="batch"` the voter and section calls are priced at the Batches API price (the synthesis goes
    the normal way)."""
    in_lane = lane == "batch"
    spec = plan.spec()  # the requests the workers will build from the stored config
    if isinstance(spec, VoteSpec):
        costs = []
        for voter in spec.voters:
            request = spec.voter_request(voter, plan.document)
            prompt = count_tokens(request, settings)[0] if count else _local_tokens(request)
            costs.append(cost_of(voter.model, TokenUsage(prompt, request.max_tokens, estimated=True),
                                 batch_api=in_lane))
        return total(costs)
    config = plan.config()
    costs = []
    for section in plan.sections:
        request = spec.section_request(plan.model, section.index, plan.section_document(section.index))
        costs.append(cost_of(plan.model, TokenUsage(_local_tokens(request), request.max_tokens, estimated=True),
                             batch_api=in_lane))
    reduce = plan.task.reduce
    if reduce is not None and plan.reduce_model is not None and not plan.task.merge \
            and (len(plan.sections) > 1 or config["synthesize_single"]):
        part = "x " * config["section_output_tokens"]
        request = spec.synthesis_request(plan.reduce_model,
                                         [Part(f"section {s.index + 1}", part) for s in plan.sections], final=True)
        costs.append(cost_of(plan.reduce_model, TokenUsage(_local_tokens(request), request.max_tokens,
                                                           estimated=True)))
    return total(costs)


def _local_tokens(request: Any) -> int:
    return (estimate_tokens(request.system) + sum(estimate_tokens(b) for b in request.user_blocks)
            + sum(attachment_tokens(a, request.model) for a in request.attachments))


def check_budget(estimate: Cost, budget: float | None, what: str) -> None:
    """Refuse (ConfigError, before anything is sent) when the estimate is above the budget."""
    if budget is not None and estimate.total_usd > budget:
        raise ConfigError(
            f"{what} is estimated at ${estimate.total_usd:.4f} (an upper bound: output counted at max_tokens), "
            f"above the budget of ${budget:.4f} (--max-cost / CHORUS_MAX_COST_USD); nothing was sent. Raise the "
            f"budget, or send fewer documents, voters or sections")
