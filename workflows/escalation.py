"""Escalation (pure): a cheap panel decides the clear votes, and hands the close calls to one stronger model.

A vote whose task sets `[vote] escalate_to` is tallied as usual; when one of the task's `escalate_when`
conditions holds on that tally (low agreement, a tie, below quorum), one more call goes to `escalate_to`
and its answer decides. That call is the panel's own request (`escalation_request`): the same system
prompt (the task's instructions, labels and examples), the same document block, the built-in `direct`
prompt, structured labels where the model has them; only the model differs. A clear, unanimous vote never
escalates, and an escalated call that fails or gives no label leaves the panel's result standing.

Whether the escalated call reads the panel's cache follows Anthropic's rules, not chorus's wishes: a
cache entry belongs to one model, so the call reads the shared prefix only when two or more voters of
`escalate_to` wrote it (`VoteSpec.voter_request` marks it then); a call to a model the panel does not use
pays the prefix as plain input, and marks nothing no other call would read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workflows.calls import Attachment, CallRequest
from workflows.registry import unknown_model
from workflows.runspec import Tags, VoteSpec
from workflows.taskfile import TaskFileError, VoteRules, VoteTask
from workflows.voting import Tally, Voter, VoteStatus

ESCALATION_NAME = "escalation"  # the escalated call's voter name: what its outcome row records
ESCALATION_VARIANT = "direct"  # the built-in prompt: read the whole document, choose the best label


def escalation_reason(tally: Tally, rules: VoteRules) -> str | None:
    """Why this vote goes to `rules.escalate_to`, naming every condition of `escalate_when` that holds
    (e.g. "tie between a, b; below quorum (2 of 5 voters answered; quorum is 3)"), or None: no
    `escalate_to`, no condition holds, or the vote is unanimous (every voter of the panel gave the same
    label, which no condition can call close)."""
    if rules.escalate_to is None or unanimous(tally):
        return None
    fired = []
    answers = f"{tally.answered} of {tally.voters} voters answered"
    if "low agreement" in rules.escalate_when and tally.low_agreement:
        fired.append("low agreement (no voter gave a valid answer)" if not tally.answered else
                     f"low agreement (the leading label has {_share(tally.confidence)} of the answers, below "
                     f"{_share(rules.low_agreement_below)})")
    if "tie" in rules.escalate_when and tally.tie:
        leaders = [label for label, n in tally.counts.items() if n == max(tally.counts.values())]
        fired.append(f"tie between {', '.join(leaders)}")
    if "below quorum" in rules.escalate_when and not tally.quorum_met:
        fired.append(f"below quorum ({answers}; quorum is {tally.quorum})")
    return "; ".join(fired) or None


def unanimous(tally: Tally) -> bool:
    """Every voter of the panel answered, all with the same label."""
    return tally.answered == tally.voters and len(tally.counts) == 1


def _share(x: float) -> str:
    return f"{x:.1%}".replace(".0%", "%")


@dataclass(frozen=True)
class Escalated:
    """What the escalated call gave: a label of the task (`answer`), or none and why (`error`: the call
    failed, or the model abstained, in `voting.read_answer`'s words)."""

    model: str
    answer: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "answer": self.answer, "error": self.error}


@dataclass(frozen=True)
class EscalatedVote:
    """The result of a vote that escalated: the decision (`winner`, `status`, `reason`), the panel's
    tally as it was, and the escalated call. `decided` is False when the call gave no label and the
    panel's result stands."""

    panel: Tally
    escalation: Escalated
    why: str  # the conditions that fired (`escalation_reason`)
    winner: str | None
    status: VoteStatus
    reason: str

    @property
    def decided(self) -> bool:
        return self.escalation.answer is not None

    def to_json(self) -> dict[str, Any]:
        """The panel's tally (`Tally.to_json`: counts, confidence, quorum and the low-agreement flag stay
        the panel's), with the decision's winner, status and reason over it and the escalation beside."""
        return {**self.panel.to_json(), "winner": self.winner, "status": self.status.value, "reason": self.reason,
                "escalated": True,
                "escalation": {"reason": self.why, "decided": self.decided, **self.escalation.to_json(),
                               "panel_winner": self.panel.winner, "panel_status": self.panel.status.value}}


def decide_with_escalation(panel: Tally, escalated: Escalated, *, why: str) -> EscalatedVote:
    """The final result of an escalated vote. The stronger model's label decides (succeeded, whatever the
    panel's status); when its call failed or gave no label, the panel's winner and status stand and the
    reason says the escalation did not decide."""
    if escalated.answer is not None:
        return EscalatedVote(panel, escalated, why, escalated.answer, VoteStatus.SUCCEEDED,
                             f"escalated: {why}; {escalated.model} decided {escalated.answer}")
    lost = f"escalated: {why}; {escalated.model} gave no label ({escalated.error or 'no answer'}), so the panel's " \
           f"result stands"
    return EscalatedVote(panel, escalated, why, panel.winner, panel.status,
                         f"{panel.reason}; {lost}" if panel.reason else lost)


def escalation_voter(task: VoteTask, slot: int) -> Voter | None:
    """The escalated call as one more seat: `escalate_to` with the built-in `direct` prompt, at `slot`
    (the run's, after its voters' and pre-warms'); None when the task does not escalate."""
    model = task.vote.escalate_to
    if model is None:
        return None
    return Voter(slot=slot, model=model, variant=ESCALATION_VARIANT, name=ESCALATION_NAME)


def escalation_request(spec: VoteSpec, document: str | Attachment, tags: Tags = (), *,
                       slot: int | None = None) -> CallRequest | None:
    """The escalated call's request, built as a voter's (`VoteSpec.voter_request`: the same prefix, the
    cache marked only when voters of the same model share it); None when the task does not escalate."""
    last = max((v.slot for v in spec.voters), default=-1)
    voter = escalation_voter(spec.task, last + 1 if slot is None else slot)
    return spec.voter_request(voter, document, tags) if voter is not None else None


def check_escalation(task: VoteTask, panel: Sequence[Voter], queues: Sequence[str]) -> None:
    """Refuse, when the vote is planned, an `escalate_to` the registry (or the user's models file) does
    not know ("did you mean"), one without a queue (no worker would take the call), and one that is the
    model of every voter: the call would be one more draw of the panel's own model deciding alone over
    the panel (docs/decisions.md, "Escalation to the panel's own model is refused")."""
    model = task.vote.escalate_to
    if model is None:
        return
    problem = unknown_model(model, "vote.escalate_to")
    if problem is not None:
        raise TaskFileError("vote.escalate_to", problem)
    if model not in queues:
        raise TaskFileError("vote.escalate_to", f"model {model} has no queue; add it to CHORUS_MODELS (now: "
                                                f"{', '.join(queues)})")
    if panel and all(v.model == model for v in panel):
        raise TaskFileError("vote.escalate_to", f"{model} is the model of every voter: its one call would decide "
                                                f"alone over a panel of that same model; name a stronger model, "
                                                f"or add voters and leave escalate_to out")

