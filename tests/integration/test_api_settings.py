"""The Python API follows the settings it is given: the broker of `settings=` gets the messages, and
the results this process keeps while runs are in flight stay bounded when nobody waits on them."""

from __future__ import annotations

import json
import os
import time

import pytest
import redis

import chorus.runs
from chorus import get_run, load_settings, submit_vote
from chorus.testing import claim_redis_db, release_redis_db
from models import RunStatus, Session, repo
from tests.conftest import PG_URL, REDIS_URL

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
TEXT = "The kettle is quiet and fast; I would buy it again."


@pytest.fixture
def second_redis_db(redis_db):
    owner = f"{os.getpid()}-settings-test"
    db = claim_redis_db(range(1, 16), owner)
    if db is None:
        pytest.skip("every Redis database 1-15 is claimed by other test sessions")
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    try:
        yield db, client
    finally:
        client.flushdb()
        client.close()
        release_redis_db(db, owner)


def queued_messages(client: redis.Redis) -> dict[str, list[dict]]:
    """Every message waiting in a kombu queue (a Redis list) of this database, by queue."""
    found = {}
    for key in client.scan_iter():
        if client.type(key) == b"list":
            found[key.decode()] = [json.loads(raw) for raw in client.lrange(key, 0, -1)]
    return found


def test_a_vote_submitted_with_settings_sends_its_messages_to_that_broker_not_the_environments(
        postgres, second_redis_db):
    db, client = second_redis_db
    other = f"redis://127.0.0.1:6379/{db}"
    settings = load_settings(broker_url=other, result_backend=other, database_url=PG_URL)
    env_broker = redis.Redis.from_url(REDIS_URL)
    before = {k: env_broker.llen(k) for k in env_broker.scan_iter() if env_broker.type(k) == b"list"}

    run_id = submit_vote(TEXT, LABELS, voters=3, settings=settings)  # no worker listens on `other`
    try:
        check_sent_to(client, other, env_broker, before, run_id, settings)
    finally:  # no worker will ever take it: close it, or another test's reaper would find it open
        with Session.begin() as s:
            repo.fail_open_slots(s, run_id, "test: sent to a broker no worker listens on")
            run = repo.load_run(s, run_id)
            assert run is not None
            repo.finish_run(s, run, status=RunStatus.FAILED, result={}, error="test: never consumed")


def check_sent_to(client, other, env_broker, before, run_id, settings):
    messages = queued_messages(client)
    sent = [m for queue in messages.values() for m in queue if run_id in json.dumps(m)]
    assert sent, f"no message of run {run_id} on {other}; found queues {sorted(messages)}"
    assert all(m["headers"]["task"] == "chorus.vote.call" for m in sent)
    after = {k: env_broker.llen(k) for k in env_broker.scan_iter() if env_broker.type(k) == b"list"}
    assert after == before, "the environment's broker got messages too"
    assert chorus.runs.celery_app(settings).conf.broker_url == other
    assert get_run(run_id, settings=settings).status == "running"


def test_results_kept_for_waiting_stay_bounded_when_the_caller_only_polls(workers, stub, monkeypatch):
    kept = chorus.runs.app  # the module that keeps each sent run's callback for waiting
    monkeypatch.setattr(kept, "MAX_PENDING", 3)
    kept._pending.clear()
    run_ids = []
    for i in range(8):
        run_ids.append(submit_vote(f"{TEXT} ({i})", LABELS, voters=2))
        assert len(kept._pending) <= 3
    deadline = time.monotonic() + 90
    while not all(get_run(r).terminal for r in run_ids):  # polling, never wait_for_run
        assert time.monotonic() < deadline, "the runs did not finish"
        time.sleep(0.1)
    assert kept._pending == {}, "polling a finished run must release what was kept for it"
