"""A vote from the user's own task file, through real workers on Redis and PostgreSQL, the real
anthropic SDK pointed at the stub: what each voter was sent, and what the run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chorus import get_run, submit_vote, wait_for_run
from chorus.cli import app
from chorus.taskfile import load_vote_task
from workflows.taskfile import task_hash

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ticket-urgency.toml"
TICKET = "Since the update nobody on our team can log in. We are locked out and cannot work at all."


def user_text(body: dict) -> str:
    return "".join(block["text"] for block in body["messages"][0]["content"])


def test_every_voter_is_sent_the_users_task_and_its_own_prompt_as_structured_output(workers, stub):
    stub.reset()
    task = load_vote_task(EXAMPLE)
    run = wait_for_run(submit_vote(TICKET, task=task), timeout=60)
    assert run.status == "succeeded", run.error
    assert run.answer == "urgent"
    assert run.task == {"name": "ticket-urgency", "hash": task_hash(task)}
    assert sorted(str(o.prompt_variant) for o in run.outcomes) == ["cannot-do", "cannot-do", "money-data-outage"]
    assert {o.slot: o.model for o in run.outcomes} == {0: "claude-haiku-5-5", 1: "claude-haiku-5-5",
                                                        2: "claude-sonnet-5-5"}

    calls = [r for r in stub.requests() if r["run"] == run.id and r["status"] == 200]
    assert len(calls) == 3
    for call in calls:
        body = call["body"]
        voter = task.voters[0] if int(call["slot"]) < 2 else task.voters[1]
        assert task.instructions in body["system"]
        for label in task.labels:
            assert f'<label name="{label.name}">{label.description}</label>' in body["system"]
        for example in task.examples:
            assert example.text in body["system"]
        assert voter.prompt is not None and voter.prompt in user_text(body)
        schema = body["output_config"]["format"]["schema"]
        assert body["output_config"]["format"]["type"] == "json_schema"
        assert schema["properties"]["label"]["enum"] == ["urgent", "normal"]
        assert not {"temperature", "top_p", "top_k", "tool_choice"} & set(body)
        assert body["messages"][-1]["role"] == "user"  # no assistant prefill
        assert body["output_config"].get("effort") == voter.effort
    # Each outcome holds the JSON reply it was read from.
    for o in run.outcomes:
        assert json.loads(o.raw_output or "")["label"] == o.answer


def test_status_json_shows_the_task_and_the_voter_names(workers, stub, capsys):
    from typer.testing import CliRunner

    run_id = submit_vote(TICKET, task=load_vote_task(EXAMPLE))
    wait_for_run(run_id, timeout=60)
    result = CliRunner().invoke(app, ["status", run_id, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"]["name"] == "ticket-urgency" and len(data["task"]["hash"]) == 64
    assert [o["prompt_variant"] for o in data["outcomes"]] == ["cannot-do", "cannot-do", "money-data-outage"]


def test_a_label_description_changes_what_the_panel_decides(workers, stub):
    """The descriptions reach the model: the same ticket, the same panel, only the meaning of a label
    differs, and the answer follows it (the stub answers from what the prompt says)."""
    task = load_vote_task(EXAMPLE)
    ticket = "The invoice total is wrong by a few cents on the quarterly report."
    plain = wait_for_run(submit_vote(ticket, task=task), timeout=60)
    from dataclasses import replace

    from workflows.taskfile import Label

    described = replace(task, labels=(Label("urgent", "any wrong invoice total or money amount, however small"),
                                      task.labels[1]))
    changed = wait_for_run(submit_vote(ticket, task=described), timeout=60)
    assert get_run(plain.id).answer != get_run(changed.id).answer
    assert changed.answer == "urgent"
