"""Escalation (pure): when a vote goes to the stronger model, what it sends, and how its answer decides."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from workflows.escalation import (
    Escalated,
    check_escalation,
    decide_with_escalation,
    escalation_reason,
    escalation_request,
    escalation_voter,
)
from workflows.runspec import VoteSpec
from workflows.taskfile import ESCALATE_CONDITIONS, Label, TaskFileError, VoterSpec, VoteRules, VoteTask
from workflows.voting import TiePolicy, Voter, VoteStatus, resolve_panel, tally, vote_request

LABELS = ("a", "b", "c")
STRONG = "claude-opus-5-5"
QUEUES = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5")


def rules(*when: str, low: float = 0.6, to: str | None = STRONG) -> VoteRules:
    return VoteRules(low_agreement_below=low, escalate_to=to, escalate_when=when or ESCALATE_CONDITIONS)


def vote(answers, *, failed=0, low=0.6, quorum=None, tie_policy=TiePolicy.NONE):
    return tally(answers, LABELS, failed=failed, quorum=quorum, tie_policy=tie_policy, low_agreement_below=low)


@pytest.mark.parametrize(("size", "label", "low", "quorum"), [
    (size, label, low, quorum)
    for size, label, low in itertools.product((1, 2, 3, 5, 7), LABELS, (0.01, 0.6, 0.99, 1.0))
    for quorum in sorted({1, size // 2 + 1, size})
])
def test_a_unanimous_vote_never_escalates_whatever_the_rules(size, label, low, quorum):
    unanimous = vote([label] * size, low=low, quorum=quorum, tie_policy=TiePolicy.FIRST)
    assert escalation_reason(unanimous, rules(low=low)) is None


@pytest.mark.parametrize(("tally_of", "low", "fired"), [
    (lambda: vote(["a", "a", "a", "b", "c"], low=0.7), 0.7,
     "low agreement (the leading label has 60% of the answers, below 70%)"),
    (lambda: vote(["a", "a", "b", "b"], low=0.5), 0.5, "tie between a, b"),
    (lambda: vote(["a", "a", "b", "b"], low=0.5, tie_policy=TiePolicy.FIRST), 0.5, "tie between a, b"),
    (lambda: vote(["a", "a"], failed=3), 0.6, "below quorum (2 of 5 voters answered; quorum is 3)"),
], ids=["low agreement", "tie", "tie under tie_policy first", "below quorum"])
def test_each_condition_fires_alone_and_only_when_it_is_listed(tally_of, low, fired):
    t = tally_of()
    assert escalation_reason(t, rules(low=low)) == fired
    condition = fired.split(" (")[0].split(" between")[0]
    assert escalation_reason(t, rules(condition, low=low)) == fired
    others = tuple(c for c in ESCALATE_CONDITIONS if c != condition)
    assert escalation_reason(t, rules(*others, low=low)) is None


def test_every_condition_that_holds_is_named_and_a_vote_without_escalate_to_never_escalates():
    nobody = vote([None, None], failed=1)
    assert escalation_reason(nobody, rules()) == ("low agreement (no voter gave a valid answer); below quorum "
                                                  "(0 of 3 voters answered; quorum is 2)")
    tied_and_few = vote(["a", "b"], failed=3)
    assert escalation_reason(tied_and_few, rules()) == ("low agreement (the leading label has 50% of the answers, "
                                                        "below 60%); tie between a, b; below quorum (2 of 5 voters "
                                                        "answered; quorum is 3)")
    assert escalation_reason(tied_and_few, rules(to=None)) is None


def test_a_clear_but_not_unanimous_vote_does_not_escalate():
    assert escalation_reason(vote(["a", "a", "a", "a", "b"]), rules()) is None


def test_the_stronger_models_answer_decides_and_the_result_keeps_the_panels_tally():
    panel = vote(["a", "a", "b", "b"], low=0.5)
    assert panel.status is VoteStatus.PARTIAL and panel.winner is None
    why = escalation_reason(panel, rules(low=0.5))
    assert why is not None
    result = decide_with_escalation(panel, Escalated(STRONG, "b"), why=why)
    assert (result.winner, result.status, result.decided) == ("b", VoteStatus.SUCCEEDED, True)
    assert result.reason == f"escalated: tie between a, b; {STRONG} decided b"
    stored = result.to_json()
    assert stored["counts"] == {"a": 2, "b": 2} and stored["confidence"] == 0.5 and stored["low_agreement"] is False
    assert stored["escalated"] is True and stored["winner"] == "b" and stored["status"] == "succeeded"
    assert stored["escalation"] == {"reason": "tie between a, b", "decided": True, "model": STRONG, "answer": "b",
                                    "error": None, "panel_winner": None, "panel_status": "partial"}


def test_the_stronger_model_can_overturn_a_panel_that_had_a_winner():
    panel = vote(["a", "a", "a", "b", "c"], low=0.7)
    result = decide_with_escalation(panel, Escalated(STRONG, "c"), why="low agreement")
    assert panel.winner == "a" and result.winner == "c" and result.status is VoteStatus.SUCCEEDED


@pytest.mark.parametrize("error", ["the call failed: 529 overloaded", "abstained: the reply was not valid JSON: x"])
def test_when_the_escalated_call_gives_no_label_the_panels_result_stands_and_says_so(error):
    panel = vote(["a", "a"], failed=3)
    result = decide_with_escalation(panel, Escalated(STRONG, None, error), why="below quorum")
    assert (result.winner, result.status, result.decided) == ("a", VoteStatus.PARTIAL, False)
    assert result.reason == (f"{panel.reason}; escalated: below quorum; {STRONG} gave no label ({error}), so the "
                             "panel's result stands")
    assert result.to_json()["escalation"]["decided"] is False
    clear = vote(["a", "a", "a", "b", "c"], low=0.7)  # succeeded, no reason of its own
    kept = decide_with_escalation(clear, Escalated(STRONG, None, error), why="low agreement")
    assert kept.status is VoteStatus.SUCCEEDED and kept.reason.startswith("escalated: low agreement; ")


def task(*voters: VoterSpec, to: str | None = STRONG) -> VoteTask:
    return VoteTask(name="t", labels=(Label("urgent", "cannot work"), Label("normal")),
                    instructions="You triage tickets.",
                    voters=voters or (VoterSpec(model="claude-haiku-5-5", count=3),), vote=VoteRules(escalate_to=to))


def spec_of(t: VoteTask) -> VoteSpec:
    return VoteSpec(t, tuple(resolve_panel(t, "claude-haiku-5-5")), {}, None)


def test_the_escalation_request_is_the_panels_request_on_the_stronger_model():
    spec = spec_of(task())
    request = escalation_request(spec, "The server is down.")
    assert request is not None
    voter = spec.voters[0]
    panel_request = spec.voter_request(voter, "The server is down.")
    assert request.model == STRONG
    assert request.system == panel_request.system and "You triage tickets." in request.system
    assert request.user_blocks[0] == panel_request.user_blocks[0]  # the same document block: the shared prefix
    assert request.output_schema is not None and request.output_schema["properties"]["label"]["enum"] == [
        "urgent", "normal"]
    direct = vote_request(Voter(3, STRONG, "direct"), spec.task, "The server is down.", structured=True)
    assert request.user_blocks == direct.user_blocks  # the built-in `direct` prompt, the task's instructions above
    assert escalation_request(spec_of(task(to=None)), "x") is None


def test_the_escalation_reads_the_cache_only_where_voters_of_its_model_write_it():
    alone = escalation_request(spec_of(task()), "text")
    shared = escalation_request(spec_of(task(VoterSpec(model=STRONG, count=2), VoterSpec(model="claude-haiku-5-5"))),
                                "text")
    assert alone is not None and alone.cache_blocks == 0  # no voter of its model: nothing to read, nothing marked
    assert shared is not None and shared.cache_blocks == 1


def test_the_escalation_voter_takes_the_slot_it_is_given_and_the_direct_prompt():
    assert escalation_voter(task(), 7) == Voter(7, STRONG, "direct", name="escalation")
    assert escalation_voter(task(to=None), 7) is None


def test_escalate_to_is_checked_against_the_registry_the_queues_and_the_panel():
    t = task()
    check_escalation(t, spec_of(t).voters, QUEUES)
    misspelt = replace(t, vote=VoteRules(escalate_to="claude-opus-55"))
    with pytest.raises(TaskFileError, match=r"did you mean claude-opus-5-5\?") as caught:
        check_escalation(misspelt, spec_of(t).voters, QUEUES)
    assert caught.value.field == "vote.escalate_to" and "(vote.escalate_to)" in str(caught.value)
    with pytest.raises(TaskFileError, match="claude-opus-5-5 has no queue; add it to CHORUS_MODELS"):
        check_escalation(t, spec_of(t).voters, QUEUES[:2])
    own = task(VoterSpec(model=STRONG, count=3))
    with pytest.raises(TaskFileError, match="is the model of every voter"):
        check_escalation(own, spec_of(own).voters, QUEUES)
    mixed = task(VoterSpec(model=STRONG), VoterSpec(model="claude-haiku-5-5", count=2))
    check_escalation(mixed, spec_of(mixed).voters, QUEUES)  # a stronger voter on the panel is fine
    check_escalation(task(to=None), spec_of(t).voters, ())
