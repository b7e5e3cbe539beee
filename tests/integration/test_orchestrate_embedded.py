"""`chorus orchestrate` on one machine (embedded mode: no broker, SQLite) against the stub, as a user runs it
(issue 23, item 2): the stub's log has one planner request carrying the subtask schema, one worker request
per subtask of the plan, one synthesis; `max_workers` and a budget hold; status shows the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clirunner import chorus
from tests.conftest import ROOT, clean_env
from workflows.orchestrating import plan_schema

pytestmark = pytest.mark.integration

EXAMPLE = str(ROOT / "examples" / "contract-review.toml")  # max_workers = 12


def contract(folder: Path, lines: int) -> str:
    path = folder / "contract.txt"
    path.write_text("\n".join(f"Clause {i} fixes the delivery date of the goods to day {i}."
                              for i in range(1, lines + 1)), encoding="utf-8")
    return str(path)


def on_stub(stub) -> dict[str, str]:
    """A fresh user's environment (embedded mode) whose provider is the stub."""
    return clean_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=stub.base_url)


def test_orchestrate_runs_the_planner_one_worker_per_subtask_and_one_synthesis(tmp_path, stub):
    stub.reset()
    done = chorus("orchestrate", contract(tmp_path, 4), "--task", EXAMPLE, "--json", cwd=tmp_path, env=on_stub(stub))

    assert done.returncode == 0, done.stderr
    assert "embedded mode" in done.stderr
    run = done.json()
    assert run["status"] == "succeeded" and run["pattern"] == "orchestrate"
    subtasks = run["result"]["subtasks"]
    assert [s["title"][:8] for s in subtasks] == ["Clause 1", "Clause 2", "Clause 3", "Clause 4"]
    assert [o["role"] for o in run["outcomes"]] == ["planner", "worker", "worker", "worker", "worker", "reduce"]
    log = [r for r in stub.requests() if r["run"] == run["id"]]
    by_slot = sorted(int(r["slot"]) for r in log)
    assert by_slot == [0, 1, 2, 3, 4, 5]  # one planner, N = 4 workers, one synthesis: each called once
    planner = next(r for r in log if r["slot"] == "0")["body"]
    assert planner["output_config"]["format"]["schema"] == plan_schema(12)
    assert {r["body"]["model"] for r in log if r["slot"] in ("1", "2", "3", "4")} == {"claude-haiku-5-5"}

    shown = chorus("status", run["id"], cwd=tmp_path, env=on_stub(stub))
    assert shown.returncode == 0, shown.stderr
    assert "plan: 4 subtask(s)" in shown.stdout and "Clause 3 fixes" in shown.stdout and "final reduce" in shown.stdout


def test_max_workers_holds_when_the_plan_lists_more_subtasks(tmp_path, stub):
    stub.reset()
    done = chorus("orchestrate", contract(tmp_path, 5), "--task", EXAMPLE, "--max-workers", "2", "--json",
                  cwd=tmp_path, env=on_stub(stub))

    assert done.returncode == 3, done.stderr  # EXIT_PARTIAL, as the other commands exit for a partial run
    run = done.json()
    assert run["status"] == "partial" and "more than max_workers = 2" in run["error"]
    assert len(run["result"]["subtasks"]) == 2 and len(run["result"]["dropped"]) == 3
    assert sorted(int(r["slot"]) for r in stub.requests() if r["run"] == run["id"]) == [0, 1, 2, 3]


def test_a_budget_below_the_estimate_refuses_before_anything_is_sent(tmp_path, stub):
    stub.reset()
    dry = chorus("orchestrate", contract(tmp_path, 3), "--task", EXAMPLE, "--dry-run", "--json", cwd=tmp_path,
                 env=on_stub(stub))
    assert dry.returncode == 0, dry.stderr
    estimate = dry.json()["estimated_cost"]["total_usd"]
    assert dry.json()["calls"] == 14 and estimate > 0

    refused = chorus("orchestrate", contract(tmp_path, 3), "--task", EXAMPLE, "--max-cost", f"{estimate / 2:.6f}",
                     cwd=tmp_path, env=on_stub(stub))
    assert refused.returncode == 2, refused.stderr
    assert "budget" in refused.stderr
    assert stub.requests() == []


def test_a_task_file_of_another_pattern_is_refused_with_the_command_to_use(tmp_path):
    done = chorus("orchestrate", "some text", "--task", str(ROOT / "examples" / "ticket-urgency.toml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "chorus vote --task" in done.stderr and "Traceback" not in done.stderr


def test_the_status_json_of_an_orchestrate_run_shows_its_subtasks(tmp_path, stub):
    stub.reset()
    run = chorus("orchestrate", contract(tmp_path, 2), "--task", EXAMPLE, "--json", cwd=tmp_path,
                 env=on_stub(stub)).json()
    shown = chorus("status", run["id"], "--json", cwd=tmp_path, env=on_stub(stub)).json()
    assert [s["title"] for s in shown["result"]["subtasks"]] == [s["title"] for s in run["result"]["subtasks"]]
    assert json.dumps(shown["result"]["subtasks"])
