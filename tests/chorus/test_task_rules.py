"""Vote rules that cannot hold together (issue 22, item 6): `chorus task check` exits 2 naming the field,
and options given in Python or on the command line that create a contradiction are refused naming
the option, on the panel as resolved (`voters` changes its size and with it the default quorum)."""

from __future__ import annotations

import pytest

from chorus.vote import plan_vote, resolve_vote_task
from tests.clirunner import CliResult, chorus
from workflows.errors import ConfigError
from workflows.taskfile import Label, TaskFileError, VoterSpec, VoteRules, VoteTask

HEAD = 'name = "rules"\n[[labels]]\nname = "yes"\n[[labels]]\nname = "no"\n'


def task_file(tmp_path, vote: str, count: int = 5):
    path = tmp_path / "task.toml"
    path.write_text(f"{HEAD}[[voters]]\ncount = {count}\n[vote]\n{vote}\n")
    return path


def check(path) -> CliResult:
    return chorus("task", "check", str(path))


@pytest.mark.integration  # the command, in a process of its own
@pytest.mark.parametrize(("vote", "count", "field", "words"), [
    ('quorum = 3\nstop = "decided"\nstop_when_agree = 2', 5, "vote.stop_when_agree",
     "raise it to at least the quorum (3) or lower the quorum"),
    ('stop = "decided"\nstop_when_agree = 2', 5, "vote.stop_when_agree", "a majority of the 5 voters"),
    ('stop = "decided"\nstop_when_agree = 4', 3, "vote.stop_when_agree", "between 1 and 3 (the panel)"),
    ('quorum = 2\nstop_when_agree = 2', 5, "vote.stop_when_agree", 'needs stop = "decided"'),
    ("quorum = 6", 5, "vote.quorum", "between 1 and 5 (the panel)"),
    ("low_agreement_below = 0", 5, "vote.low_agreement_below", "above 0"),
])
def test_task_check_exits_2_naming_the_field_of_a_contradiction(tmp_path, vote, count, field, words):
    path = task_file(tmp_path, vote, count)
    done = check(path)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"{path}: field `{field}`:" in message
    assert words in message
    assert "Traceback" not in done.stderr


@pytest.mark.integration  # the command, in a process of its own
def test_task_check_passes_a_sound_adaptive_task(tmp_path):
    done = check(task_file(tmp_path, 'quorum = 2\nstop = "decided"\nstop_when_agree = 2'))
    assert done.returncode == 0, done.stderr
    assert "ok " in done.stdout


def adaptive(quorum: int | None, stop_when_agree: int, count: int = 5) -> VoteTask:
    return VoteTask(name="t", labels=(Label("yes"), Label("no")), voters=(VoterSpec(count=count),),
                    vote=VoteRules(quorum=quorum, stop="decided", stop_when_agree=stop_when_agree))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"task": adaptive(2, 2), "quorum": 3},
     "option quorum=3: field `vote.stop_when_agree`: stop_when_agree = 2 is below the quorum (3)"),
    ({"task": adaptive(None, 3), "voters": 7},
     "option voters=7: field `vote.stop_when_agree`: stop_when_agree = 3 is below the quorum (4"),
    ({"task": adaptive(None, 3), "voters": 2},
     "option voters=2: field `vote.stop_when_agree`: must be between 1 and 2"),
    ({"task": adaptive(3, 3), "voters": 2}, "option voters=2: field `vote.quorum`: quorum must be between 1 and 2"),
    ({"task": adaptive(2, 2), "low_agreement_below": 0.0}, "option low_agreement_below=0.0: field"),
    ({"labels": "yes,no", "voters": 3, "quorum": 4}, "options voters=3, quorum=4: field `vote.quorum`"),
    ({"labels": "yes,no", "quorum": 6}, "option quorum=6: field `vote.quorum`: quorum must be between 1 and 5"),
    ({"task": adaptive(3, 2)}, "^field `vote.stop_when_agree`: stop_when_agree = 2 is below the quorum"),
])
def test_options_in_python_that_contradict_the_task_are_a_config_error_naming_them(arguments, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_vote("Some text.", **arguments)
    with pytest.raises(TaskFileError):
        resolve_vote_task(**arguments)


def test_the_check_runs_on_the_resolved_panel():
    # stop_when_agree = 3 meets the default quorum of 5 voters (3) and of 4 (3), not of 6 (4).
    assert plan_vote("Some text.", task=adaptive(None, 3), voters=4).quorum == 3
    assert plan_vote("Some text.", task=adaptive(None, 3), voters=6, quorum=3).quorum == 3
    with pytest.raises(ConfigError, match="option voters=6: field `vote.stop_when_agree`"):
        plan_vote("Some text.", task=adaptive(None, 3), voters=6)
    # Asking every voter drops the early stop, and with it the contradiction.
    assert not plan_vote("Some text.", task=adaptive(None, 3), voters=6, adaptive=False).task.vote.adaptive
