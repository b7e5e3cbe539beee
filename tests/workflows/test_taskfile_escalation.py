"""`[vote] escalate_to` and `escalate_when` in a task file: parsed, checked, stored, overridden."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest

from workflows.taskfile import (
    ESCALATE_CONDITIONS,
    Label,
    TaskFileError,
    VoteRules,
    VoteTask,
    check_vote_task,
    parse_task,
    task_from_json,
    task_hash,
    with_vote_overrides,
)

BASE = """
name = "tickets"
[[labels]]
name = "urgent"
[[labels]]
name = "normal"
"""


def parsed(vote: str = "") -> VoteTask:
    task = parse_task(tomllib.loads(BASE + ("[vote]\n" + vote if vote else "")))
    assert isinstance(task, VoteTask)
    return task


def test_a_task_without_escalation_has_none_and_keeps_the_hash_it_had_before():
    task = parsed()
    assert task.vote.escalate_to is None and task.vote.escalate_when == ESCALATE_CONDITIONS
    assert "escalate_to" not in task.to_json()["vote"] and "escalate_when" not in task.to_json()["vote"]
    # the hash of this task as stored before escalation existed (the resolved JSON without the two fields)
    assert task_hash(task) == task_hash(VoteTask(name="tickets", labels=(Label("urgent"), Label("normal"))))


def test_escalate_to_alone_escalates_on_every_condition():
    task = parsed('escalate_to = "claude-opus-5-5"\n')
    assert task.vote.escalate_to == "claude-opus-5-5"
    assert task.vote.escalate_when == ("low agreement", "tie", "below quorum")
    assert task.to_json()["vote"]["escalate_when"] == ["low agreement", "tie", "below quorum"]


def test_conditions_are_read_in_any_case_or_spelling_and_stored_in_one_order():
    a = parsed('escalate_to = "claude-opus-5-5"\nescalate_when = ["TIE", "low_agreement", "tie"]\n')
    b = parsed('escalate_to = "claude-opus-5-5"\nescalate_when = ["low agreement", "tie"]\n')
    assert a.vote.escalate_when == ("low agreement", "tie")
    assert task_hash(a) == task_hash(b)


@pytest.mark.parametrize(("vote", "field", "message"), [
    ('escalate_to = "claude-opus-5-5"\nescalate_when = ["disagreement"]\n', "vote.escalate_when[0]",
     "unknown condition 'disagreement'; use any of: \"low agreement\", \"tie\", \"below quorum\""),
    ('escalate_to = "claude-opus-5-5"\nescalate_when = "tie"\n', "vote.escalate_when",
     "must be a list of conditions"),
    ('escalate_to = "claude-opus-5-5"\nescalate_when = []\n', "vote.escalate_when", "is empty, so no vote would "
                                                                                      "escalate"),
    ('escalate_when = ["tie"]\n', "vote.escalate_when", "needs escalate_to beside it"),
    ('escalate_to = ""\n', "vote.escalate_to", "name the model close calls go to"),
    ('escalate_to = "claude opus"\n', "vote.escalate_to", "name the model close calls go to"),
    ("escalate_to = 3\n", "vote.escalate_to", "must be text"),
    ('escalate_to = "claude-opus-5-5"\nescalate = true\n', "vote.escalate", "unknown field; known fields here"),
])
def test_a_bad_escalation_field_is_named_with_the_fix(vote, field, message):
    with pytest.raises(TaskFileError) as caught:
        parsed(vote)
    assert caught.value.field == field
    assert message in caught.value.problem


def test_the_python_api_is_checked_the_same_way():
    task = VoteTask(name="t", labels=(Label("a"), Label("b")), vote=VoteRules(escalate_when=("tie",)))
    with pytest.raises(TaskFileError, match="needs escalate_to beside it"):
        check_vote_task(task)
    with pytest.raises(TaskFileError, match="unknown condition 'ties'"):
        check_vote_task(replace(task, vote=VoteRules(escalate_to="claude-opus-5-5", escalate_when=("ties",))))


def test_a_stored_run_reads_back_with_or_without_the_fields():
    old = {"name": "t", "pattern": "vote", "labels": [{"name": "a"}, {"name": "b"}],
           "vote": {"tie_policy": "none", "low_agreement_below": 0.6}}
    stored = task_from_json(old)
    assert isinstance(stored, VoteTask) and stored.vote.escalate_to is None
    task = parsed('escalate_to = "claude-opus-5-5"\nescalate_when = ["tie"]\n')
    again = task_from_json(task.to_json())
    assert again == task and task_hash(again) == task_hash(task)


def test_a_model_unknown_to_the_registry_is_not_refused_by_the_task_file_but_when_the_vote_is_planned():
    # The user's models file is only merged once the settings are read (see docs/decisions.md).
    assert parsed('escalate_to = "claude-opus-6"\n').vote.escalate_to == "claude-opus-6"


def test_the_command_line_sets_escalate_to_over_the_file():
    task = with_vote_overrides(parsed(), escalate_to=" claude-opus-5-5 ")
    assert task.vote.escalate_to == "claude-opus-5-5"
    with pytest.raises(TaskFileError) as caught:
        with_vote_overrides(parsed(), escalate_to="")
    assert caught.value.field == "vote.escalate_to" and caught.value.options == "escalate_to=''"
