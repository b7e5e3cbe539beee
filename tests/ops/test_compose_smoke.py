"""docker-compose.yml's own commands and environment, run as local processes (tests/ops/stack.py):
the migrate job, a worker per model queue, the callbacks worker, beat and Flower, then a vote."""

from __future__ import annotations

import re
import socket
import time

import pytest

from settings import Settings, load_settings
from tests.ops.conftest import MODELS
from tests.ops.stack import LocalStack
from workflows.queues import all_queues

pytestmark = pytest.mark.integration


def worker_names_by_queue(stack: LocalStack) -> dict[str, str]:
    """queue -> the worker's node name, read from each service's `-Q` and `-n` arguments."""
    names = {}
    for service in stack.services.values():
        argv = service.argv
        if "worker" in argv[3:4] and "-Q" in argv:
            node = argv[argv.index("-n") + 1].replace("%h", socket.gethostname())
            for queue in argv[argv.index("-Q") + 1].split(","):
                names[queue] = node
    return names


def test_the_compose_file_runs_every_service_built_from_our_image(compose_stack):
    assert set(compose_stack.services) == {
        "migrate", "worker-haiku", "worker-sonnet", "worker-opus", "worker-callbacks", "beat", "flower"
    }
    migrate = compose_stack.services["migrate"]
    assert migrate.proc is not None and migrate.proc.returncode == 0
    assert "schema is current" in migrate.log()
    for service in compose_stack.services.values():
        if not service.one_shot:
            service.check_alive()


def test_a_vote_runs_through_the_compose_workers_each_model_on_its_own_worker(compose_stack, compose_vote, stub):
    run = compose_vote
    assert run["status"] == "succeeded"
    assert run["provider"] == "anthropic"  # ANTHROPIC_API_KEY reached the workers through the compose file
    assert run["answer"] == "positive"

    by_queue = worker_names_by_queue(compose_stack)
    # Every default model's queue has a worker (one worker per tier reads several); the vote's are among them.
    assert set(by_queue) == set(all_queues(load_settings(models=Settings.model_fields["models"].default).model_list))
    assert {f"llm.{m}" for m in MODELS} <= set(by_queue)
    outcomes = run["outcomes"]
    assert [o["model"] for o in outcomes] == [MODELS[i % 3] for i in range(5)]
    for o in outcomes:
        assert o["status"] == "succeeded"
        assert o["hostname"] == by_queue[f"llm.{o['model']}"]
        assert not o["usage_estimated"]
    # ANTHROPIC_BASE_URL from the compose file pointed the SDK at the stub: it saw every voter once.
    slots = sorted(int(r["slot"]) for r in stub.requests() if r["run"] == run["id"])
    assert slots == [0, 1, 2, 3, 4]


def test_beat_runs_from_the_compose_file_and_keeps_its_schedule_on_the_named_volume(compose_stack):
    beat = compose_stack.services["beat"]
    volume = compose_stack.workdir / "volumes" / "beat-data"
    deadline = time.monotonic() + 20
    while not any(volume.iterdir()) and time.monotonic() < deadline:
        beat.check_alive()
        time.sleep(0.2)
    beat.check_alive()
    assert [p.name for p in volume.iterdir() if p.name.startswith("celerybeat-schedule")], (
        f"beat wrote no schedule file under its volume; log:\n{beat.log()[-2000:]}"
    )
    assert "beat: Starting..." in beat.log()


def test_what_beat_sends_is_run_by_the_compose_workers(compose_stack):
    """Whatever the schedule holds (the reaper at least): beat sends it through Redis, a worker runs it."""
    beat = compose_stack.services["beat"]
    workers = [s for s in compose_stack.services.values() if s.argv[3:4] == ["worker"]]
    deadline = time.monotonic() + 30
    while True:
        beat.check_alive()
        sent = set(re.findall(r"Sending due task \S+ \(([\w.]+)\)", beat.log()))
        done = {name for name in sent if any(re.search(rf"Task {re.escape(name)}\[\S+\] succeeded", w.log())
                                             for w in workers)}
        if sent and done == sent:
            return
        assert time.monotonic() < deadline, (
            f"beat sent {sorted(sent)}, workers ran {sorted(done)}:\n{beat.log()[-2000:]}"
        )
        time.sleep(0.5)
