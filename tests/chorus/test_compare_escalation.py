"""The pieces of `chorus compare`'s three ways that read stored runs: a stored tally read back, and the
task measured without escalating."""

from __future__ import annotations

from dataclasses import replace

from chorus.analysis.compare import escalates_to, escalation_rules, stored_tally, without_escalation
from workflows.escalation import escalation_reason
from workflows.taskfile import VoteRules, labels_task
from workflows.voting import tally


def test_a_stored_tally_reads_back_as_the_tally_and_escalates_as_it_would_have():
    close = tally(["a", "a", "b"], ["a", "b"], low_agreement_below=0.9)
    read = stored_tally(close.to_json())
    assert read is not None and read.to_json() == close.to_json()  # the confidence as stored: 4 decimals
    rules = escalation_rules(None, "claude-opus-5-5")
    assert escalation_reason(read, rules) == escalation_reason(close, rules) is not None
    assert stored_tally(None) is None and stored_tally({}) is None  # a run that was never tallied


def test_the_panel_is_measured_without_escalating_and_the_strong_model_is_the_options_or_the_tasks():
    task = labels_task("a,b", voters=3)
    escalating = replace(task, vote=replace(task.vote, escalate_to="claude-opus-5-5", escalate_when=("tie",)))
    measured = without_escalation(escalating)
    assert measured is not None and measured.vote.escalate_to is None
    assert measured.vote.escalate_when == VoteRules().escalate_when
    assert without_escalation(task) is task and without_escalation(None) is None
    assert escalates_to(escalating, None) == "claude-opus-5-5"
    assert escalates_to(escalating, "claude-sonnet-5-5") == "claude-sonnet-5-5"
    assert escalates_to(task, None) is None
    assert escalation_rules(escalating, "claude-sonnet-5-5").escalate_when == ("tie",)  # the task's conditions
