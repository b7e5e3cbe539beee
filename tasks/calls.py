"""One slot, one provider call: the body shared by every chord header task.

A slot's attempts are chorus's, not Celery's: each real call is counted on the outcome row and
limited by CHORUS_MAX_ATTEMPTS, while a wait for a rate-limit token is not an attempt at all. So the
call tasks have no Celery retry limit (`max_retries=None`): Celery's default of 3 counted every
limiter wait, and a batch under a tight limit lost most of its slots to MaxRetriesExceededError.

A provider failure that survives its retries is recorded on the outcome and *returned*, never
raised: in a Celery chord a raising header task turns into a ChordError and the callback never
runs, so one bad voter would sink the whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeStatus, in_session, repo
from models.tables import utcnow
from providers import get_provider
from settings import get_settings
from tasks import db, dispatch
from tasks.limiter import note_rate_limited, settle_call, take_token
from tasks.requests import build_request, interpret, retry_request
from workflows.calls import CallRequest, CallResult, Usage
from workflows.errors import PermanentError, ProviderError, RetryableError
from workflows.retry import cap_countdown, compute_backoff

log = logging.getLogger("chorus.tasks")
LEASE_S = 15.0


@functools.lru_cache(maxsize=512)
def _inputs(run_id: str) -> tuple[dict[str, Any], str]:
    # Config and text never change after submit; voters of one run on one process share the read.
    return in_session(lambda s: repo.run_inputs(s, run_id), write=False)


def describe_failure(exc: Exception, attempts: int, elapsed_s: float) -> str:
    if isinstance(exc, RetryableError):
        return f"{exc}; gave up after {attempts} attempt(s) in {elapsed_s:.1f} s"
    if isinstance(exc, PermanentError):
        return f"{exc}; not retried (permanent error)"
    if isinstance(exc, ProviderError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def lease_seconds(settings: Any) -> float:
    """How long a claim holds its slot before a copy of the task may take it over. It is renewed every
    third of that while the call runs (`holding`), so it need not cover a whole call: short, so that a
    holder that died (kill -9) frees its slot within seconds rather than after a call's timeout."""
    return LEASE_S


@contextlib.contextmanager
def holding(run_id: str, slot: int, task_id: str | None, lease_s: float) -> Iterator[None]:
    """Renew the slot's lease every third of its length while the body (the provider call) runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                in_session(lambda s: repo.renew_lease(s, run_id, slot, task_id=task_id, lease_s=lease_s), attempts=2)
            except Exception as exc:  # noqa: BLE001 - a missed renewal only shortens the lease
                log.warning("could not renew the lease of %s/%s: %s", run_id, slot, exc)

    keeper = threading.Thread(target=renew, name=f"lease-{run_id}-{slot}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()


def retry_later(task: Task, countdown: float) -> BaseException:
    """Re-send the task with a countdown (Celery's `retry`, whose Retry is returned for the caller to
    raise). When the broker refuses the re-send, Celery would drop the message (Reject, no requeue) and
    leave the slot waiting with no task behind it; instead the re-send is tried again while the broker
    is briefly away, and then the message is handed back to the broker (requeued, or restored after the
    visibility timeout), never lost."""
    def resend() -> BaseException:
        try:
            return task.retry(countdown=countdown)
        except Retry as sent:
            return sent

    try:
        return dispatch.publishing(resend, refused=(Reject,))  # Celery's Reject wraps the failed publish
    except Reject as refused:
        log.warning("could not re-send %s (%s); handing its message back to the broker",
                    task.request.id, refused.reason)
        return Reject(refused.reason, requeue=True)


def run_slot(task: Task, run_id: str, slot: int) -> dict[str, Any]:
    settings = get_settings()
    db.bind()
    lease_s = lease_seconds(settings)
    claim = in_session(lambda s: repo.claim_slot(s, run_id, slot, task_id=task.request.id,
                                                 hostname=task.request.hostname, lease_s=lease_s))
    if claim is None:
        held_until = in_session(lambda s: repo.lease_holder(s, run_id, slot), write=False)
        if held_until is not None:
            # A copy of this task (Redis redelivered it: the call outlived the visibility timeout)
            # while the first holder is still calling. Never call twice: look again when the lease ends.
            wait = max(1.0, (held_until - utcnow()).total_seconds() + 1.0)
            raise retry_later(task, cap_countdown(wait, settings.visibility_timeout_s))
        return _stored_summary(run_id, slot)

    failure: Exception | None = None
    retry_in: float | None = None
    wait_s: float | None = None  # waiting for a rate-limit token: no call, no attempt
    fields: dict[str, Any]
    try:
        config, text = _inputs(run_id)
        request = build_request(claim, config, text)
        wait_s = take_token(settings, claim.model, f"{run_id}:{slot}", request)
        if wait_s is None:
            with holding(run_id, slot, task.request.id, lease_s):
                result = get_provider(settings).call(request)
            settle_call(settings, claim.model, request, result)
            retry = retry_request(claim, config, request, result)  # a paid reply that gets one more try
            retry_note: str | None = None
            if retry is not None:
                result, retry_note = call_again(settings, claim, task.request.id, lease_s, retry, result)
            fields = interpret(claim, config, result) | usage_fields(result)
            if retry is not None:
                fields["attempts"] = claim.attempts + (0 if retry_note else 1)
                if fields.get("error"):
                    fields["error"] += (f" ({retry_note})" if retry_note else f" (the reply when sent again with "
                                        f"max_tokens {retry.max_tokens}; the first was cut at {request.max_tokens})")
    except RetryableError as exc:
        failure = exc
        if exc.status == 429:
            note_rate_limited(settings, claim.model)
        if claim.attempts < settings.max_attempts:
            retry_in = compute_backoff(
                claim.attempts,
                base_s=settings.retry_backoff_s,
                cap_s=settings.retry_backoff_max_s,
                retry_after_s=exc.retry_after,
                jitter=random.random(),
            )
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the slot, never raised
        failure = exc
        if not isinstance(exc, ProviderError):
            log.exception("slot %s/%s failed with an internal error", run_id, slot)

    if (wait_s is not None or retry_in is not None) and _run_closed(run_id):
        # Cancelled while this attempt ran: no further call. A wait made no call at all (cancelled); a
        # failed attempt keeps its failure.
        if wait_s is not None:
            fields = {"status": OutcomeStatus.CANCELLED, "error": _closed_reason(run_id), "started_at": None,
                      "attempts": claim.attempts - 1}
        else:
            fields = {"status": OutcomeStatus.FAILED, "error": f"{failure}; not retried: {_closed_reason(run_id)}"}
        fields["finished_at"] = utcnow()
        in_session(lambda s: repo.update_slot(s, run_id, slot, **fields))
        return {"slot": slot, "status": fields["status"].value, "answer": None, "error": fields["error"]}

    if wait_s is not None:
        note = f"waiting {wait_s:.1f} s for a rate-limit token"
        in_session(lambda s: repo.release_slot(s, run_id, slot, note=note))
        raise retry_later(task, cap_countdown(wait_s, settings.visibility_timeout_s))

    if retry_in is not None:
        note = f"{failure}; attempt {claim.attempts} of {settings.max_attempts}, retrying in {retry_in:.1f} s"
        in_session(lambda s: repo.update_slot(s, run_id, slot, status=OutcomeStatus.RETRYING, error=note))
        raise retry_later(task, cap_countdown(retry_in, settings.visibility_timeout_s))

    if failure is not None:
        elapsed = (utcnow() - claim.started_at).total_seconds()
        fields = {"status": OutcomeStatus.FAILED, "error": describe_failure(failure, claim.attempts, elapsed),
                  "request_id": getattr(failure, "request_id", None)}
    else:
        fields.setdefault("status", OutcomeStatus.SUCCEEDED)  # interpret fails a paid reply that is no result
    fields["finished_at"] = utcnow()
    # A paid answer is never thrown away because one write failed: in_session tries again.
    in_session(lambda s: repo.update_slot(s, run_id, slot, **fields))
    return {"slot": slot, "status": fields["status"].value, "answer": fields.get("answer"),
            "error": fields.get("error")}


def call_again(settings: Any, claim: repo.Claim, task_id: str | None, lease_s: float, request: CallRequest,
               first: CallResult) -> tuple[CallResult, str | None]:
    """Send the retry of a paid reply (`tasks.requests.retry_request`) now, holding the slot: (its result
    with both calls' usage, None), or (the first result, why no retry was sent or it failed). A wait for
    a rate-limit token counts toward CHORUS_RATE_LIMIT_MAX_WAIT_S at most; a cancelled run sends nothing."""
    key = f"{claim.run_id}:{claim.slot}:retry"
    waited = 0.0
    with holding(claim.run_id, claim.slot, task_id, lease_s):
        while (wait := take_token(settings, claim.model, key, request)) is not None:
            if waited + wait > settings.rate_limit_max_wait_s:
                return first, f"not sent again: no rate-limit token within {settings.rate_limit_max_wait_s:g} s"
            time.sleep(wait)
            waited += wait
        if _run_closed(claim.run_id):
            return first, f"not sent again: {_closed_reason(claim.run_id)}"
        try:
            second = get_provider(settings).call(request)
        except ProviderError as exc:
            return first, f"sent again with max_tokens {request.max_tokens}, which failed: {exc}"
    settle_call(settings, claim.model, request, second)
    a, b = first.usage, second.usage
    usage = Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens,
                  a.cache_creation_input_tokens + b.cache_creation_input_tokens,
                  a.cache_read_input_tokens + b.cache_read_input_tokens, a.estimated or b.estimated)
    return dataclasses.replace(second, usage=usage), None


def _run_closed(run_id: str) -> bool:
    status = in_session(lambda s: repo.run_status(s, run_id), write=False)
    return status is not None and status.terminal


def _closed_reason(run_id: str) -> str:
    return in_session(lambda s: repo.run_error(s, run_id), write=False) or "its run ended"


def usage_fields(result: CallResult) -> dict[str, Any]:
    u = result.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_write_tokens": u.cache_creation_input_tokens,
        "cache_read_tokens": u.cache_read_input_tokens,
        "usage_estimated": u.estimated,
        "request_id": result.request_id,
    }


def _stored_summary(run_id: str, slot: int) -> dict[str, Any]:
    def read(s: OrmSession) -> dict[str, Any]:
        run = repo.load_run(s, run_id)
        outcome = next((o for o in run.outcomes if o.slot == slot), None) if run else None
        if outcome is None:
            return {"slot": slot, "status": "failed", "answer": None, "error": f"no slot {slot} in run {run_id}"}
        return {"slot": slot, "status": outcome.status.value, "answer": outcome.answer, "error": outcome.error}

    return in_session(read, write=False)


