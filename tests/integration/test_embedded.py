"""Embedded mode from a user's point of view: no broker, no database, no API key."""

from __future__ import annotations

import json
import shutil
import tomllib
from importlib import resources

import pytest

from chorus.vote import plan_vote
from providers.offline import OfflineProvider
from tests.clirunner import chorus
from tests.conftest import pids_matching, user_store
from workflows.registry import supports_structured_outputs
from workflows.voting import read_answer, tally, vote_request

pytestmark = pytest.mark.integration


def test_demo_json_in_an_empty_directory_runs_embedded_and_leaves_nothing_running(tmp_path):
    proc = chorus("demo", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "embedded mode" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "embedded"
    assert report["provider"] == "offline"
    assert report["usage_estimated"] is True
    assert len(report["runs"]) == 8
    for run in report["runs"]:
        assert run["status"] in {"succeeded", "partial"}
        assert run["result"]["voters"] == 5
        assert len(run["outcomes"]) == 5
        assert all(o["status"] == "succeeded" and o["input_tokens"] > 0 for o in run["outcomes"])
        assert all(o["started_at"] and o["finished_at"] for o in run["outcomes"])
    # The offline provider is deterministic: the embedded workers must reach exactly the accuracy the
    # same voters reach when called here in-process (7 of the 8 bundled reviews: the blender's mixed
    # review is voted positive).
    assert report["accuracy"] == offline_demo_accuracy(voters=5)
    # Its data went to the user's one store (found from any folder), nothing into the folder it ran in.
    assert (user_store(tmp_path) / "chorus.db").exists() and not (tmp_path / ".chorus").exists()
    assert pids_matching(str(tmp_path)) == []


def offline_demo_accuracy(voters: int) -> float:
    """The demo's accuracy computed without workers, broker or database: each bundled review's panel
    asks the offline provider directly and the answers are tallied with the demo's vote rules."""
    lines = resources.files("chorus").joinpath("examples", "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    correct = 0
    for example in examples:
        plan = plan_vote(example["text"], "positive,negative,neutral", voters=voters, cache_aware=False)
        answers = []
        for voter in plan.panel:
            structured = supports_structured_outputs(voter.model)
            result = OfflineProvider().call(vote_request(voter, plan.task, example["text"], structured=structured))
            answers.append(read_answer(result.text, plan.labels, structured=structured,
                                       stop_reason=result.stop_reason)[0])
        winner = tally(answers, plan.labels, quorum=plan.quorum, tie_policy=plan.tie_policy).winner
        correct += winner == example["label"]
    return correct / len(examples)


def test_a_vote_then_its_status_in_embedded_mode(tmp_path):
    voted = chorus("vote", "I love this kettle, it is excellent.", "--labels", "positive,negative",
                   "--voters", "3", "--json", cwd=tmp_path)
    assert voted.returncode == 0, voted.stderr
    run = json.loads(voted.stdout)
    assert run["answer"] == "positive"
    assert [o["slot"] for o in run["outcomes"]] == [0, 1, 2]

    shown = chorus("status", run["id"][:8], "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == run["id"]
    human = chorus("status", run["id"][:8], cwd=tmp_path)  # the human view shows the cost too, marked
    assert f"cost ~${run['cost']['total_usd']:.6f} (estimated" in human.stdout
    assert pids_matching(str(tmp_path)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vote", "   ", "--labels", "a,b"], "only whitespace"),
        (["vote", "text", "--labels", "a"], "at least two labels"),
        (["vote", "text", "--labels", "a,b", "--model", "gpt-4"], "'gpt-4' is not in the model registry"),
        (["vote", "missing-file.txt", "--labels", "a,b"], "no such file"),
        (["status", "doesnotexist"], "no run"),
        (["section", "some text", "--max-tokens", "0"], "--max-tokens"),
        (["vote", "text", "--labels", "a,b", "--tie-policy", "random"], "use one of: none, first"),
        (["compare", ".", "--labels", "a,b"], "is a folder"),
        (["vote", "text", "--labels", "a,b", "--voters", "100"], "CHORUS_MAX_VOTERS"),
    ],
)
def test_bad_input_exits_2_with_a_message_that_names_the_problem(tmp_path, args, message):
    proc = chorus(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert pids_matching(str(tmp_path)) == []


MANPAGE = (
    "# Selection\n-a, --all\n    Show every entry, hidden ones too.\n-b, --brief\n    Show one line per entry.\n\n"
    "# Output\n-o FILE\n    Write the listing to FILE.\n"
)


def test_the_readmes_task_file_examples_run_as_written_on_a_fresh_machine(tmp_path):
    """The README's two task files, by the README's commands, in embedded mode (the main job's mode)."""
    import jsonschema

    from tests.conftest import ROOT
    from workflows.taskfile import closed_schema

    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    (tmp_path / "manpage.txt").write_text(MANPAGE)

    checked = chorus("task", "check", "examples/ticket-urgency.toml", "examples/man-options.toml", cwd=tmp_path)
    vote = chorus("vote", "--task", "examples/ticket-urgency.toml",
                  "Since the update nobody on our team can log in. We are locked out and cannot work.", "--json",
                  cwd=tmp_path)
    section = chorus("section", "--task", "examples/man-options.toml", "manpage.txt", "--json", cwd=tmp_path)

    assert checked.returncode == 0, checked.stderr
    assert vote.returncode == 0, vote.stderr
    run = json.loads(vote.stdout)
    assert run["task"]["name"] == "ticket-urgency" and run["answer"] == "urgent"
    assert sorted(o["prompt_variant"] for o in run["outcomes"]) == ["cannot-do", "cannot-do", "money-data-outage"]
    assert section.returncode == 0, section.stderr
    result = json.loads(section.stdout)
    assert result["task"]["name"] == "man-options" and result["status"] == "succeeded"
    value = json.loads(result["result"]["synthesis"])
    schema = closed_schema(tomllib.loads((examples / "man-options.toml").read_text())["map"]["output_schema"])
    jsonschema.validate(value, schema)
    assert [o["flag"] for o in value["options"]][:3] == ["-a", "-b", "-o"]
    assert pids_matching(str(tmp_path)) == []


@pytest.mark.parametrize("command", [["vote", "Some text to vote on.", "--labels", "a,b"],
                                     ["section", "# One\nfirst part.\n\n# Two\nsecond part."]])
def test_a_dry_run_prints_the_estimate_and_sends_nothing(tmp_path, command):
    done = chorus(*command, "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    preview = json.loads(done.stdout)
    assert preview["dry_run"] is True and preview["calls"] in (5, 2)
    assert preview["estimated_cost"]["total_usd"] > 0 and preview["estimated_cost"]["estimated"] is True
    assert "embedded mode" not in done.stderr  # no worker was started
    assert not (user_store(tmp_path) / "broker").exists() or not any((user_store(tmp_path) / "broker").rglob("*.msg"))
