"""One store you can find: embedded mode keeps its data in the per-user data directory, found from any
folder; a ./.chorus already in a folder keeps working and is named; a lookup that finds nothing names the
store it searched and what the command takes; listing an empty store creates nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import clirunner
from tests.conftest import PG_URL, REDIS_URL, clean_env, user_store

pytestmark = pytest.mark.integration


def chorus(*args: str, cwd: Path, **env: str) -> clirunner.CliResult:
    """A fresh user's command, 300 columns wide (the run ids of a table are never cut)."""
    return clirunner.chorus(*args, cwd=cwd, timeout=180, columns=300, env=clean_env(**env))


def folder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True)
    return path


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_runs_batches_and_status_on_an_empty_store_create_nothing_and_say_where_they_looked(tmp_path):
    here = folder(tmp_path, "work")

    runs = chorus("runs", cwd=here)
    listed = chorus("runs", "--json", cwd=here)
    batches = chorus("batches", "--json", cwd=here)
    status = chorus("status", "tickets-stub", cwd=here)
    by_batch = chorus("runs", "--batch", "tickets-stub", cwd=here)

    assert runs.returncode == 0 and listed.returncode == 0 and batches.returncode == 0, runs.stderr
    assert json.loads(listed.stdout) == [] and json.loads(batches.stdout) == []
    assert f"in the store {user_store(tmp_path)}" in one_line(runs.stdout) and "empty so far" in one_line(runs.stdout)
    message = one_line(status.stderr)
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert f"no run or batch 'tickets-stub' in the store {user_store(tmp_path)}" in message
    assert "a run id, a unique prefix of one, or a batch id or name" in message
    assert "set CHORUS_DATABASE_URL and CHORUS_BROKER_URL to look there" in message  # a forgotten cluster
    assert by_batch.returncode == 2 and f"no batch 'tickets-stub' in the store {user_store(tmp_path)}" in one_line(
        by_batch.stderr)
    assert files_under(tmp_path) == ["work"]  # no .chorus here, no store created by looking


def test_a_vote_made_in_one_folder_is_found_from_another_and_from_the_parent(tmp_path):
    voted = chorus("vote", "I love this kettle, it is excellent.", "--labels", "positive,negative", "--voters", "3",
                   "--json", cwd=folder(tmp_path, "project-a"))
    assert voted.returncode == 0, voted.stderr
    run_id = json.loads(voted.stdout)["id"]
    assert f"SQLite under {user_store(tmp_path)})" in voted.stderr

    status = chorus("status", run_id[:12], "--json", cwd=folder(tmp_path, "project-b"))
    listed = chorus("runs", "--json", cwd=tmp_path)

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == run_id
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    assert not list(tmp_path.glob("**/.chorus"))


def test_an_existing_dot_chorus_keeps_working_and_every_command_there_names_it(tmp_path):
    old = folder(tmp_path, "old-project")
    (old / ".chorus").mkdir()

    voted = chorus("vote", "I love this kettle.", "--labels", "positive,negative", "--voters", "3", "--json", cwd=old)
    listed = chorus("runs", "--json", cwd=old)
    elsewhere = chorus("runs", "--json", cwd=folder(tmp_path, "elsewhere"))

    assert voted.returncode == 0, voted.stderr
    run_id = json.loads(voted.stdout)["id"]
    assert f"SQLite under {old / '.chorus'} (the ./.chorus of this folder)" in voted.stderr
    assert (old / ".chorus" / "chorus.db").exists() and not user_store(tmp_path).exists()
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    note = one_line(listed.stderr)
    assert f"using the store in ./.chorus of this folder ({old / '.chorus'})" in note
    assert f"commands run elsewhere use {user_store(tmp_path)}" in note and "CHORUS_DATA_DIR" in note
    assert json.loads(elsewhere.stdout) == [] and "./.chorus" not in elsewhere.stderr


def test_with_a_database_url_a_missing_run_names_the_database_without_its_password(tmp_path, postgres, redis_db):
    url = PG_URL.replace("postgres@", "postgres:not-this-one@")  # trust auth: the password is not checked
    done = chorus("status", "nosuchrun", cwd=tmp_path, CHORUS_DATABASE_URL=url, CHORUS_BROKER_URL=REDIS_URL)

    assert done.returncode == 2, done.stderr
    message = one_line(done.stderr)
    assert f"no run or batch 'nosuchrun' in the database {PG_URL.replace('postgres@', 'postgres:***@')}" in message
    assert "not-this-one" not in done.stderr and "CHORUS_BROKER_URL to look there" not in message
