"""The task each measured pattern runs: `chorus advise` and `chorus compare` measure a single call as a
one-voter task of its own, and the panel with the task's own rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chorus.analysis.labelled import LabelledDoc
from chorus.analysis.measure import PatternSpec, pattern_task
from chorus.taskfile import load_vote_task
from chorus.vote import VotePlan, plan_vote
from workflows.taskfile import VoterSpec, VoteRules, VoteTask

ROOT = Path(__file__).resolve().parents[3]
TICKETS = load_vote_task(str(ROOT / "examples" / "ticket-urgency.toml"))  # [vote] quorum = 2
TEXT = "Our whole team is locked out since the update and we cannot work."
SINGLE = PatternSpec("advise-single", "claude-haiku-5-5", 1)


def plan(spec: PatternSpec, task: VoteTask) -> VotePlan:
    if spec.task_panel:
        return plan_vote(TEXT, task=pattern_task(spec, task), cache_aware=False)
    return plan_vote(TEXT, task=pattern_task(spec, task), voters=spec.voters, models=[spec.model], cache_aware=False)


def test_the_single_call_of_the_readme_task_is_a_one_voter_task_decided_by_its_answer():
    # Before: "field vote.quorum: quorum must be between 1 and 1 (the panel), got 2".
    assert TICKETS.vote.quorum == 2
    single = plan(SINGLE, TICKETS)
    assert single.quorum == 1 and len(single.panel) == 1
    first = single.panel[0]
    assert (first.name, first.prompt, first.model) == ("cannot-do", TICKETS.voters[0].prompt, "claude-haiku-5-5")
    assert single.tie_policy.value == TICKETS.vote.tie_policy
    assert single.low_agreement_below == TICKETS.vote.low_agreement_below


def test_the_panel_keeps_the_tasks_quorum_and_its_own_voters():
    panel = plan(PatternSpec("advise-vote", "claude-haiku-5-5, claude-sonnet-5-5", 3, task_panel=True), TICKETS)
    assert panel.quorum == 2
    assert [v.name for v in panel.panel] == ["cannot-do", "cannot-do", "money-data-outage"]
    assert plan(PatternSpec("advise-vote", "claude-haiku-5-5", 3), TICKETS).quorum == 2


@pytest.mark.parametrize("rules", [
    VoteRules(quorum=3, stop="decided", stop_when_agree=3),
    VoteRules(quorum=2, tie_policy="first", stop="decided"),
    VoteRules(stop_when_agree=2, stop="decided"),
])
def test_any_valid_vote_rules_leave_the_single_call_runnable(rules):
    task = replace(TICKETS, vote=rules)
    single = plan(SINGLE, task)
    assert single.quorum == 1 and len(single.panel) == 1
    assert not single.task.vote.adaptive and single.task.vote.stop_when_agree is None
    assert single.tie_policy.value == rules.tie_policy


def test_an_effort_the_measured_model_does_not_offer_is_dropped_not_refused():
    task = replace(TICKETS, voters=(VoterSpec(name="careful", model="claude-sonnet-5-5", prompt="Be careful.",
                                              effort="low"),))
    assert plan(PatternSpec("s", "claude-sonnet-5-5", 1), task).panel[0].effort == "low"
    assert plan(PatternSpec("s", "claude-haiku-4-5", 1), task).panel[0].effort is None


def test_the_dry_run_estimate_of_compare_prices_the_single_call_of_a_task_with_a_quorum():
    from chorus.analysis.estimate import estimate_pattern
    from settings import Settings

    settings = Settings(provider="offline")
    docs = [LabelledDoc("t1", TEXT, "urgent")]
    estimate = estimate_pattern(SINGLE, docs, None, settings, task=TICKETS)
    assert estimate["documents"] == 1 and estimate["estimated_cost"]["total_usd"] > 0
