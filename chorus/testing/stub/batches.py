"""The Message Batches API for the stub, written from Anthropic's documentation.

Sources, read 2026-12-03: "Batch processing", https://platform.claude.com/docs/en/build-with-claude/batch-processing
("Batch limitations", "How the Message Batches API works"), the API reference pages "Create a Message
Batch", "Retrieve a Message Batch", "List Message Batches", "Cancel a Message Batch", "Delete a Message
Batch" and "Retrieve Message Batch results" (https://platform.claude.com/docs/en/api/messages/batches/...),
and the types the anthropic SDK 2.16 parses (`anthropic/types/messages/message_batch*.py`). What the
stub follows:

* Create: `{"requests": [{"custom_id", "params"}]}` with 1..100,000 requests (minItems/maxItems), a
  body of at most 256 MB ("limited to either 100,000 Message requests or 256 MB in size, whichever is
  reached first"), each `custom_id` matching `^[a-zA-Z0-9_-]{1,64}$` and unique within the batch;
  anything else is a 400 `invalid_request_error` (a too-large body a 413 `request_too_large`). The
  `params` of each request are *not* validated at creation: they are validated when the request is
  processed, and an invalid one ends `errored` with an `invalid_request_error`. Inside a batch
  `max_tokens` must be at least 1 ("max_tokens: 0 (cache pre-warming) is not supported inside a
  batch") and `params` is the SDK's `MessageCreateParamsNonStreaming` (no `stream: true`).
* The MessageBatch object: `id` (`msgbatch_...`), `type` `message_batch`, `processing_status`
  (`in_progress`, `canceling`, `ended`), `request_counts` {processing, succeeded, errored, canceled,
  expired} whose non-`processing` counts stay zero "until processing of the entire Message Batch has
  ended", `created_at`, `expires_at` (24 hours after creation), `ended_at`, `cancel_initiated_at`,
  `archived_at` (RFC 3339 or null) and `results_url`, set only once processing has ended.
* Results: a `.jsonl` file, one `{"custom_id", "result"}` line per request, `result` one of
  `{"type": "succeeded", "message": Message}`, `{"type": "errored", "error": ErrorResponse}`
  (`{"type": "error", "error": {"type", "message"}}`), `{"type": "canceled"}`, `{"type": "expired"}`.
  Results are not available before the batch has ended (the SDK refuses itself when `results_url` is
  null; the stub answers a direct request with 404 `not_found_error`).
* Cancel: "Batches may be canceled any time before processing ends"; the batch enters `canceling`,
  requests in progress finish (they are non-interruptible), the others end `canceled`, then the batch
  ends. A batch that has already ended cannot be canceled (the stub answers 400; canceling a batch
  that is already canceling returns it unchanged). Delete: only once processing has ended.
* List: newest first, `limit` 1..1000 (default 20), `after_id` / `before_id` cursors, and the page's
  `has_more`, `first_id`, `last_id` (what the SDK's `SyncPage` follows).
* Rate limits: the Message Batches API has limits of its own (HTTP requests and requests waiting to be
  processed), so the Messages API's token buckets do not apply to batch requests; nor do the stub's
  Messages-API fault rules and fault mix. A batch is answered by the same code path as
  `POST /v1/messages` otherwise (validation, prompt cache, tokenizer, offline answer, usage); its
  usage carries `service_tier: "batch"`.

The stub's own processing model (knobs, not Anthropic's): a batch waits `delay_ms` and is then
processed in request order on a daemon thread. A seeded share of requests ends `errored`
(`api_error` or `overloaded_error`, both retryable) and another `expired`; the draw of a request
depends only on the seed, its custom_id and how many times that custom_id has been drawn since the
config was last set, so the same seed and the same submissions give the same outcomes. Rules
(`{"custom_id": ..., "result": "expired", "times": 1}`, or matching `run` / `slot` of a chorus
custom_id `<32 hex run id>-<slot>`) force outcomes ahead of the shares. Every processed request
(succeeded or errored) is logged like a `/v1/messages` request, plus `batch` and `custom_id`;
expired and canceled requests were never processed and are not logged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
EXPIRES_AFTER_S = 24 * 3600.0
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CHORUS_CUSTOM_ID = re.compile(r"^([0-9a-f]{32})-(\d+)$")  # chorus's `<run id>-<slot>`
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 1000
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
# The error types a rule may force, with the HTTP status each stands for (Anthropic's "Errors" page).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
SHARE_ERRORS = ("api_error", "overloaded_error")  # what the seeded `errored` share draws from
JOIN_TIMEOUT_S = 5.0

# (params, api_version, run, slot, forced error status or None) -> (status, payload, log entry)
Call = Callable[[dict[str, Any], str | None, str | None, str | None, int | None],
                tuple[int, dict[str, Any], dict[str, Any]]]


class BatchError(Exception):
    """An HTTP error answer of the Batches API: the handler sends `status` with Anthropic's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def batch_params_problem(params: Mapping[str, Any]) -> str | None:
    """What a batch refuses in an otherwise valid Messages body (checked after the Messages validation)."""
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < 1:
        return ("max_tokens: must be at least 1 in a Message Batch request (max_tokens 0, cache pre-warming, "
                "is not supported inside a batch); send it with POST /v1/messages instead")
    if params.get("stream"):
        return "stream: a Message Batch request cannot stream; remove `stream` from its params"
    return None


def chorus_run_slot(custom_id: str) -> tuple[str | None, str | None]:
    """(run, slot) of a chorus custom_id `<32 hex run id>-<slot>`, else (None, None)."""
    match = CHORUS_CUSTOM_ID.match(custom_id)
    return (match.group(1), match.group(2)) if match else (None, None)


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _draw(seed: int, custom_id: str, attempt: int, salt: str = "") -> float:
    """A uniform number in [0, 1) fixed by its inputs (a hash, so it does not depend on thread order)."""
    digest = hashlib.sha256(f"{seed}|{custom_id}|{attempt}|{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _number(data: Mapping[str, Any], key: str, low: float, high: float | None) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"batch config: {key} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ValueError(f"batch config: {key} must be {span}, got {value:g}")
    return float(value)


@dataclass
class ResultRule:
    """Force the outcome of matching batch requests: `expired`, or `errored` with `error` (an error
    type, default `api_error`). `custom_id`, `run`, `slot` match a request (None matches any; run and
    slot come from a chorus custom_id); `times` limits the rule to its first K matches."""

    result: str
    custom_id: str | None = None
    run: str | None = None
    slot: str | None = None
    times: int | None = None
    error: str = "api_error"
    used: int = 0

    def matches(self, custom_id: str, run: str | None, slot: str | None) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return ((self.custom_id is None or self.custom_id == custom_id) and (self.run is None or self.run == run)
                and (self.slot is None or self.slot == slot))

    @classmethod
    def from_json(cls, data: Any) -> ResultRule:
        if not isinstance(data, dict):
            raise ValueError(f"batch rule {data!r}: expected an object like "
                             '{"custom_id": "doc-1", "result": "expired", "times": 1}')
        unknown = set(data) - {"result", "custom_id", "run", "slot", "times", "error"}
        if unknown:
            raise ValueError(f"batch rule: unknown field(s) {sorted(unknown)}; "
                             "use result, custom_id, run, slot, times, error")
        result = data.get("result")
        if result not in ("errored", "expired"):
            raise ValueError(f"batch rule: result must be 'errored' or 'expired', got {result!r}")
        error = data.get("error", "api_error")
        if error not in ERROR_STATUS:
            raise ValueError(f"batch rule: error must be one of {sorted(ERROR_STATUS)}, got {error!r}")
        if result == "expired" and "error" in data:
            raise ValueError("batch rule: `error` only goes with result 'errored'")
        times = data.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"batch rule: times must be a positive integer, got {times!r}")
        def text(key: str) -> str | None:
            return None if data.get(key) is None else str(data[key])

        return cls(result=result, custom_id=text("custom_id"), run=text("run"), slot=text("slot"), times=times,
                   error=error)

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "custom_id": self.custom_id, "run": self.run, "slot": self.slot,
                "times": self.times, "error": self.error if self.result == "errored" else None, "used": self.used}


@dataclass
class BatchConfig:
    """The stub's batch knobs: the processing delay, the seeded shares and the forcing rules."""

    delay_ms: float = 1000.0
    errored: float = 0.0
    expired: float = 0.0
    seed: int = 0
    rules: list[ResultRule] = field(default_factory=list)

    def updated(self, data: Any) -> BatchConfig:
        """A copy with the keys of `data` changed (ValueError naming a bad key or value)."""
        if not isinstance(data, dict):
            raise ValueError('batch config: expected a JSON object like {"delay_ms": 50, "errored": 0.1, "seed": 3}')
        unknown = set(data) - {"delay_ms", "errored", "expired", "seed", "rules"}
        if unknown:
            raise ValueError(f"batch config: unknown key(s) {sorted(unknown)}; "
                             "use delay_ms, errored, expired, seed, rules")
        new = BatchConfig(self.delay_ms, self.errored, self.expired, self.seed,
                          [dataclasses.replace(r) for r in self.rules])
        if "delay_ms" in data:
            new.delay_ms = _number(data, "delay_ms", 0, None)
        if "errored" in data:
            new.errored = _number(data, "errored", 0, 1)
        if "expired" in data:
            new.expired = _number(data, "expired", 0, 1)
        if "seed" in data:
            seed = data["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"batch config: seed must be an integer, got {seed!r}")
            new.seed = seed
        if "rules" in data:
            if not isinstance(data["rules"], list):
                raise ValueError("batch config: rules must be a list of rule objects")
            new.rules = [ResultRule.from_json(r) for r in data["rules"]]
        if new.errored + new.expired > 1 + 1e-9:
            raise ValueError(f"batch config: errored ({new.errored:g}) + expired ({new.expired:g}) is more than 1")
        return new

    def to_json(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_ms, "errored": self.errored, "expired": self.expired, "seed": self.seed,
                "rules": [r.to_json() for r in self.rules]}


@dataclass
class BatchRequest:
    custom_id: str
    params: dict[str, Any]
    run: str | None
    slot: str | None
    result: dict[str, Any] | None = None  # the `result` of its results line, once it has one


@dataclass
class Batch:
    id: str
    seq: int
    created_at: float
    api_version: str | None
    delay_s: float
    requests: list[BatchRequest]
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    discarded: bool = False  # set by a reset: the processor stops and logs nothing more
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("processing", *RESULT_TYPES), 0)
        if self.ended_at is None:  # "zero until processing of the entire Message Batch has ended"
            counts["processing"] = len(self.requests)
            return counts
        for request in self.requests:
            counts[request.result["type"] if request.result else "processing"] += 1
        return counts

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + EXPIRES_AFTER_S),
            "ended_at": _rfc3339(self.ended_at),
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if self.ended_at is not None else None,
        }


def _error_payload(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message},
            **({"request_id": request_id} if request_id else {})}


class BatchStore:
    """Every batch of the stub, the knobs, and the daemon threads that process them. One lock guards
    all of it; a request is answered outside the lock, and its result is stored (and logged) under it
    only if the batch has not been discarded meanwhile, so cancel and reset never race a result."""

    def __init__(self, call: Call, record: Callable[[dict[str, Any]], None], config: BatchConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._call = call
        self._record = record
        self._clock = clock
        self._startup = config or BatchConfig()
        self._config = self._startup.updated({})
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._seq = 0
        self._draws: Counter[str] = Counter()

    # ----- knobs -------------------------------------------------------------------------------------
    def configure(self, data: Any) -> dict[str, Any]:
        """Change the knobs (the keys given); the seeded draws start over. ValueError on bad input."""
        with self._lock:
            self._config = self._config.updated(data)
            self._draws.clear()
            return self._config.to_json()

    def config(self) -> dict[str, Any]:
        with self._lock:
            return self._config.to_json()

    # ----- the API -----------------------------------------------------------------------------------
    def create(self, body: Any, api_version: str | None, base_url: str) -> dict[str, Any]:
        requests = _parse_create(body)
        with self._lock:
            self._seq += 1
            batch = Batch(id=f"msgbatch_{uuid.uuid4().hex[:24]}", seq=self._seq, created_at=self._clock(),
                          api_version=api_version, delay_s=self._config.delay_ms / 1000, requests=requests)
            self._batches[batch.id] = batch
            batch.thread = threading.Thread(target=self._process, args=(batch,), daemon=True,
                                            name=f"stub-{batch.id}")
            batch.thread.start()
            return batch.to_json(base_url)

    def retrieve(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            return self._get(batch_id).to_json(base_url)

    def cancel(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            if batch.ended_at is not None:
                raise BatchError(400, f"message batch {batch_id} has already ended; only a batch in progress "
                                      "can be canceled")
            if batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = self._clock()
                batch.wake.set()  # a batch still waiting for its delay ends right away
            return batch.to_json(base_url)

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            if batch.ended_at is None:
                raise BatchError(400, f"message batch {batch_id} is still {batch.status}; only a batch that "
                                      "has ended can be deleted (cancel it first, then wait until it has ended)")
            del self._batches[batch_id]
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        with self._lock:
            batch = self._get(batch_id)
            if batch.ended_at is None:
                raise BatchError(404, f"the results of message batch {batch_id} are not available: its "
                                      f"processing_status is {batch.status}; poll GET /v1/messages/batches/"
                                      f"{batch_id} until it is ended and read its results_url")
            lines = [{"custom_id": r.custom_id, "result": r.result} for r in batch.requests]
        return b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def page(self, query: Mapping[str, list[str]], base_url: str) -> dict[str, Any]:
        """`GET /v1/messages/batches`: a page of batches, newest first."""
        limit = LIST_LIMIT_DEFAULT
        if "limit" in query:
            raw = query["limit"][-1]
            if not raw.isdigit() or not 1 <= int(raw) <= LIST_LIMIT_MAX:
                raise BatchError(400, f"limit: must be an integer from 1 to {LIST_LIMIT_MAX}, got {raw!r}")
            limit = int(raw)
        after, before = query.get("after_id", [None])[-1], query.get("before_id", [None])[-1]
        if after and before:
            raise BatchError(400, "give after_id or before_id, not both")
        with self._lock:
            newest_first = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
            ids = [b.id for b in newest_first]
            cursor = after or before
            if cursor and cursor not in ids:
                name = "after_id" if after else "before_id"
                raise BatchError(400, f"{name}: no message batch {cursor!r} (take the id from a listed page)")
            if before:
                end = ids.index(before)
                start = max(0, end - limit)
                page, has_more = newest_first[start:end], start > 0
            else:
                start = ids.index(after) + 1 if after else 0
                page, has_more = newest_first[start:start + limit], len(ids) > start + limit
            data = [b.to_json(base_url) for b in page]
        return {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    # ----- admin -------------------------------------------------------------------------------------
    def admin(self) -> list[dict[str, Any]]:
        """Every batch, oldest first: its status, custom_ids and (once ended) each request's result type."""
        with self._lock:
            return [{"id": b.id, "processing_status": b.status, "request_counts": b.counts(),
                     "custom_ids": [r.custom_id for r in b.requests],
                     "results": ({r.custom_id: r.result["type"] if r.result else None for r in b.requests}
                                 if b.ended_at is not None else None)}
                    for b in sorted(self._batches.values(), key=lambda b: b.seq)]

    def reset(self) -> None:
        """Forget every batch (their threads stop, logging nothing more) and restore the startup knobs."""
        with self._lock:
            batches = list(self._batches.values())
            for batch in batches:
                batch.discarded = True
                batch.wake.set()
            self._batches.clear()
            self._config = self._startup.updated({})
            self._draws.clear()
        for batch in batches:
            if batch.thread is not None and batch.thread is not threading.current_thread():
                batch.thread.join(JOIN_TIMEOUT_S)

    # ----- processing --------------------------------------------------------------------------------
    def _get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchError(404, f"message batch {batch_id!r} not found")
        return batch

    def _decide(self, request: BatchRequest) -> tuple[str, str | None]:
        """("process" | "errored" | "expired", error type); under the lock."""
        config = self._config
        for rule in config.rules:
            if rule.matches(request.custom_id, request.run, request.slot):
                rule.used += 1
                return rule.result, rule.error if rule.result == "errored" else None
        attempt = self._draws[request.custom_id]
        self._draws[request.custom_id] += 1
        u = _draw(config.seed, request.custom_id, attempt)
        if u < config.errored:
            kind = SHARE_ERRORS[0] if _draw(config.seed, request.custom_id, attempt, "kind") < 0.5 else SHARE_ERRORS[1]
            return "errored", kind
        if u < config.errored + config.expired:
            return "expired", None
        return "process", None

    def _process(self, batch: Batch) -> None:
        batch.wake.wait(batch.delay_s)
        for request in batch.requests:
            with self._lock:
                if batch.discarded:
                    return
                if batch.cancel_initiated_at is not None:
                    break
                outcome, error = self._decide(request)
                if outcome == "expired":
                    request.result = {"type": "expired"}
                    continue
            forced = ERROR_STATUS[error] if outcome == "errored" and error else None
            entry: dict[str, Any] | None
            try:
                status, payload, entry = self._call(request.params, batch.api_version, request.run, request.slot,
                                                    forced)
            except Exception as exc:  # a stub bug must still end the batch, as an errored request
                status, payload, entry = 500, _error_payload("api_error", f"stub error: {exc}"), None
            if status == 200:
                result = {"type": "succeeded", "message": payload}
            else:
                result = {"type": "errored", "error": payload}
            with self._lock:
                if batch.discarded:
                    return
                request.result = result
                if entry is not None:
                    self._record({**entry, "batch": batch.id, "custom_id": request.custom_id,
                                  "result": result["type"]})
        with self._lock:
            if batch.discarded:
                return
            for request in batch.requests:
                if request.result is None:
                    request.result = {"type": "canceled"}
            batch.ended_at = self._clock()


def _parse_create(body: Any) -> list[BatchRequest]:
    """The requests of a create body, or BatchError(400) naming the first problem. `params` must be an
    object; what is in it is validated when the request is processed."""
    if not isinstance(body, dict):
        raise BatchError(400, 'request body must be a JSON object like {"requests": [{"custom_id": ..., '
                              '"params": {...}}]}')
    unknown = set(body) - {"requests"}
    if unknown:
        raise BatchError(400, f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    if "requests" not in body:
        raise BatchError(400, "requests: Field required")
    items = body["requests"]
    if not isinstance(items, list):
        raise BatchError(400, "requests: Input should be a valid list")
    if not 1 <= len(items) <= MAX_REQUESTS:
        raise BatchError(400, f"requests: a Message Batch holds 1 to {MAX_REQUESTS:,} requests, got {len(items):,}; "
                              "split the work into several batches")
    seen: set[str] = set()
    requests: list[BatchRequest] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BatchError(400, f"requests.{i}: Input should be an object with custom_id and params")
        for name in ("custom_id", "params"):
            if name not in item:
                raise BatchError(400, f"requests.{i}.{name}: Field required")
        extra = set(item) - {"custom_id", "params"}
        if extra:
            raise BatchError(400, f"requests.{i}.{sorted(extra)[0]}: Extra inputs are not permitted")
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise BatchError(400, f"requests.{i}.custom_id: {custom_id!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$ "
                                  "(1 to 64 letters, digits, '_' or '-')")
        if custom_id in seen:
            raise BatchError(400, f"requests.{i}.custom_id: {custom_id!r} is used more than once; each request "
                                  "in a batch needs a unique custom_id")
        seen.add(custom_id)
        if not isinstance(item["params"], dict):
            raise BatchError(400, f"requests.{i}.params: Input should be an object (a Messages API body)")
        run, slot = chorus_run_slot(custom_id)
        requests.append(BatchRequest(custom_id, item["params"], run, slot))
    return requests
