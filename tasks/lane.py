"""The batch lane: voter and section calls go through Anthropic's Message Batches API (half price).

Two beat tasks on the `callbacks` queue, both safe to run twice, at once, or after a kill -9:

- `chorus.lane.collect` claims the waiting slots of running lane runs (pending, released, in no
  provider batch) in one UPDATE … RETURNING per chunk, builds each slot's request exactly as a
  synchronous call would (with the 1-hour cache TTL), splits them per model within the API's request
  and byte limits, creates one provider batch per part and records it on the slots (running). A
  follower of cache-aware dispatch waits until its run's leaders are done, so it reads the cache they
  wrote. A create that fails gives its claims back at once; a collector that dies between creating a
  batch and recording it leaves claims that the next collect releases after CLAIM_HOLD_S (the slot
  is then sent again: a rare duplicate request, see docs/decisions.md); that collect also lists the
  key's provider batches created while those claims were held and adopts the ones nobody recorded,
  so a duplicate's answer is paid and recorded, never paid alone.
- `chorus.lane.poll` retrieves every provider batch not yet collected; once one has ended it writes
  each result into its slot (only while the slot is open and still names that batch), sends back to
  `pending` what may be tried again (errored with a retryable error, expired, canceled while its run
  is open) within CHORUS_MAX_ATTEMPTS, and then runs each finished run's callback, its pattern's
  `lane_callback` (`tasks.patterns`: a vote's tally, a section run's reduce), as the chord would
  have. A succeeded line for a slot this batch does not carry (a duplicate request: a collector that
  recorded its batch only after its claims had been released and sent again) was paid for: its usage
  is added to the slot.

With no beat (embedded mode) the process waiting on lane runs sends both ticks itself (`LaneClock`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

from celery import Celery, Task, shared_task

import tasks.all_patterns  # noqa: F401 - every pattern's entry, for `run_callback` and the requests
from models import OutcomeStatus, Pattern, in_session, repo
from models.tables import utcnow
from providers import get_provider
from settings import Settings, get_settings
from tasks import db, dispatch, patterns
from tasks.calls import describe_failure, usage_fields
from tasks.requests import build_request, interpret
from workflows.calls import CallRequest
from workflows.errors import ChorusError, PermanentError, ProviderError, RetryableError
from workflows.queues import CALLBACK_QUEUE

log = logging.getLogger("chorus.lane")
LANE_COLLECT = "chorus.lane.collect"
LANE_POLL = "chorus.lane.poll"
# A claim not recorded within this long is given back by the next collect (its collector died).
CLAIM_HOLD_S = 300.0
# How far around a stale claim's holding time a provider batch's creation time is looked for (clock skew).
ADOPT_SLACK_S = 120.0
CLAIM_CHUNK = 500  # slots per claiming UPDATE
SCAN_LIMIT = 20_000  # slots one collect looks at; the next one takes the rest
WRITE_CHUNK = 200  # results written per transaction
# The create body's own bytes around its requests (`{"requests":[…]}`), with room to spare.
BODY_OVERHEAD = 1024
T = TypeVar("T")


class BatchProvider(Protocol):
    """A provider with the Message Batches API (capabilities.batches_api; the others refuse)."""

    def entry_size(self, custom_id: str, request: CallRequest) -> int: ...
    def create_batch(self, items: Sequence[tuple[str, CallRequest]]) -> Any: ...
    def retrieve_batch(self, batch_id: str) -> Any: ...
    def cancel_batch(self, batch_id: str) -> Any: ...
    def batch_results(self, batch_id: str) -> Iterable[Any]: ...
    def list_batches(self, created_after: dt.datetime) -> Sequence[Any]: ...


def batch_provider(settings: Settings) -> BatchProvider:
    return cast(BatchProvider, get_provider(settings))


def custom_id(run_id: str, slot: int) -> str:
    """The request's id in its provider batch: the run and the slot (`^[a-zA-Z0-9_-]{1,64}$`)."""
    return f"{run_id}-{slot}"


def parse_custom_id(value: str) -> tuple[str, int] | None:
    run_id, _, slot = value.rpartition("-")
    if not run_id or not slot.isdigit():
        return None
    return run_id, int(slot)


def split_batches(items: Sequence[tuple[T, int]], *, max_requests: int, max_bytes: int) -> list[list[T]]:
    """Consecutive parts of `(item, bytes)` with at most `max_requests` items and `max_bytes` bytes each
    (items kept in order). An item larger than `max_bytes` on its own is the caller's to refuse."""
    parts: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item, item_bytes in items:
        if current and (len(current) >= max_requests or size + item_bytes > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append(item)
        size += item_bytes
    if current:
        parts.append(current)
    return parts


def ready_slots(candidates: Sequence[tuple[str, int, dict[str, Any]]],
                statuses: dict[str, dict[int, OutcomeStatus]]) -> list[tuple[str, int]]:
    """The candidates that may go now: a leader of cache-aware dispatch, or a slot whose run's leaders
    are all terminal (it then reads the cache they wrote: the lane's 1-hour entries outlive the wait)."""
    ready = []
    for run_id, slot, config in candidates:
        leaders = [int(x) for x in ((config or {}).get("dispatch") or {}).get("leaders") or ()]
        if slot not in leaders:
            run = statuses.get(run_id, {})
            if any(not run.get(leader, OutcomeStatus.SUCCEEDED).terminal for leader in leaders):
                continue
        ready.append((run_id, slot))
    return ready


@functools.lru_cache(maxsize=1024)
def _inputs(run_id: str) -> tuple[dict[str, Any], str]:
    return in_session(lambda s: repo.run_inputs(s, run_id), write=False)


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


# ----- collect --------------------------------------------------------------------------------------
def collect(settings: Settings | None = None) -> dict[str, Any]:
    """Gather the waiting lane slots into provider batches; what it did."""
    settings = settings or get_settings()
    db.bind()
    now = utcnow()
    deadlines = in_session(lambda s: repo.release_stale_lane_claims(s, now=now))
    released = len(deadlines)
    if released:
        log.warning("released %d lane claim(s) whose collector stopped before recording a provider batch", released)
        held = dt.timedelta(seconds=CLAIM_HOLD_S + ADOPT_SLACK_S)
        adopt_unrecorded(batch_provider(settings), since=min(deadlines) - held,
                         until=max(deadlines) + dt.timedelta(seconds=ADOPT_SLACK_S))
    candidates = in_session(lambda s: repo.lane_candidates(s, limit=SCAN_LIMIT), write=False)
    if not candidates:
        return {"released": released, "claimed": 0, "batches": []}
    run_ids = sorted({run_id for run_id, _, _ in candidates})
    statuses = in_session(lambda s: repo.slot_statuses(s, run_ids), write=False)
    ready = ready_slots(candidates, statuses)
    marker = f"{repo.LANE_MARK}{uuid.uuid4().hex[:24]}"
    claims: list[repo.Claim] = []
    for chunk in _chunks(ready, CLAIM_CHUNK):
        claims += in_session(functools.partial(_claim, slots=chunk, marker=marker, now=now))
    by_model: dict[str, list[tuple[tuple[str, CallRequest], int]]] = defaultdict(list)
    limit = settings.lane_max_bytes - BODY_OVERHEAD
    provider = batch_provider(settings)
    for claim in claims:
        try:
            config, text = _inputs(claim.run_id)
            request = dataclasses.replace(build_request(claim, config, text), cache_ttl="1h")
            cid = custom_id(claim.run_id, claim.slot)
            size = provider.entry_size(cid, request)  # bytes it adds to a create body
        except Exception as exc:  # noqa: BLE001 - one slot's bad request fails that slot, not the collect
            log.exception("could not build the request of %s/%s", claim.run_id, claim.slot)
            _fail_claim(claim, marker, f"internal error while building the request: {type(exc).__name__}: {exc}")
            continue
        if size > limit:
            _fail_claim(claim, marker, f"the request is {size:,} bytes, above a provider batch's limit of "
                                       f"{limit:,} (CHORUS_LANE_MAX_BYTES); split the document (`chorus section`)")
            continue
        by_model[claim.model].append(((cid, request), size))
    created: list[str] = []
    for model, items in by_model.items():
        for part in split_batches(items, max_requests=settings.lane_max_requests, max_bytes=limit):
            batch_id = _create(provider, model, part, marker)
            if batch_id is not None:
                created.append(batch_id)
    return {"released": released, "claimed": len(claims), "batches": created}


def adopt_unrecorded(provider: BatchProvider, *, since: dt.datetime, until: dt.datetime) -> list[str]:
    """A collector that stopped between creating a provider batch and recording it left claims that were
    just released; the batch it may have created is paid for when answered. Store every provider batch of
    the key created while those claims were held and not stored yet, with no slot: the poller collects
    it and adds a paid answer's usage to its slot as a duplicate (`record_duplicates`), so what was paid
    is recorded. A batch of another program on the same key carries no slot of chorus's: nothing is
    written from it. The ids adopted."""
    try:
        listed = [b for b in provider.list_batches(since) if b.created_at is None or b.created_at <= until]
    except ChorusError as exc:
        log.error("lane: could not list provider batches to find one a stopped collector created (%s)", exc)
        return []
    known = in_session(lambda s: repo.known_provider_batches(s, [b.id for b in listed]), write=False)
    adopted: list[str] = []
    for info in listed:
        if info.id in known:
            continue
        note = "created by a collector that stopped before recording it; adopted to record what it paid"
        try:
            if in_session(functools.partial(repo.adopt_provider_batch, batch_id=info.id, status=info.status,
                                            created_at=info.created_at or utcnow(), note=note)):
                adopted.append(info.id)
        except Exception:  # noqa: BLE001 - another collector adopted it at the same moment
            log.info("lane: provider batch %s was adopted by another collector", info.id)
    if adopted:
        log.warning("lane: adopted %d provider batch(es) no collector recorded: %s", len(adopted), ", ".join(adopted))
    return adopted


def _claim(s: Any, *, slots: Sequence[tuple[str, int]], marker: str, now: Any) -> list[repo.Claim]:
    return repo.claim_lane_slots(s, slots, marker=marker, now=now, hold_s=CLAIM_HOLD_S)


def _slot_of(cid: str) -> tuple[str, int]:
    parsed = parse_custom_id(cid)
    assert parsed is not None
    return parsed


def _create(provider: BatchProvider, model: str, part: list[tuple[str, CallRequest]], marker: str) -> str | None:
    slots = [_slot_of(cid) for cid, _ in part]
    try:
        info = provider.create_batch(part)
    except ChorusError as exc:  # refused or unreachable: the slots wait for the next collect
        note = f"could not create a provider batch: {exc}; collected again"
        log.error("lane: %s (%d request(s) of %s)", note, len(part), model)
        in_session(lambda s: repo.release_lane_claims(s, slots, marker=marker, note=note))
        return None
    # If this process dies here, the claims are released after CLAIM_HOLD_S and sent again.
    taken = in_session(lambda s: repo.record_provider_batch(s, batch_id=info.id, model=model, status=info.status,
                                                            slots=slots, marker=marker, now=utcnow()))
    log.info("lane: provider batch %s with %d request(s) of %s (%d slot(s) recorded)", info.id, len(part), model,
             taken)
    return str(info.id)


def _fail_claim(claim: repo.Claim, marker: str, reason: str) -> None:
    def fail(s: Any) -> None:
        repo.update_slot(s, claim.run_id, claim.slot, status=OutcomeStatus.FAILED, error=reason, task_id=None,
                         lease_until=None, finished_at=utcnow())

    in_session(fail)


# ----- poll ---------------------------------------------------------------------------------------
def poll(app: Celery, settings: Settings | None = None) -> dict[str, Any]:
    """Look at every provider batch not yet collected; collect the ones that ended."""
    settings = settings or get_settings()
    db.bind()
    cancelled = cancel_provider_batches(settings)
    provider = batch_provider(settings)
    collected: list[str] = []
    for pb in in_session(repo.open_provider_batches, write=False):
        try:
            info = provider.retrieve_batch(pb.id)
        except PermanentError as exc:  # the provider does not know it (any more): its calls are sent again
            log.error("lane: provider batch %s cannot be read (%s); its slots are sent again", pb.id, exc)
            write_results(app, settings, pb.id, [], missing_as="expired", note=str(exc))
            collected.append(pb.id)
            continue
        except ChorusError as exc:
            log.warning("lane: could not poll provider batch %s (%s); next time", pb.id, exc)
            in_session(functools.partial(repo.note_provider_batch, batch_id=pb.id, polled_at=utcnow(), error=str(exc)))
            continue
        in_session(functools.partial(repo.note_provider_batch, batch_id=pb.id, status=info.status,
                                     polled_at=utcnow(), ended_at=info.ended_at))
        if info.status != "ended":
            continue
        write_results(app, settings, pb.id, provider.batch_results(pb.id))
        collected.append(pb.id)
    return {"collected": collected, "cancelled": cancelled}


def write_results(app: Celery, settings: Settings, batch_id: str, lines: Iterable[Any], *,
                  missing_as: str = "expired", note: str | None = None) -> None:
    """Write an ended batch's result lines into their slots, then run the callbacks of the runs that
    are done, then mark the batch collected. Every step may be repeated: a slot already terminal, or
    now in another batch, is not written again, and the callbacks are idempotent."""
    slots = in_session(lambda s: repo.lane_slots_of(s, batch_id), write=False)
    seen: set[tuple[str, int]] = set()
    pending: list[tuple[str, int, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        todo = list(pending)
        pending.clear()

        def write(s: Any) -> None:
            for run_id, slot, fields in todo:
                repo.write_lane_result(s, run_id, slot, batch_id, **fields)

        in_session(write)

    duplicates: list[tuple[str, int, dict[str, Any]]] = []
    for line in lines:
        key = parse_custom_id(line.custom_id)
        if key is None or key in seen:
            continue
        seen.add(key)
        lane_slot = slots.get(key)
        if lane_slot is None and line.kind == "succeeded":  # paid, though another batch carries the slot
            duplicates.append((*key, usage_fields(line.result)))
        if lane_slot is None or lane_slot.status.terminal:
            continue
        pending.append((*key, result_fields(lane_slot, line, settings)))
        if len(pending) >= WRITE_CHUNK:
            flush()
    for key, lane_slot in slots.items():  # a request the results left out: as if it had expired
        if key not in seen and not lane_slot.status.terminal:
            pending.append((*key, result_fields(lane_slot, _Missing(missing_as, note), settings)))
    flush()
    for run_id, pattern, status in in_session(lambda s: repo.runs_of_provider_batch(s, batch_id), write=False):
        if not status.terminal and not in_session(functools.partial(repo.count_open_slots, run_id=run_id,
                                                                    sent_only=True), write=False):
            run_callback(app, run_id, pattern)
    if duplicates and record_duplicates(batch_id, duplicates):
        return  # a duplicate's slot is still open elsewhere: its usage is added at a later poll
    in_session(lambda s: repo.note_provider_batch(s, batch_id, collected_at=utcnow()))


def duplicate_note(batch_id: str) -> str:
    return f"a duplicate request in provider batch {batch_id} was answered and paid: its usage is added here"


def record_duplicates(batch_id: str, duplicates: Sequence[tuple[str, int, dict[str, Any]]]) -> int:
    """Add the usage of paid duplicate answers to their slots, as one more attempt, once per provider
    batch (the note on the slot says so, under the run's row lock). A slot still open is left for a later
    poll, since its own result overwrites its usage; how many were left."""
    left = 0
    for run_id, slot, usage in duplicates:
        def add(s: Any, run_id: str = run_id, slot: int = slot, usage: dict[str, Any] = usage) -> bool:
            run = repo.load_run_locked(s, run_id)
            outcome = next((o for o in run.outcomes if o.slot == slot), None) if run is not None else None
            if outcome is None:
                return False
            if not outcome.status.terminal:
                return True
            note = duplicate_note(batch_id)
            if note in (outcome.error or ""):
                return False
            repo.update_slot(s, run_id, slot, attempts=outcome.attempts + 1,
                             error="; ".join(filter(None, [outcome.error, note])),
                             **{k: getattr(outcome, k) + int(usage.get(k) or 0) for k in
                                ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")})
            log.warning("lane: %s/%s was answered twice (provider batch %s); the duplicate's usage is recorded",
                        run_id, slot, batch_id)
            return False

        left += bool(in_session(add))
    return left


@dataclasses.dataclass(frozen=True)
class _Missing:
    kind: str
    note: str | None
    custom_id: str = ""
    result: Any = None
    error: Any = None


def result_fields(lane_slot: repo.LaneSlot, line: Any, settings: Settings) -> dict[str, Any]:
    """The outcome fields one result line means for its slot."""
    claim = lane_slot.claim
    now = utcnow()
    run_closed = lane_slot.run_status.terminal
    closed_reason = lane_slot.run_error or "its run ended"
    if line.kind == "succeeded":  # paid for: recorded even when the run was cancelled meanwhile
        config, _ = _inputs(claim.run_id)
        fields = interpret(claim, config, line.result) | usage_fields(line.result)
        fields.setdefault("status", OutcomeStatus.SUCCEEDED)
        return fields | {"finished_at": now}
    if line.kind == "errored":
        error = line.error if isinstance(line.error, ProviderError) else ProviderError(str(line.error))
        why = str(error)
        retryable = isinstance(error, RetryableError)
    elif line.kind == "canceled":
        if run_closed:
            return {"status": OutcomeStatus.CANCELLED, "error": closed_reason, "finished_at": now}
        why, retryable, error = "the provider batch was canceled", True, None
    else:  # expired, or left out of the results
        why = getattr(line, "note", None) or "the request expired in its provider batch (not processed within 24 h)"
        retryable, error = True, None
    if not retryable:
        return {"status": OutcomeStatus.FAILED, "finished_at": now,
                "error": describe_failure(error or PermanentError(why), claim.attempts, 0.0),
                "request_id": getattr(error, "request_id", None)}
    if run_closed:
        return {"status": OutcomeStatus.FAILED, "error": f"{why}; not retried: {closed_reason}", "finished_at": now}
    if claim.attempts < settings.max_attempts:
        return {"status": OutcomeStatus.PENDING, "provider_batch": None, "task_id": None,
                "error": f"{why}; attempt {claim.attempts} of {settings.max_attempts}, sent again in the next "
                         f"provider batch"}
    return {"status": OutcomeStatus.FAILED, "finished_at": now,
            "error": f"{why}; gave up after {claim.attempts} attempt(s)"}


def run_callback(app: Celery, run_id: str, pattern: Pattern) -> dict[str, Any]:
    """The callback a chord would have run for a lane run whose slots are all done (its pattern's
    `lane_callback`); one that released more slots (an adaptive vote's next wave) gets a collect now."""
    result = patterns.entry(pattern).lane_callback(app, run_id)
    if result.get("released"):
        send_collect(app)
    return result


# ----- cancel -----------------------------------------------------------------------------------
def cancel_provider_batches(settings: Settings | None = None) -> list[str]:
    """Cancel at the provider every batch still processing whose calls all belong to cancelled runs,
    and record it on the batch (its status then follows the provider's: canceling, then ended). The
    poller collects them as usual: canceled requests of cancelled runs end `cancelled`."""
    settings = settings or get_settings()
    db.bind()
    ids = in_session(repo.cancellable_provider_batches, write=False)
    if not ids:
        return []
    provider = batch_provider(settings)
    done = []
    for batch_id in ids:
        try:
            info = provider.cancel_batch(batch_id)
        except ChorusError as exc:
            log.warning("lane: could not cancel provider batch %s (%s); the next poll tries again", batch_id, exc)
            continue
        in_session(functools.partial(repo.note_provider_batch, batch_id=batch_id, status=info.status,
                                     error="cancelled: every run it carries was cancelled"))
        done.append(batch_id)
    return done


def start_runs(app: Celery, run_ids: list[str]) -> int:
    """Mark stored lane runs running (their slots then wait for the collector) and ask for a collect now
    rather than at the next beat. How many it started."""
    started = in_session(lambda s: repo.start_pending_runs(s, run_ids))
    if started:
        send_collect(app)
    return len(started)


def send_collect(app: Celery) -> None:
    # Fire and forget: nobody reads a collect's result, so the sender subscribes to no result backend (a
    # client whose backend connection broke would otherwise fail the submit for a message it never reads).
    signature = app.signature(LANE_COLLECT, queue=CALLBACK_QUEUE)
    dispatch.publishing(functools.partial(signature.apply_async, ignore_result=True))


class LaneClock:
    """Beat's two lane entries for a process that waits on lane runs where no beat runs (embedded mode):
    each call sends `chorus.lane.collect` once CHORUS_LANE_COLLECT_S has passed since the last one and
    `chorus.lane.poll` once CHORUS_LANE_POLL_S has (the first of each at once, so a resumed batch's open
    provider batches are looked at right away), with beat's `expires`, to the worker on the callbacks
    queue. Unlike beat it sends no tick while its previous one of the same task is unfinished (for at
    most STUCK_S): a slow poll would otherwise have copies of itself download the same results. Both
    tasks are safe to run twice or at once, so a clock per waiting process is harmless."""

    STUCK_S = 60.0

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.every = {LANE_COLLECT: settings.lane_collect_s, LANE_POLL: settings.lane_poll_s}
        self.last = dict.fromkeys(self.every, -math.inf)
        self.sent: dict[str, Any] = {}

    def __call__(self) -> None:
        now = time.monotonic()
        for name, every in self.every.items():
            if now - self.last[name] < every or (now - self.last[name] < self.STUCK_S and self._running(name)):
                continue
            self.last[name] = now
            signature = self.app.signature(name, queue=CALLBACK_QUEUE)
            try:
                self.sent[name] = signature.apply_async(expires=max(1.0, every))
            except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; the next tick sends again
                log.warning("lane: could not send %s (%s); trying again at the next tick", name, exc)

    def _running(self, name: str) -> bool:
        result = self.sent.get(name)
        try:
            return result is not None and not result.ready()
        except Exception:  # noqa: BLE001 - a result backend that cannot be read: send as beat would
            return False


@shared_task(name=LANE_COLLECT, bind=True)
def collect_task(self: Task) -> dict[str, Any]:
    return collect()


@shared_task(name=LANE_POLL, bind=True)
def poll_task(self: Task) -> dict[str, Any]:
    return poll(self.app)
