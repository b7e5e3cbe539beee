"""`chorus task check`: a good file prints its panel, prompts and cost; a bad one exits 2 naming the field."""

from __future__ import annotations

import pytest

from tests.clirunner import chorus
from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # the command, in a process of its own


def test_the_shipped_examples_pass_the_check():
    done = chorus("task", "check", *sorted(str(p) for p in (ROOT / "examples").glob("*.toml")))
    assert done.returncode == 0, done.stderr
    assert "ok examples" in done.stdout.replace(str(ROOT) + "/", "")
    assert "estimated cost per document: $" in done.stderr


def test_check_json_shows_the_panel_every_prompt_and_a_cost_per_document():
    done = chorus("task", "check", "examples/ticket-urgency.toml", "--json", "--sample", "We are locked out.")
    assert done.returncode == 0, done.stderr
    data = done.json()
    assert data["name"] == "ticket-urgency" and len(data["hash"]) == 64
    assert [(v["name"], v["model"], v["effort"]) for v in data["panel"]] == [
        ("cannot-do", "claude-haiku-5-5", None), ("cannot-do", "claude-haiku-5-5", None),
        ("money-data-outage", "claude-sonnet-5-5", "low")]
    call = data["calls"][2]
    assert "Look for money, data loss or an outage" in "".join(call["user"])
    assert "We are locked out." in call["user"][0]
    assert '<label name="urgent">' in call["system"]
    assert call["output_schema"]["properties"]["label"]["enum"] == ["urgent", "normal"]
    assert data["estimated_cost_per_document"]["total_usd"] > 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace('name = "normal"', 'name = "URGENT"'), "field `labels[1].name`: label 'URGENT' repeats"),
        (lambda t: t.replace("count = 2", "count = 100"),
         "a vote of 101 voters is over the limit of 64 (CHORUS_MAX_VOTERS)"),
        (lambda t: t.replace("count = 2", "count = 1001"), "field `voters[0].count`"),
        (lambda t: t.replace('effort = "low"', 'effort = "extreme"'),
         "effort 'extreme' is not offered by claude-sonnet-5-5; use one of: low"),
        (lambda t: t.replace('model = "claude-sonnet-5-5"', 'model = "claude-nope-1"'),
         "model 'claude-nope-1' is not in the model registry"),
        (lambda t: t.replace('model = "claude-sonnet-5-5"', 'model = "claude-sonet-5-5"'),
         "did you mean claude-sonnet-5-5?"),
        (lambda t: t + "\n[vote\n", "is not valid TOML"),
    ],
)
def test_a_bad_task_file_exits_2_with_a_message_not_a_traceback(tmp_path, change, expected):
    bad = tmp_path / "bad.toml"
    bad.write_text(change((ROOT / "examples" / "ticket-urgency.toml").read_text()))
    done = chorus("task", "check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:")
    assert expected in " ".join(done.stderr.split())
