"""Reliability under injected faults, crashes and a broker outage, and the shared rate limit.

Each test runs its own cluster (tests/cluster.py: the `cluster` fixture, or for the kill test, the same
parts set up in its body): a private redis-server on a free loopback port, its own stub server, real
`celery worker` processes pointed at both, and the session's PostgreSQL database. Votes are submitted
through the chorus API from a separate process configured for that cluster.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import time
from collections import Counter
from typing import Any

import pytest
import redis
from sqlalchemy import select

from chorus.testing import outcome_rows, private_redis, submit_votes, wait_terminal
from chorus.testing.stub.testing import StubHandle, running_stub
from models import OutcomeStatus, Session, WorkerOutcome, get_engine
from tests.cluster import (
    LABELS,
    QUEUES,
    TERMINAL,
    Fleet,
    assert_every_run_agrees_with_its_slots,
    assert_one_row_per_slot_and_all_terminal,
    cluster_env,
    documents,
    fleet,
    logged_at_least,
    requests_by_slot,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANG_S = 2.5


@pytest.mark.cluster(stub_latency_ms=20,
                     stub_args=("--fault", "429=0.2,529=0.05,500=0.05,hang=0.02", "--seed", "7", "--hang-s",
                                str(HANG_S), "--retry-after", "0.3"),
                     env={"CHORUS_CALL_TIMEOUT_S": "1.0", "CHORUS_RETRY_BACKOFF_S": "0.1",
                          "CHORUS_RETRY_BACKOFF_MAX_S": "1", "CHORUS_MAX_ATTEMPTS": "4"})
def test_a_fault_mix_on_a_40_run_batch_ends_every_run_and_retries_only_the_failed_calls(cluster, schema):
    cluster.start_llm(concurrency=10)
    cluster.start_callbacks()
    cluster.ready()
    run_ids = cluster.submit_votes(documents(40), voters=5)
    statuses = cluster.wait_terminal(run_ids, timeout=120)
    cluster.workers.stop_all()
    rows = cluster.outcome_rows(run_ids)
    # The stub logs a hung request only when its bounded hang ends, after the client gave up on it:
    # wait until the log holds every attempt the slots counted (a missing one fails here, by name).
    attempts = sum(r["attempts"] for r in rows)
    log = wait_for(lambda: logged_at_least(cluster.stub, attempts), timeout=HANG_S + 10,
                   what=f"the stub to log the {attempts} attempts the slots counted")

    assert len(statuses) == 40
    assert all(s in TERMINAL for s in statuses.values()), statuses
    assert_one_row_per_slot_and_all_terminal(run_ids, rows, voters=5)
    by_status = assert_every_run_agrees_with_its_slots(run_ids, schema)
    assert sum(by_status.values()) == 40
    faults = Counter(e.get("fault") for e in log)
    assert faults["429"] > 10 and faults["500"] > 0 and faults["529"] > 0 and faults["hang"] > 0, faults

    calls = requests_by_slot(log)
    assert set(calls) == {(r["run"], r["slot"]) for r in rows}
    by_key = {(r["run"], r["slot"]): r for r in rows}
    retried = 0
    for key, entries in calls.items():
        row = by_key[key]
        assert len(entries) == row["attempts"], (key, entries, row)  # every attempt is counted
        # Only failed calls were retried: every call before a slot's last one was a fault, and a
        # slot that got an answer was never called again.
        assert all(e["status"] != 200 for e in entries[:-1]), entries
        if entries[-1]["status"] == 200:
            assert row["status"] == "succeeded"
        else:
            assert row["status"] == "failed" and row["attempts"] == 4
            assert "gave up after 4 attempt(s)" in row["error"]
        retried += len(entries) > 1
    assert retried >= 20  # the mix really did make slots retry
    assert len(log) == attempts


def slots_of(hostname: str, status: OutcomeStatus, database_url: str) -> set[tuple[str, int]]:
    """Slots in `status` whose last claim was taken by the worker `hostname` (RUNNING: it holds them and
    wrote no outcome yet)."""
    get_engine(database_url)
    with Session() as s:
        rows = s.execute(select(WorkerOutcome.run_id, WorkerOutcome.slot).where(
            WorkerOutcome.hostname == hostname, WorkerOutcome.status == status)).all()
    return {(run_id, slot) for run_id, slot in rows}


def held_tasks(slots: set[tuple[str, int]], database_url: str) -> dict[tuple[str, int], str | None]:
    """The task id of each slot's last claim."""
    get_engine(database_url)
    with Session() as s:
        rows = s.execute(select(WorkerOutcome.run_id, WorkerOutcome.slot, WorkerOutcome.task_id).where(
            WorkerOutcome.run_id.in_({run_id for run_id, _ in slots}))).all()
    return {(run_id, slot): task_id for run_id, slot, task_id in rows if (run_id, slot) in slots}


def _call_of(message: dict[str, Any]) -> tuple[str, int] | None:
    """(run id, slot) of a kombu message carrying a call task, else None."""
    body = message.get("body")
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body or "")
    try:
        args = json.loads(body or "null")[0]
        return str(args[0]), int(args[1])
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def lose_messages_of(redis_url: str, slots: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Delete every broker message of these slots' call tasks, taken and unacknowledged (kombu's `unacked`
    hash) or queued again: what Redis does to a message acknowledged early, or popped by a worker killed
    before it was recorded (kombu #305). Nothing but the reaper can then finish those slots. The slots
    whose message was found."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    lost: set[tuple[str, int]] = set()
    try:
        for tag, raw in client.hgetall("unacked").items():
            key = _call_of(json.loads(raw)[0])
            if key in slots and client.hdel("unacked", tag):
                client.zrem("unacked_index", tag)
                lost.add(key)
        for queue in client.keys(f"{QUEUES}*"):  # restored already (they are not, this soon after the kill)
            for queued in map(str, client.lrange(queue, 0, -1)):
                key = _call_of(json.loads(queued))
                if key in slots and client.lrem(queue, 0, queued):
                    lost.add(key)
    finally:
        client.close()
    return lost


def busy_and_warm(hostname: str, concurrency: int, database_url: str) -> bool:
    """The worker has answered a call in each of its pool processes (their first call also opens the
    SDK's client and connection, which is slow) and now holds two slots: its requests are out."""
    return (len(slots_of(hostname, OutcomeStatus.SUCCEEDED, database_url)) >= concurrency
            and len(slots_of(hostname, OutcomeStatus.RUNNING, database_url)) >= 2)


def held_claims(hostname: str, database_url: str) -> dict[tuple[str, int], int]:
    """The slots `hostname` holds (running, its claim the last), each with its stored attempts."""
    get_engine(database_url)
    with Session() as s:
        rows = s.execute(select(WorkerOutcome.run_id, WorkerOutcome.slot, WorkerOutcome.attempts).where(
            WorkerOutcome.hostname == hostname, WorkerOutcome.status == OutcomeStatus.RUNNING)).all()
    return {(run_id, slot): attempts for run_id, slot, attempts in rows}


def provider_calls(stub: StubHandle, slots: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """How many requests of each slot reached the stub: answered (the log, read first) or being answered
    (in flight, read second; a request answered in between is in neither, so this never counts one twice)."""
    counted: Counter[tuple[str, int]] = Counter()
    for entry in [*stub.requests(bodies=False), *stub.inflight()]:
        if entry.get("run") and (key := (entry["run"], int(entry["slot"]))) in slots:
            counted[key] += 1
    return {key: counted[key] for key in slots}


def kill_with_every_claim_called(workers: Fleet, name: str, stub: StubHandle, database_url: str,
                                 concurrency: int, timeout: float = 60) -> tuple[float, set[tuple[str, int]]]:
    """Kill -9 the worker `name` at an instant when each slot it holds has reached the provider exactly as
    many times as it was claimed: (when, the slots it held). A kill between a claim and its request would
    leave that claim without a call (attempts one above calls), which no accounting can tell from a lost
    call; so the worker is frozen (SIGSTOP), left 0.3 s for what it had already sent to arrive (its request
    bytes at the stub, a commit at PostgreSQL), read twice, and killed only when both readings agree and
    every held claim has its call; otherwise it is thawed and the next instant is tried."""
    hostname = workers.procs[name].hostname
    deadline = time.monotonic() + timeout
    while True:
        wait_for(lambda: busy_and_warm(hostname, concurrency, database_url), timeout=30,
                 what=f"{hostname} to answer {concurrency} calls and hold two slots")
        workers.signal(name, signal.SIGSTOP)
        time.sleep(0.3)
        held = held_claims(hostname, database_url)
        calls = provider_calls(stub, set(held))
        time.sleep(0.1)
        if (len(held) >= 2 and held == held_claims(hostname, database_url) and calls == held
                and calls == provider_calls(stub, set(held))):
            killed_at = time.time()
            workers.kill(name)
            return killed_at, set(held)
        workers.signal(name, signal.SIGCONT)
        if time.monotonic() > deadline:
            pytest.fail(f"no instant in {timeout:g} s when every slot {hostname} held had been called as often "
                        f"as it was claimed (last: claims {held}, calls {calls})")
        time.sleep(0.05)


def test_killing_one_of_two_workers_twice_mid_batch_loses_and_duplicates_nothing(tmp_path, schema):
    concurrency = 3
    # Calls take 300 ms, so a batch of 200 outlasts a worker's restart and the second kill lands mid-batch too.
    with private_redis(tmp_path / "redis") as redis_server, running_stub(latency_ms=300) as stub:
        # Beat runs the reaper, as in production. kombu's Redis transport loses a message it has popped but
        # not yet recorded as unacked when the worker dies in between (BRPOP, kombu #305): the reaper sends
        # such a never-claimed slot again. A slot the dead worker had claimed is brought back by its message
        # (Redis restores it after the visibility timeout), or, when that message is gone too, by the reaper
        # once the slot's lease has been over for CHORUS_REAP_GRACE_S.
        env = cluster_env(broker_url=redis_server.url, database_url=schema, data_dir=tmp_path, stub_url=stub.base_url,
                         CHORUS_VISIBILITY_TIMEOUT_S="5", CHORUS_RETRY_BACKOFF_S="0.1", CHORUS_REAP_INTERVAL_S="2",
                         CHORUS_REAP_GRACE_S="3", CHORUS_REAP_RESEND_AFTER_S="10", CHORUS_REAP_AFTER_S="90")
        with fleet(tmp_path, env) as workers:
            workers.start("llm-a", pool="prefork", concurrency=concurrency)
            workers.start("llm-b", pool="prefork", concurrency=concurrency)
            workers.start("callbacks", "callbacks", pool="solo", concurrency=1,
                          extra_args=("--beat", "--schedule", str(tmp_path / "beat-schedule")))
            workers.ready()
            run_ids = submit_votes(env, documents(40), LABELS, voters=5)
            kills: list[tuple[float, set[tuple[str, int]]]] = []  # (when, the slots the dead worker held)
            lost_messages: dict[tuple[str, int], str | None] = {}  # slot -> the dead holder's task id
            for round_ in range(2):
                # Killed when every claim it holds has its request at the provider (in flight or answered):
                # these claims can no longer be finished by their holder.
                killed_at, held = kill_with_every_claim_called(workers, "llm-a", stub, schema, concurrency)
                kills.append((killed_at, held))
                if round_ == 0:
                    # The first kill also loses the messages of the slots it interrupted (the defect of
                    # issue 22: such a slot stayed `running` until CHORUS_REAP_AFTER_S, then failed).
                    tasks = held_tasks(held, schema)
                    lost_messages = {key: tasks[key] for key in lose_messages_of(redis_server.url, held)}
                workers.start("llm-a", pool="prefork", concurrency=concurrency).wait_ready()
            statuses = wait_terminal(run_ids, timeout=120, database_url=schema)
        log = stub.requests(bodies=False)

    assert len(statuses) == 40 and set(statuses.values()) == {"succeeded"}, Counter(statuses.values())
    rows = outcome_rows(run_ids, schema)
    assert_one_row_per_slot_and_all_terminal(run_ids, rows, voters=5)
    # No slot is lost to a kill: every one ended succeeded, none failed at the reaper's deadline.
    assert [r for r in rows if r["status"] != "succeeded"] == []
    assert assert_every_run_agrees_with_its_slots(run_ids, schema) == {"succeeded": 40}
    calls = requests_by_slot(log)
    assert set(calls) == {(r["run"], r["slot"]) for r in rows}  # every slot was called
    attempts = {(r["run"], r["slot"]): r["attempts"] for r in rows}
    stranded = {key: at for at, held in kills for key in held}
    assert len(stranded) == sum(len(held) for _, held in kills)  # no slot was held by both dead workers
    # The accounting, per slot, exact: `attempts` counts claims, the stub's log counts calls, and every
    # claim made a call. A slot no dead worker held was claimed once and called once. A slot a dead worker
    # held had its request out when the worker died (the kill waited for that instant), and was claimed
    # and called once more by whichever took it over (its restored message or the reaper's re-send; the
    # lease lets only one of them in, and its answer ends the slot): 2 claims, 2 calls.
    for key, entries in calls.items():
        # Never two calls of one slot at once: each call began after the previous one had ended.
        assert all(later["time"] >= earlier["time"] + earlier["latency_ms"] / 1000
                   for earlier, later in itertools.pairwise(entries)), (key, entries)
        assert len(entries) == attempts[key], (key, attempts[key], entries)
        if key not in stranded:
            assert len(entries) == 1, (key, entries)  # nobody else was called twice
            continue
        killed_at = stranded[key]
        assert len(entries) == 2, (key, entries)
        assert entries[0]["time"] < killed_at < entries[1]["time"], (key, killed_at, entries)
        assert entries[1]["status"] == 200, (key, entries)
    # The only duplicate calls are the interrupted ones: one per slot a dead worker held, at most one per
    # pool process, so at most 2 kills x 3.
    assert sum(len(entries) - 1 for entries in calls.values()) == len(stranded) <= 2 * concurrency
    # The slots whose messages the first kill lost were finished by the reaper's re-send (a new task id;
    # a restored message or a retry of it keeps the killed task's id).
    assert lost_messages, "the first kill found no message of the slots it interrupted"
    finishers = held_tasks(set(lost_messages), schema)
    assert all(finishers[key] != killed for key, killed in lost_messages.items()), (finishers, lost_messages)


# Beat runs the reaper every 2 s: a chord whose callback was lost with the connection is finished from
# what was stored, and a slot whose message was lost is sent again (CHORUS_REAP_RESEND_AFTER_S), never
# failed: the deadline (CHORUS_REAP_AFTER_S) is far beyond the test.
@pytest.mark.cluster(stub_latency_ms=60, env={
    "CHORUS_VISIBILITY_TIMEOUT_S": "6", "CHORUS_RETRY_BACKOFF_S": "0.1", "CHORUS_REAP_INTERVAL_S": "2",
    "CHORUS_REAP_GRACE_S": "3", "CHORUS_REAP_RESEND_AFTER_S": "10", "CHORUS_REAP_AFTER_S": "600"})
def test_a_redis_outage_mid_batch_is_survived(cluster, schema):
    # celery 5.7's consumer sometimes dies on the lost connection, on either pool ("'NoneType' object has
    # no attribute 'hostname'", see docs/decisions.md): the workers are supervised.
    cluster.start_llm(pool="prefork", concurrency=4, restarts=3)
    cluster.start_callbacks(beat=True, restarts=3)
    cluster.ready()
    run_ids = cluster.submit_votes(documents(40), voters=5)
    wait_for(lambda: sum(r["status"] == "succeeded" for r in cluster.outcome_rows(run_ids)) >= 10,
             timeout=30, what="the batch to get going (10 slots answered)")
    before = cluster.wait_terminal(run_ids, timeout=0)
    cluster.redis.stop()
    time.sleep(2.0)
    cluster.redis.start()
    statuses = cluster.wait_terminal(run_ids, timeout=120)
    restarts = {name: [(r.returncode, r.reason) for r in proc.restarts] for name, proc in cluster.workers.procs.items()}
    cluster.workers.stop_all()
    rows = cluster.outcome_rows(run_ids)
    attempts = sum(r["attempts"] for r in rows)
    log = wait_for(lambda: logged_at_least(cluster.stub, attempts), timeout=10,
                   what=f"the stub to log the {attempts} attempts the slots counted")

    done_before = sum(s in TERMINAL for s in before.values())
    assert done_before < 40  # the outage really hit the batch in the middle
    open_runs = {r for r, s in statuses.items() if s not in TERMINAL}
    assert not open_runs, (Counter(statuses.values()), Counter(r["status"] for r in rows if r["run"] in open_runs))
    assert_one_row_per_slot_and_all_terminal(run_ids, rows, voters=5)
    # Survived: the outage cost no answer. Every slot succeeded (a slot whose message was lost was sent
    # again), so every run did, each by the vote rules applied to its own slots.
    assert [(r["run"], r["slot"], r["error"]) for r in rows if r["status"] != "succeeded"] == [], restarts
    assert assert_every_run_agrees_with_its_slots(run_ids, schema) == {"succeeded": 40}
    # And every provider call is one stored attempt of its slot, and the other way round: nothing was
    # called behind chorus's back, no attempt is counted that did not reach the provider.
    calls = requests_by_slot(log)
    per_slot = {(r["run"], r["slot"]): r["attempts"] for r in rows}
    assert {key: len(entries) for key, entries in calls.items()} == per_slot, restarts
    assert len(log) == attempts


RPM = 120


@pytest.mark.cluster(stub_latency_ms=20, stub_args=("--rpm", str(RPM)),
                     env={"CHORUS_RATE_LIMITS": f"claude-haiku-4-5:rpm={RPM}", "CHORUS_RETRY_BACKOFF_S": "0.1"})
def test_four_workers_share_one_rate_limit_and_the_stub_never_answers_429(cluster, schema):
    rpm = RPM
    # Queued before any worker runs, so demand exceeds the bucket from the first second.
    run_ids = cluster.submit_votes(documents(28), voters=5)  # 140 calls: a full bucket + 30
    for i in range(4):
        cluster.start_llm(f"llm-{i}", concurrency=4)
    cluster.start_callbacks()
    cluster.ready()
    statuses = cluster.wait_terminal(run_ids, timeout=90)
    cluster.workers.stop_all()
    log = cluster.stub.requests()

    assert set(statuses.values()) == {"succeeded"} and len(statuses) == 28
    assert [e for e in log if e["status"] == 429] == []
    assert len(log) == 140
    rows = cluster.outcome_rows(run_ids)
    assert all(r["attempts"] == 1 for r in rows)  # a wait for a token is not an attempt
    # After the first full bucket, calls go out at the refill rate of 2 per second: not faster
    # (no 429 above) and not much slower either.
    tail = sorted(e["time"] for e in log)[-10:]
    assert 9 / (rpm / 60) * 0.8 <= tail[-1] - tail[0] <= 9 / (rpm / 60) + 2.0
