"""Planning a vote (nothing is written or sent): the task, the panel, and the checks before a call."""

from __future__ import annotations

import pytest

from chorus.vote import plan_vote
from workflows.errors import ConfigError
from workflows.taskfile import Label, SectionTask, Step, VoterSpec, VoteTask


def test_a_document_larger_than_the_models_context_window_is_refused_before_anything_is_sent():
    long = "word " * 170_000  # ~170k tokens: over Haiku 4.5's 200k once its tokens are counted, under 5.5's 1M
    with pytest.raises(ConfigError, match="too long for claude-haiku-4-5: about .* at most 200,000"):
        plan_vote(long, "a,b", voters=2, models=["claude-haiku-4-5"])
    assert plan_vote(long, "a,b", voters=2, models=["claude-haiku-5-5"]).panel[0].model == "claude-haiku-5-5"


@pytest.mark.parametrize(("options", "message"), [
    ({"task": SectionTask(name="s", map=Step("x"), merge=None, reduce=Step("y"))}, "submit_section"),
    ({"labels": None}, "say what to decide"),
    ({"models": "claude-haiku-5-5"}, "a list of model ids"),
    ({"task": VoteTask(name="t", labels=(Label("a"), Label("b")),
                       voters=(VoterSpec(model="claude-sonnet-5-5", effort="extreme"),))}, "effort 'extreme'"),
    ({"task": VoteTask(name="t", labels=(Label("a"), Label("b")),
                       voters=(VoterSpec(model="claude-haiku-4-5", effort="low"),))}, "takes no effort setting"),
    ({"voters": 65}, "65 voters is over the limit of 64 .CHORUS_MAX_VOTERS."),
    ({"voters": 1001}, "1 to 1000 voters"),
    ({"voters": "3"}, "the number of voters must be a whole number, got '3'"),
    ({"quorum": 9}, "quorum must be between 1 and 5"),
    ({"tie_policy": "random"}, "unknown tie policy 'random'; use one of: none, first"),
    ({"gold_label": "c"}, "gold label 'c' is not one of the labels"),
])
def test_bad_vote_input_is_a_config_error_naming_the_problem(options, message):
    arguments = {"labels": "a,b", **options}
    if "task" in arguments:
        arguments.pop("labels")
    with pytest.raises(ConfigError, match=message):
        plan_vote("Some text.", **arguments)


def test_a_task_vote_records_the_voter_names_and_the_labels_as_written():
    task = VoteTask(name="t", labels=(Label("Urgent"), Label("Normal")),
                    voters=(VoterSpec(name="reader", prompt="Read it.", count=2), VoterSpec()))
    plan = plan_vote("The server is down.", task=task, gold_label="urgent")
    assert [v.label for v in plan.panel] == ["reader", "reader", "direct"]
    assert plan.gold_label == "Urgent"
    assert plan.config()["spec"]["labels"][0]["name"] == "Urgent"
    assert plan.config()["task_name"] == "t" and len(plan.config()["task_hash"]) == 64


@pytest.mark.parametrize(("text", "message"), [
    ("a\x00b", "binary content (NUL characters)"),  # PostgreSQL cannot store it: refused before any write
    ("   \n\t", "the document is only whitespace"),
    (b"bytes", "must be text (str), got bytes"),
])
def test_a_document_that_cannot_be_stored_or_read_is_refused_with_the_reason(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_vote(text, "a,b")


def test_a_document_over_the_size_cap_is_refused_naming_the_setting():
    from settings import load_settings

    settings = load_settings(max_document_bytes=1000)
    with pytest.raises(ConfigError, match="over the size cap of 1000 bytes .CHORUS_MAX_DOCUMENT_BYTES."):
        plan_vote("x" * 1001, "a,b", settings=settings)


def test_the_voter_limit_is_a_setting():
    from settings import load_settings

    assert len(plan_vote("Some text.", "a,b", voters=100, settings=load_settings(max_voters=100)).panel) == 100
    with pytest.raises(ConfigError, match="over the limit of 3 .CHORUS_MAX_VOTERS."):
        plan_vote("Some text.", "a,b", voters=4, settings=load_settings(max_voters=3))
