"""Model names on the command line, as a new user types them (embedded mode, offline): a misspelt
model gets "did you mean", never the advice to add it to CHORUS_MODELS (after which every voter
abstained and the cost showed "-"); a model of the user's models file runs and is priced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import clirunner
from tests.conftest import clean_env, pids_matching
from tests.workflows.test_registry_user_models import OPUS_6

pytestmark = pytest.mark.integration


def chorus(*args: str, cwd: Path, **env: str) -> clirunner.CliResult:
    """A fresh user's command whose store is `cwd`/store."""
    return clirunner.chorus(*args, cwd=cwd, timeout=240, env=clean_env(CHORUS_DATA_DIR=str(cwd / "store"), **env))


@pytest.mark.parametrize(("args", "expected"), [
    (("vote", "The battery died.", "--labels", "a,b", "--model", "claude-sonet-5-5"),
     "did you mean claude-sonnet-5-5?"),
    (("vote", "The battery died.", "--labels", "a,b", "--model", "gpt-4o"), "'gpt-4o' is not in the model registry"),
    (("section", "# A\nsome text\n# B\nmore text", "--model", "claude-sonet-5-5"), "did you mean claude-sonnet-5-5?"),
    (("compare", "docs.jsonl", "--labels", "a,b", "--single-model", "claude-opus-55", "--dry-run"),
     "did you mean claude-opus-5-5?"),
])
def test_a_misspelt_model_exits_2_with_did_you_mean_and_sends_nothing(tmp_path, args, expected):
    (tmp_path / "docs.jsonl").write_text('{"id": "1", "text": "Fine.", "label": "a"}\n')
    done = chorus(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert expected in message and "`chorus models`" in message
    assert "add them to CHORUS_MODELS" not in message and "Traceback" not in done.stderr
    assert pids_matching(str(tmp_path)) == []


def test_task_check_refuses_a_task_file_whose_voter_names_a_misspelt_model(tmp_path):
    task = tmp_path / "t.toml"
    task.write_text('name = "t"\npattern = "vote"\n[[labels]]\nname = "a"\n[[labels]]\nname = "b"\n'
                    '[[voters]]\nname = "judge"\nmodel = "claude-haiku-55"\n')
    done = chorus("task", "check", str(task), cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean claude-haiku-5-5?" in " ".join(done.stderr.split())


def test_a_model_of_the_models_file_is_listed_votes_and_has_a_cost(tmp_path):
    models_file = tmp_path / "models.toml"
    models_file.write_text(OPUS_6)

    listed = chorus("models", "--json", cwd=tmp_path, CHORUS_MODELS_FILE=str(models_file))
    table = chorus("models", cwd=tmp_path, CHORUS_MODELS_FILE=str(models_file))
    voted = chorus("vote", "The battery died in a day; I want my money back.", "--labels", "positive,negative",
                   "--model", "claude-opus-6", "--voters", "3", "--json", cwd=tmp_path,
                   CHORUS_MODELS_FILE=str(models_file))
    bad = chorus("models", cwd=tmp_path, CHORUS_MODELS_FILE=str(tmp_path / "missing.toml"))

    assert listed.returncode == 0, listed.stderr
    entry = {m["id"]: m for m in json.loads(listed.stdout)["models"]}["claude-opus-6"]
    assert entry["origin"] == str(models_file) and entry["prices_per_mtok"]["input"] == 5.0
    assert "claude-opus-6 *" in table.stdout and "from your models file" in table.stdout
    # Whether the offline scorer decides this text is not the point (exit 0, 1 or 3): every voter was called
    # on the model of the file, and the run is priced.
    assert voted.returncode in (0, 1, 3), voted.stderr
    run = json.loads(voted.stdout)
    assert {o["model"] for o in run["outcomes"]} == {"claude-opus-6"}
    assert all(o["status"] == "succeeded" and o["input_tokens"] > 0 for o in run["outcomes"])
    assert run["cost"] is not None and run["cost"]["total_usd"] > 0  # priced: never "-"
    assert bad.returncode == 2 and "CHORUS_MODELS_FILE: cannot read" in bad.stderr
    assert pids_matching(str(tmp_path)) == []
