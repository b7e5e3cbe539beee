"""The one place a stored run becomes Celery messages.

Every send goes through an explicit Celery app (the worker's own, or the one the Python API made
for the settings it was given), by task name: a message never lands on a broker the caller did not
name. Task arguments are ids and short labels (run id, slot, model), never document text.

A send the broker refuses marks the run failed with the reason: no run is left half sent.

What a pattern's messages are (a vote's leaders, panel and tally; a section run's sections and reduce)
is its own module's: `send_run` hands a stored run to its pattern's `send` (`tasks.patterns`), which
builds its chord from `call_signature` and sends it with `send_chord`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import kombu.exceptions
import redis.exceptions
from celery import Celery, chain, chord, group
from celery.canvas import Signature
from celery.result import AsyncResult
from sqlalchemy.orm import Session as OrmSession

from models import Pattern, RunStatus, in_session, repo
from models.tables import OutcomeRole
from tasks import broker, patterns
from workflows.errors import ChorusError
from workflows.queues import CALLBACK_QUEUE, queue_for_model

BATCH_DISPATCH = "chorus.batch.dispatch"
# A broker that is down for a moment (a restart, a failover) is waited for this long before a send
# gives up and its runs are failed; Celery's own publish retry gives up after about a second.
BROKER_RETRY_S = 30.0
BROKER_DOWN = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
               ConnectionError, TimeoutError)
T = TypeVar("T")
log = logging.getLogger("chorus.dispatch")


def publishing(send: Callable[[], T], *, budget_s: float = BROKER_RETRY_S,
               refused: tuple[type[BaseException], ...] = BROKER_DOWN) -> T:
    """`send()`, tried again with a growing pause while the broker refuses it (`refused`: it cannot be
    reached), for at most `budget_s` seconds; then the last refusal is raised. Other errors are raised
    at once. A retried send may repeat messages that went out before the connection dropped; the claim
    on each slot makes a repeated call harmless."""
    deadline = time.monotonic() + budget_s
    delay = 0.25
    while True:
        try:
            return send()
        except refused as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("broker unreachable (%s); sending again in %.2f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def call_signature(app: Celery, role: OutcomeRole, run_id: str, slot: int, model: str, task: str = "") -> Signature:
    """One slot's call on its model's queue; the slot row holds everything else. `model` and `task` (the
    task's name) are labels only, so Flower shows whose call this is. The task is the call task of the
    pattern whose slots have this role."""
    return app.signature(patterns.for_role(role).call_task, args=(run_id, slot, model),
                         kwargs={"task": task} if task else {}, queue=queue_for_model(model), immutable=True,
                         ignore_result=joins_without_results(app))


def joins_without_results(app: Celery) -> bool:
    """Whether a call task's own result can go unstored. The Redis result backend joins a chord from a
    list it keeps for the chord (each header task pushes its return value there as it ends), never from
    the header tasks' stored results; and nothing else reads a call task's result: the slot row is the
    record. So on Redis the per-call SET and PUBLISH of the result buy nothing. Other backends (embedded
    mode's key-value store) join by reading the stored results, and keep them."""
    return str(app.conf.result_backend or "").startswith(("redis://", "rediss://"))


def send_chord(app: Celery, run_id: str, header: list[Signature], callback: Signature, *,
               first: Sequence[Signature] = ()) -> AsyncResult:
    """Send a stored run's chord and return the callback's AsyncResult; a refused send marks the run
    failed and raises ChorusError. `first` run before the header is sent; they return failures,
    never raise, so a failed leader still lets the rest of the vote go out."""
    def send() -> AsyncResult:
        if first:
            lead = group(list(first), app=app) if len(first) > 1 else first[0]
            return chain(lead, chord(header, callback, app=app), app=app).apply_async()
        return chord(header, app=app)(callback)

    try:
        return publishing(send)
    except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; none may leave a half run
        reason = f"could not enqueue the run: {exc}. Is the broker at {_broker(app)} up?"
        fail_runs([run_id], reason)
        raise ChorusError(reason) from exc


def send_run(app: Celery, run_id: str, pattern: Pattern, config: dict[str, Any], callback_id: str | None
             ) -> AsyncResult:
    """Send a stored run's messages, as its pattern sends them; the AsyncResult of its callback."""
    return patterns.entry(pattern).send(app, run_id, config, callback_id)


def send_stored(app: Celery, run_ids: list[str]) -> int:
    """Mark stored pending runs running and send each one's chord (the batch dispatch task's body).
    Runs already sent (a redelivered dispatch) are left alone. Returns how many were sent."""
    rows = in_session(lambda s: repo.start_pending_runs(s, run_ids))
    for row in rows:
        try:
            send_run(app, row.id, row.pattern, row.config, row.chord_id)
        except ChorusError:
            continue  # send_chord has marked the run failed with the reason
    return len(rows)


def send_batch_groups(app: Celery, groups: Iterable[list[str]]) -> None:
    """Hand groups of stored runs to `chorus.batch.dispatch` tasks: workers send the per-run chords."""
    for run_ids in groups:
        sig = app.signature(BATCH_DISPATCH, args=(run_ids,), queue=CALLBACK_QUEUE)
        publishing(sig.apply_async)


def resend_call(app: Celery, run_id: str, slot: int, model: str, role: OutcomeRole) -> None:
    """Send one slot's call again, outside any chord (the reaper's re-send of a lost message)."""
    call_signature(app, role, run_id, slot, model).apply_async()


def fail_runs(run_ids: list[str], reason: str) -> None:
    """Fail runs that could not be sent, and their open slots with the same reason: a failed run never
    keeps pending outcomes."""
    def fail(s: OrmSession) -> None:
        for run_id in run_ids:
            run = repo.load_run(s, run_id)
            if run is not None and not run.status.terminal:
                repo.fail_open_slots(s, run_id, reason)
                repo.finish_run(s, run, status=RunStatus.FAILED, result={}, error=reason)

    in_session(fail)


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def message_run_ids(raw: bytes | str) -> set[str]:
    """The run ids a queued kombu message's task arguments name (empty when it cannot be read). A call,
    a tally or a reduce names its one run; a batch dispatch the runs of its group."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
        return set()
    found: set[str] = set()
    stack: list[Any] = [args]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and _RUN_ID.match(item):
            found.add(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def purge_queued(app: Celery, run_ids: Iterable[str]) -> int:
    """Take out of the Redis broker's queues every message that names only runs among `run_ids` (they
    were cancelled): returns how many. Messages already taken by a worker (prefetched, or waiting for a
    countdown) cannot be taken back; they arrive, find their slot cancelled and skip the call. With
    another broker nothing is removed here (the embedded one is purged by `chorus.embedded`)."""
    wanted = set(run_ids)
    if not wanted or not broker.is_redis(app):
        return 0
    client = redis.Redis.from_url(str(app.conf.broker_url), socket_timeout=10, socket_connect_timeout=5)
    removed = 0
    try:
        suffixes = ("", *(f"{broker.PRIORITY_SEP}{p}" for p in broker.PRIORITY_STEPS))
        for key in [q + suffix for q in broker.queue_names(app) for suffix in suffixes]:
            for raw in client.lrange(key, 0, -1):
                named = message_run_ids(raw)
                if named and named <= wanted:
                    removed += int(client.lrem(key, 1, raw) or 0)  # type: ignore[arg-type]  # bytes are accepted
    finally:
        client.close()
    return removed


def _broker(app: Celery) -> str:
    return str(app.conf.broker_url)
