"""Flower as docker-compose.yml runs it (basic auth from the environment), against the real Redis
and the compose workers, after a real vote."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.ops.conftest import FLOWER_USER, MODELS
from tests.ops.stack import ROOT

pytestmark = pytest.mark.integration


def flower(stack: Any) -> str:
    return f"http://127.0.0.1:{stack.ports['flower']}"


def vote_tasks(client: httpx.Client, base: str, run: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
    """Flower's tasks of the vote (its 5 calls and its tally), once it has seen them all succeed:
    events reach Flower asynchronously, a moment after the run is stored."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = client.get(f"{base}/api/tasks", params={"limit": 1000}).raise_for_status().json()
        seen = {tid: t for tid, t in tasks.items() if run["id"] in str(t.get("args"))}
        if len(seen) == 6 and all(t["state"] == "SUCCESS" for t in seen.values()):
            return seen
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_flower_with_credentials_lists_the_votes_tasks_with_run_slot_and_model(
    compose_stack, compose_vote, flower_password
):
    run = compose_vote
    with httpx.Client(auth=(FLOWER_USER, flower_password), trust_env=False, timeout=10) as client:
        seen = vote_tasks(client, flower(compose_stack), run)

    assert set(seen) >= {o["task_id"] for o in run["outcomes"]}, "Flower did not list every voter's task"
    assert all(t["state"] == "SUCCESS" for t in seen.values())
    calls = [t for t in seen.values() if t["name"] == "chorus.vote.call"]
    tallies = [t for t in seen.values() if t["name"] == "chorus.vote.tally"]
    assert len(calls) == 5 and len(tallies) == 1
    for o in run["outcomes"]:
        task = seen[o["task_id"]]
        # The arguments by name: the slot, the model and the run id, and nothing else (never the text).
        assert task["args"] == f"slot={o['slot']} model={o['model']} task=labels run_id={run['id']}"
        assert task["worker"] == o["hostname"]
    # The chord hands the tally every voter's result first: shown as a count, so the run id stays in view.
    assert tallies[0]["args"] == f"results=<5 items> run_id={run['id']}"
    assert "kettle" not in str(seen)


def test_flower_lists_every_worker_of_the_compose_file(compose_stack, flower_password):
    host = socket.gethostname()
    with httpx.Client(auth=(FLOWER_USER, flower_password), trust_env=False, timeout=30) as client:
        workers = client.get(f"{flower(compose_stack)}/api/workers", params={"refresh": 1}).raise_for_status().json()
    assert {f"{name}@{host}" for name in ("haiku", "sonnet", "opus", "callbacks")} <= set(workers)
    queues = {q["name"] for w in workers.values() for q in w.get("active_queues", [])}
    assert queues >= {f"llm.{m}" for m in MODELS} | {"callbacks"}


@pytest.mark.parametrize("path", ["/", "/tasks", "/workers", "/api/tasks", "/api/workers"])
@pytest.mark.parametrize("auth", [None, ("ops", "wrong-password"), ("admin", "change-me")])
def test_flower_refuses_the_ui_and_the_api_without_the_right_credentials(compose_stack, path, auth):
    with httpx.Client(auth=auth, trust_env=False, timeout=10) as client:
        response = client.get(flower(compose_stack) + path)
    assert response.status_code == 401


def test_flower_metrics_answer_without_credentials_as_docs_operations_warns(compose_stack):
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(flower(compose_stack) + "/metrics")
    assert response.status_code == 200
    assert "flower_events_total" in response.text


def test_a_real_browser_with_the_credentials_sees_the_votes_tasks_on_flowers_tasks_page(
    compose_stack, compose_vote, flower_password, tmp_path
):
    """Headless Chromium renders /tasks (its table is filled by a script from /tasks/datatable)."""
    run = compose_vote
    with httpx.Client(auth=(FLOWER_USER, flower_password), trust_env=False, timeout=10) as client:
        vote_tasks(client, flower(compose_stack), run)  # Flower has seen them all finish
    wanted = [o["task_id"] for o in run["outcomes"]]
    for _ in range(3):  # the table is filled by a script; on a loaded machine a render can come too early
        proc = subprocess.run(
            [sys.executable, str(ROOT / "docs" / "flower_screenshot.py"), "--url", flower(compose_stack),
             "--user", FLOWER_USER, f"--password={flower_password}", "--dump-dom"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        page = proc.stdout
        if all(task_id in page for task_id in wanted):
            break
    for o in run["outcomes"]:
        assert o["task_id"] in page
        assert f"slot={o['slot']} model={o['model']} task=labels run_id=" in page
    assert "chorus.vote.tally" in page


def test_a_real_browser_without_credentials_gets_no_task_data(compose_stack, compose_vote, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "flower_screenshot.py"), "--url", flower(compose_stack),
         "--user", "", "--password", "", "--dump-dom"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Headless Chromium cannot answer the 401 challenge, so it renders nothing of Flower's at all
    # (the same page with the credentials, above, holds the table).
    assert "Flower" not in proc.stdout
    assert "chorus.vote" not in proc.stdout
    assert compose_vote["outcomes"][0]["task_id"] not in proc.stdout
