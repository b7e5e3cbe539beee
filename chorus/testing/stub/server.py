"""A local HTTP server that speaks enough of the Messages API for the real `anthropic` SDK.

It is chorus's model of Anthropic, written from Anthropic's documentation and never from chorus's
own estimates, tables or limiter (see `tokenizer`, `cache` and `ratelimit`, each citing its page).
Only the answer *text* comes from chorus: `providers.offline.answer` is the stub's "model".

One request to `POST /v1/messages` goes through these steps, in order:

0. a body longer than `max_request_bytes` (Content-Length, before any parsing; 32 MB by default,
   `--max-request-bytes`, `POST /_stub/limits`) is refused with 413 `request_too_large`;
1. parse and validate the body like Anthropic does (400 invalid_request_error): required fields,
   sampling parameters (see `SAMPLING_REJECTED_FROM`), `output_config` (`outputs`: the format's
   JSON-schema limitations and the model's effort levels), assistant prefill and forced tool use on
   the models that refuse them (`models`), then the document and image blocks (`documents`: base64,
   media types, PDFs that do not parse or are encrypted, file ids, image size and dimensions, the
   model's PDF page limit, citations with structured outputs);
2. fault rules: a rule matching the `x-chorus-run` / `x-chorus-slot` headers answers its status;
   then the seeded fault mix, if any;
3. prompt-cache lookup (`cache.PromptCache`): a hit reads the prefix, a miss will write it;
4. the token-bucket rate limit of the model's family with `anthropic-ratelimit-*` headers: one
   request, the input that counts towards ITPM (uncached input + cache writes, not cache reads),
   and `max_tokens` output tokens, settled to the real output at the end;
5. sleep `latency_ms`, plus a seeded uniform draw in [-`latency_jitter_ms`, +`latency_jitter_ms`] (clamped at
   0), plus `ms_per_input_page` per PDF page of the request (`--ms-per-page`, `/_stub/latency`; that part
   logged as `page_delay_ms`), all of it logged as `delay_ms`; the response begins, so a written prefix
   becomes readable (then, with `ms_per_output_token` set through `/_stub/latency`, the answer takes that
   long per output token);
6. answer with the offline provider's reply (`providers.offline.answer`: JSON that conforms to
   `output_config.format.schema` when one is given, or a refusal with stop reason `refusal`), cut to
   `max_tokens` by the stub's own tokenizer, and report `usage` counted by that tokenizer.

Document and image blocks (`documents`) are counted by the stub's own rule (page text plus an image
per PDF page; `ceil(w*h/750)` per image after resizing), and the "model" reads them in their place as
`<document>...</document>`: a PDF's page text, or, for an image or a page without text, the text a
test wrote into the image's metadata (PNG tEXt `Description`, JPEG COM), the stub's stand-in for vision.
A request with media is logged with `pdf_pages` and `images`.

`POST /v1/messages/count_tokens` counts a request with the same tokenizer, so what it says is what
a call bills; it takes PDFs and images as base64 only (a `file` source is a 400, as at Anthropic).

The Files API (`/v1/files`: upload, list, retrieve metadata, delete; `files.FileStore`) keeps files in
memory for `file` sources; `GET /_stub/files` lists every file uploaded since the last reset, live or
deleted, with the `uploads` / `deletes` counts (uploads and deletes are not in the request log).

Every Messages request is logged with its whole body (see `GET /_stub/requests`; `?bodies=0` leaves
the bodies out; equal base64 data of documents and images is held once) once it is answered; `GET
/_stub/inflight` lists the Messages requests read and not yet answered (time, run, slot, request id;
an answered request leaves that list as it enters the log). The admin API lives under
`/_stub/`: `requests`, `inflight`, `rules`, `health`, `reset`, `latency`, `limits` (`{"max_request_bytes"}`, back to
the startup value on reset), `batches`, `files`.

The Message Batches API (`/v1/messages/batches`: create, retrieve, list, cancel, delete, results) is
`batches.BatchStore`. Each request of a batch is answered by the same function as `POST /v1/messages`
(`answer_message`, with `batched=True`: steps 1, 3, 5 and 6 without the latency, plus the batch-only
checks; no fault rules, fault mix or rate limit) and logged like one, with `batch` and `custom_id`
(run and slot come from a chorus custom_id `<run id>-<slot>`). Its knobs: `--batch-delay-ms`,
`--batch-errored`, `--batch-expired`, `--batch-seed`, and at runtime `POST /_stub/batches`
`{delay_ms, errored, expired, seed, rules}`; `GET /_stub/batches` lists the batches; `POST /_stub/reset`
forgets them and restores the startup knobs.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from chorus.testing.stub.batches import (
    MAX_BODY_BYTES,
    BatchConfig,
    BatchError,
    BatchStore,
    batch_params_problem,
)
from chorus.testing.stub.cache import CacheRequestError, PromptCache
from chorus.testing.stub.documents import MAX_REQUEST_BYTES, MediaError, MediaReader
from chorus.testing.stub.faults import HANG, FaultMix
from chorus.testing.stub.files import MAX_UPLOAD_BYTES, FileError, FileStore
from chorus.testing.stub.models import traits
from chorus.testing.stub.outputs import config_problem
from chorus.testing.stub.ratelimit import StubLimiter, add_reliability_options, reliability_from_args
from chorus.testing.stub.tokenizer import count_request, count_text, truncate
from providers.offline import answer

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request (injected by the stub).",
    401: "invalid x-api-key (injected by the stub)",
    429: "Number of requests has exceeded your rate limit (injected by the stub).",
    500: "Internal server error (injected by the stub).",
    529: "Overloaded (injected by the stub).",
}
# API version 2026-10-21 rejects sampling parameters on every model. The rejection keys on the
# `anthropic-version` header because that is what decides it at Anthropic: anthropic SDK 2.x always
# sends `anthropic-version: 2026-10-21` (anthropic._constants.ANTHROPIC_API_VERSION), while a raw
# client on 2023-06-01 may still send them to the models that take them.
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
SAMPLING_REJECTED_FROM = "2026-10-21"
PREFILL_MESSAGE = ("This model does not support assistant message prefill. "
                   "The conversation must end with a user message.")
COUNT_TOKENS_FILE_MESSAGE = ("count_tokens accepts PDFs and images only as base64: a document or image "
                             "with a `file` source cannot be counted; send its bytes as a base64 source")
DRAIN_LIMIT_BYTES = 1024 * 1024 * 1024  # a refused body up to this size is read (and dropped) before the 413
DRAIN_TIMEOUT_S = 2.0
FORCED_TOOL_MESSAGE = ("tool_choice: forced tool use (type 'any' or 'tool') is not supported on this model; "
                       "use tool_choice 'auto' or 'none' and say in the prompt which tool to call")


@dataclass
class FaultRule:
    """Answer `status` to requests whose run/slot headers match (None matches anything).

    `times` limits the rule to its first K matches; `retry_after` (seconds) is sent as the
    `retry-after` header (always for 429, default 1 s).
    """

    status: int
    run: str | None = None
    slot: str | None = None
    times: int | None = None
    retry_after: float | None = None
    used: int = 0

    def matches(self, run: str | None, slot: str | None) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return (self.run is None or self.run == run) and (self.slot is None or self.slot == slot)

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """`[run=R,][slot=S]:STATUS[:times=K][:retry_after=SECONDS]`, or `STATUS[:...]` for every request."""
        parts = spec.strip().split(":")
        matcher = ""
        if parts and ("=" in parts[0] or parts[0] in ("", "*")):
            matcher = parts.pop(0)
        if not parts or not parts[0].strip().isdigit():
            raise ValueError(f"fault rule {spec!r}: expected [run=R,slot=S]:STATUS[:times=K] like slot=2:500")
        fields: dict[str, Any] = {"status": int(parts[0])}
        for item in [m for m in matcher.split(",") if m.strip() and m.strip() != "*"] + parts[1:]:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"fault rule {spec!r}: {item!r} is not key=value")
            fields[key.strip()] = value.strip()
        return cls.from_json(fields)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> FaultRule:
        if isinstance(data, str):
            return cls.parse(data)
        unknown = set(data) - {"status", "run", "slot", "times", "retry_after"}
        if unknown:
            raise ValueError(f"fault rule: unknown field(s) {sorted(unknown)}")
        status = int(data["status"])
        if not 400 <= status <= 599:
            raise ValueError(f"fault rule: status {status} is not an HTTP error status")
        times = data.get("times")
        retry_after = data.get("retry_after")
        return cls(
            status=status,
            run=None if data.get("run") is None else str(data["run"]),
            slot=None if data.get("slot") is None else str(data["slot"]),
            times=None if times is None else int(times),
            retry_after=None if retry_after is None else float(retry_after),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StubState:
    """The request log, the fault rules, the prompt cache and the Message Batches, shared by the handler
    threads (and the batch processing threads)."""

    def __init__(self, latency_ms: float = 0, rules: Iterable[FaultRule] = (), faults: FaultMix | None = None,
                 limiter: StubLimiter | None = None, batch: BatchConfig | None = None,
                 latency_jitter_ms: float = 0.0, latency_seed: int = 0, max_request_bytes: int = MAX_REQUEST_BYTES,
                 ms_per_input_page: float = 0.0) -> None:
        self.latency_ms = latency_ms
        # Real response times vary: each call's delay is latency_ms plus a uniform draw in [-J, +J],
        # from a seeded generator so that a run can be repeated (the draws' order follows arrivals).
        self.latency_jitter_ms = latency_jitter_ms
        self._latency_random = random.Random(latency_seed)
        # Generation time per output token, after the response began (`latency_ms` is the time to the
        # first token): a `max_tokens: 0` call ends at the first, an answer of 20 tokens 20 steps later.
        self.ms_per_output_token = 0.0
        # Reading time per PDF page of the request, added to the time to the first token.
        self.ms_per_input_page = ms_per_input_page
        # The Messages and count_tokens request size limit (bytes); a reset restores the startup value.
        self.max_request_bytes = self._startup_max_request_bytes = max_request_bytes
        self.files = FileStore()
        self.faults = faults
        self.limiter = limiter
        self._lock = threading.Lock()
        self._rules = list(rules)
        self._log: list[dict[str, Any]] = []
        self._inflight: dict[str, dict[str, Any]] = {}  # request id -> Messages request being answered
        self._seq = 0
        self.cache = PromptCache()
        self.batches = BatchStore(self.batch_call, self.record, batch)

    def new_entry(self, body: Any, run: str | None, slot: str | None, request_id: str,
                  api_version: str | None) -> dict[str, Any]:
        """The request-log entry of one Messages request, before it is answered."""
        return {
            "time": time.time(), "run": run, "slot": slot, "request_id": request_id,
            "model": body.get("model") if isinstance(body, dict) else None,
            "anthropic_version": api_version,
            "input_tokens": 0, "output_tokens": 0,
            "body": body if body is not _INVALID_JSON else None,
        }

    def batch_call(self, params: dict[str, Any], api_version: str | None, run: str | None, slot: str | None,
                   error: int | None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Answer one request of a Message Batch: (status, payload, log entry). `error` (a status) is an
        outcome the batch knobs forced; otherwise the request goes through `answer_message`."""
        started = time.monotonic()
        request_id = _request_id()
        entry = self.new_entry(params, run, slot, request_id, api_version)
        if error is not None:
            entry["fault"] = ERROR_TYPES.get(error, "api_error")
            status = error
            payload = _error_body(error, ERROR_MESSAGES.get(error, f"HTTP {error} (injected by the stub)"), request_id)
        else:
            status, payload, _ = answer_message(self, params, entry, api_version=api_version, run=run, slot=slot,
                                                request_id=request_id, batched=True)
            if status == 200:
                payload["usage"]["service_tier"] = "batch"
        entry.update(status=status, latency_ms=round((time.monotonic() - started) * 1000, 3))
        return status, payload, entry

    def set_latency(self, latency_ms: float, ms_per_output_token: float = 0.0, jitter_ms: float = 0.0,
                    seed: int | None = None, ms_per_input_page: float = 0.0) -> None:
        """The latency model; a `seed` restarts the jitter's draws."""
        with self._lock:
            self.latency_ms = latency_ms
            self.ms_per_output_token = ms_per_output_token
            self.ms_per_input_page = ms_per_input_page
            self.latency_jitter_ms = jitter_ms
            if seed is not None:
                self._latency_random.seed(seed)

    def draw_delay_ms(self) -> float:
        """The time to the first token of one call: latency_ms, jittered, never negative."""
        with self._lock:
            if self.latency_jitter_ms <= 0:
                return max(0.0, self.latency_ms)
            jitter = self._latency_random.uniform(-self.latency_jitter_ms, self.latency_jitter_ms)
        return max(0.0, self.latency_ms + jitter)

    def take_rule(self, run: str | None, slot: str | None) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(run, slot):
                    rule.used += 1
                    return rule
        return None

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]

    def begin(self, entry: dict[str, Any]) -> None:
        """A Messages request has been read and is being answered: it is in flight until `record`."""
        with self._lock:
            self._inflight[entry["request_id"]] = {k: entry[k] for k in ("time", "run", "slot", "request_id")}

    def record(self, entry: dict[str, Any]) -> None:
        """Log an answered request; it leaves the in-flight list in the same step, so a reader that reads
        the log and then the in-flight list never counts one request twice."""
        with self._lock:
            self._seq += 1
            self._log.append({"seq": self._seq, **entry})
            self._inflight.pop(entry.get("request_id", ""), None)

    def inflight(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._inflight.values())

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    def media_reader(self, *, count_only: bool = False) -> MediaReader:
        """The reader of one request's document and image blocks; `count_only` (count_tokens) refuses
        `file` sources."""
        if count_only:
            return MediaReader(None, COUNT_TOKENS_FILE_MESSAGE)
        return MediaReader(self.files.for_message)

    def set_limits(self, data: Any) -> dict[str, Any]:
        """`POST /_stub/limits {max_request_bytes}` (ValueError on a bad value)."""
        if not isinstance(data, dict) or set(data) - {"max_request_bytes"}:
            raise ValueError('expected {"max_request_bytes": <positive integer>}')
        value = data.get("max_request_bytes", self.max_request_bytes)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_request_bytes must be a positive integer, got {value!r}")
        with self._lock:
            self.max_request_bytes = value
        return self.limits()

    def limits(self) -> dict[str, Any]:
        return {"max_request_bytes": self.max_request_bytes}

    def reset(self) -> None:
        self.batches.reset()  # first: its threads stop before the log and the cache are cleared
        with self._lock:
            self._log.clear()
            self._rules.clear()
            self._seq = 0
            self.max_request_bytes = self._startup_max_request_bytes
        self.cache.clear()
        self.files.reset()


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hung handler must never keep the stub from stopping
    # socketserver's default backlog is 5: hundreds of workers connecting at once would see SYN
    # drops and one-second retransmits, which is the client's problem, not the provider's.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: StubState) -> None:
        self.state = state
        super().__init__(address, Handler)

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _IPv6StubServer(StubServer):
    address_family = socket.AF_INET6


def _error_body(status: int, message: str, request_id: str, details: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"type": kind, "message": message}
    if details:
        error["details"] = details  # the SDK reads `error.details.error_code` into APIStatusError.error_code
    return {"type": "error", "error": error, "request_id": request_id}


def _text(content: Any) -> str:
    """The text of a string or of a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def validate(body: Any, api_version: str | None) -> str | None:
    """Anthropic's message for the first problem of a /v1/messages body, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        return "max_tokens: Input should be a valid non-negative integer"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or "content" not in m:
            return f"messages.{i}: each message needs a role (user or assistant) and content"
    if (api_version or "") >= SAMPLING_REJECTED_FROM:
        for name in SAMPLING_PARAMS:
            if name in body:
                return f"{name}: Extra inputs are not permitted"
    problem = config_problem(body.get("output_config"), body["model"])
    if problem:
        return problem
    model = traits(body["model"])
    if model is not None and model.rejects_prefill and messages[-1]["role"] == "assistant":
        return PREFILL_MESSAGE
    choice = body.get("tool_choice")
    if model is not None and model.rejects_forced_tool_use and isinstance(choice, dict) \
            and choice.get("type") in ("any", "tool"):
        return FORCED_TOOL_MESSAGE
    return None


def output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the reply must follow (`output_config.format.schema`), once validated."""
    config = body.get("output_config") or {}
    fmt = config.get("format") or {}
    return fmt.get("schema")


def answer_message(state: StubState, body: Any, entry: dict[str, Any], *, api_version: str | None,
                   run: str | None, slot: str | None, request_id: str, batched: bool = False
                   ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Answer one Messages request: (status, JSON payload, response headers). Steps 1-6 of the module
    doc; `entry` (the request's log entry) gets the usage, and `fault` / `limited` when one answered.

    `batched` is a request of a Message Batch: the batch-only checks apply (`batches.batch_params_problem`),
    and the Messages API's fault rules, fault mix, rate limits and latency do not.
    """
    if body is _INVALID_JSON:
        return 400, _error_body(400, "request body is not valid JSON", request_id), {}
    problem = validate(body, api_version)
    if problem is None and batched:
        problem = batch_params_problem(body)
    if problem:
        return 400, _error_body(400, problem, request_id), {}
    media = state.media_reader()
    try:
        media.check(body)
    except MediaError as exc:
        return exc.status, _error_body(exc.status, exc.message, request_id, exc.details), {}
    if media.pdf_pages or media.images:
        entry.update(pdf_pages=media.pdf_pages, images=media.images)
    if not batched:
        rule = state.take_rule(run, slot)
        if rule is not None:
            headers = {}
            if rule.status == 429 or rule.retry_after is not None:
                headers["retry-after"] = _seconds(1.0 if rule.retry_after is None else rule.retry_after)
            message = ERROR_MESSAGES.get(rule.status, f"HTTP {rule.status} (injected by the stub)")
            return rule.status, _error_body(rule.status, message, request_id), headers
        fault = state.faults.draw() if state.faults else None
        if fault is not None and state.faults is not None:
            entry["fault"] = fault.kind
            if fault.kind == HANG:
                time.sleep(state.faults.hang_s)  # bounded: longer than the client waits, never forever
            headers = {"retry-after": _seconds(state.faults.retry_after_s)} if fault.status == 429 else {}
            message = ERROR_MESSAGES.get(fault.status, f"HTTP {fault.status} (injected by the stub)")
            return fault.status, _error_body(fault.status, message, request_id), headers
    try:
        cached = state.cache.lookup(body, media)
    except CacheRequestError as exc:
        return 400, _error_body(400, str(exc), request_id), {}
    prompt_tokens = count_request(body, media)
    limit_headers: dict[str, str] = {}
    limiter = state.limiter if not batched and state.limiter is not None and state.limiter.active else None
    if limiter is not None:
        # Cache-aware ITPM: uncached input and cache writes count, cache reads do not.
        verdict = limiter.admit(body["model"], prompt_tokens - cached.read_tokens, body["max_tokens"])
        limit_headers = verdict.headers
        if not verdict.allowed:
            entry["limited"] = verdict.limited
            return 429, _error_body(429, verdict.message, request_id), limit_headers
    if not batched:
        delay_ms = state.draw_delay_ms()
        if media.pdf_pages and state.ms_per_input_page > 0:
            page_delay_ms = media.pdf_pages * state.ms_per_input_page
            entry["page_delay_ms"] = round(page_delay_ms, 3)
            delay_ms += page_delay_ms
        entry["delay_ms"] = round(delay_ms, 3)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
    state.cache.response_started(cached)  # Anthropic: readable once the response begins
    user_text = "\n".join(media.reading(m["content"]) for m in body["messages"] if m["role"] == "user")
    reply = answer(body["model"], _text(body.get("system", "")), user_text, body["max_tokens"], output_schema(body))
    text, stop_reason = _fit(reply.text, body["max_tokens"])
    if reply.stop_reason != "end_turn" and stop_reason == "end_turn":
        stop_reason = reply.stop_reason  # a refusal, or a reply the provider had to cut itself
    output_tokens = count_text(text)
    usage = {**cached.usage_fields(prompt_tokens), "output_tokens": output_tokens}
    entry.update(input_tokens=usage["input_tokens"], output_tokens=output_tokens,
                 cache_write_tokens=cached.write_tokens, cache_read_tokens=cached.read_tokens)
    if limiter is not None:
        limiter.finish(body["model"], output_tokens, body["max_tokens"])  # the unused output comes back
    if not batched and state.ms_per_output_token > 0 and output_tokens:
        time.sleep(output_tokens * state.ms_per_output_token / 1000)
    return 200, {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }, limit_headers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client's delayed ACK
    # added ~40 ms to every response (measured: 44 ms per call at zero latency).
    disable_nagle_algorithm = True
    server: StubServer
    server_version = "chorus-stub"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the request log is /_stub/requests; stderr stays quiet

    # ----- plumbing ---------------------------------------------------------------------------
    def _read_json(self) -> tuple[Any, bool]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null"), True
        except ValueError:
            return None, False

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _refuse_large(self, length: int, limit: int, what: str) -> None:
        """413 request_too_large for a body over `limit` bytes, decided from Content-Length before any
        parsing. The body is read and dropped first (up to `DRAIN_LIMIT_BYTES`), so that a client still
        sending it reads the answer instead of a reset connection; a larger one is refused unread."""
        message = (f"Request exceeds the maximum allowed number of bytes: {what} takes at most {limit:,} bytes, "
                   f"this request has {length:,}")
        drained = False
        if length <= DRAIN_LIMIT_BYTES:
            left = length
            self.connection.settimeout(DRAIN_TIMEOUT_S)  # a client that stops sending is not waited for
            try:
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
                drained = left == 0
            except OSError:
                pass
            finally:
                self.connection.settimeout(self.timeout)
        headers = {}
        if not drained:
            self.close_connection = True
            headers["connection"] = "close"
        with contextlib.suppress(OSError):
            self._send(413, _error_body(413, message, _request_id()), headers)

    def _files_api(self, method: str, path: str, query: Mapping[str, list[str]]) -> bool:
        """Answer a Files API route; False when `path` is none of them."""
        parts = path.rstrip("/").split("/")[1:]  # ["v1", "files", id?, "content"?]
        if parts[:2] != ["v1", "files"] or len(parts) > 4:
            return False
        file_id, action = (parts[2:] + ["", ""])[:2]
        store = self.server.state.files
        request_id = _request_id()
        sent = {"request-id": request_id}
        try:
            if method == "POST" and not file_id:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_UPLOAD_BYTES:
                    self._refuse_large(length, MAX_UPLOAD_BYTES, "the Files API")
                    return True
                body = self.rfile.read(length) if length else b""
                self._send(200, store.upload(self.headers.get("content-type") or "", body), sent)
            elif method == "GET" and not file_id:
                self._send(200, store.page(query), sent)
            elif method == "GET" and file_id and not action:
                self._send(200, store.retrieve(file_id), sent)
            elif method == "GET" and action == "content":
                store.content(file_id)
            elif method == "DELETE" and file_id and not action:
                self._send(200, store.delete(file_id), sent)
            else:
                return False
        except FileError as exc:
            self._send(exc.status, _error_body(exc.status, exc.message, request_id, exc.details), sent)
        return True

    def _send_jsonl(self, data: bytes, request_id: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/x-jsonl")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", request_id)
        self.end_headers()
        self.wfile.write(data)

    def _base_url(self) -> str:
        """scheme://host:port as the client addressed the stub (for `results_url`)."""
        host = self.headers.get("host")
        if not host:
            name = self.server.host
            host = f"[{name}]:{self.server.port}" if ":" in name else f"{name}:{self.server.port}"
        return f"http://{host}"

    def _batch_api(self, method: str, path: str, query: Mapping[str, list[str]], body: Any = None) -> bool:
        """Answer a Message Batches API route; False when `path` is none of them."""
        batches = self.server.state.batches
        parts = path.rstrip("/").split("/")[1:]  # ["v1", "messages", "batches", id?, action?]
        if parts[:3] != ["v1", "messages", "batches"] or len(parts) > 5:
            return False
        batch_id, action = (parts[3:] + ["", ""])[:2]
        request_id = _request_id()
        sent = {"request-id": request_id}
        try:
            if method == "POST" and not batch_id:
                self._send(200, batches.create(body, self.headers.get("anthropic-version"), self._base_url()), sent)
            elif method == "GET" and not batch_id:
                self._send(200, batches.page(query, self._base_url()), sent)
            elif method == "GET" and not action:
                self._send(200, batches.retrieve(batch_id, self._base_url()), sent)
            elif method == "GET" and action == "results":
                self._send_jsonl(batches.results(batch_id), request_id)
            elif method == "POST" and action == "cancel":
                self._send(200, batches.cancel(batch_id, self._base_url()), sent)
            elif method == "DELETE" and batch_id and not action:
                self._send(200, batches.delete(batch_id), sent)
            else:
                return False
        except BatchError as exc:
            self._send(exc.status, _error_body(exc.status, exc.message, request_id), sent)
        return True

    # ----- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        state = self.server.state
        if self.path in ("/_stub/requests", "/_stub/requests?bodies=1"):
            self._send(200, state.log())
        elif self.path == "/_stub/requests?bodies=0":
            self._send(200, [{k: v for k, v in entry.items() if k != "body"} for entry in state.log()])
        elif self.path == "/_stub/inflight":
            self._send(200, state.inflight())
        elif self.path == "/_stub/rules":
            self._send(200, state.rules())
        elif self.path == "/_stub/health":
            self._send(200, {"ok": True, "pid": os.getpid(), "requests": len(state.log())})
        elif self.path == "/_stub/batches":
            self._send(200, state.batches.admin())
        elif self.path == "/_stub/files":
            self._send(200, state.files.admin())
        elif self.path == "/_stub/limits":
            self._send(200, state.limits())
        else:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not self._batch_api("GET", url.path, query) and not self._files_api("GET", url.path, query):
                self._send(404, _error_body(404, f"no route GET {self.path}", _request_id()))

    def do_DELETE(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._batch_api("DELETE", url.path, query) and not self._files_api("DELETE", url.path, query):
            self._send(404, _error_body(404, f"no route DELETE {self.path}", _request_id()))

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        if url.path.rstrip("/") == "/v1/files":
            self._files_api("POST", "/v1/files", parse_qs(url.query))
            return
        if url.path in ("/v1/messages", "/v1/messages/count_tokens") and length > self.server.state.max_request_bytes:
            what = "the Messages API" if url.path == "/v1/messages" else "the Token Counting API"
            self._refuse_large(length, self.server.state.max_request_bytes, what)
            return
        if url.path == "/v1/messages/batches" and length > MAX_BODY_BYTES:
            # Refused unread: the connection closes, so the unread body cannot be taken for a request.
            self.close_connection = True
            message = (f"a Message Batch body is at most {MAX_BODY_BYTES // (1024 * 1024)} MB, this one is "
                       f"{length:,} bytes; split the requests into several batches")
            self._send(413, _error_body(413, message, _request_id()), {"connection": "close"})
            return
        body, ok = self._read_json()
        if url.path == "/v1/messages":
            self._messages(body if ok else _INVALID_JSON)
        elif url.path == "/v1/messages/count_tokens":
            self._count_tokens(body if ok else _INVALID_JSON)
        elif self.path == "/_stub/rules":
            try:
                if not isinstance(body, list):
                    raise ValueError("expected a JSON list of rules")
                self.server.state.set_rules([FaultRule.from_json(r) for r in body])
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, _error_body(400, str(exc), _request_id()))
                return
            self._send(200, self.server.state.rules())
        elif self.path == "/_stub/reset":
            self.server.state.reset()
            self._send(200, {"ok": True})
        elif self.path == "/_stub/batches":
            try:
                config = self.server.state.batches.configure(body if ok else None)
            except ValueError as exc:
                self._send(400, _error_body(400, str(exc), _request_id()))
                return
            self._send(200, config)
        elif self.path == "/_stub/latency":
            self._set_latency(body if ok else None)
        elif self.path == "/_stub/limits":
            try:
                self._send(200, self.server.state.set_limits(body if ok else None))
            except ValueError as exc:
                self._send(400, _error_body(400, str(exc), _request_id()))
        elif url.path.startswith("/v1/messages/batches"):
            if not ok:
                self._send(400, _error_body(400, "request body is not valid JSON", _request_id()))
            elif not self._batch_api("POST", url.path, parse_qs(url.query), body):
                self._send(404, _error_body(404, f"no route POST {self.path}", _request_id()))
        else:
            self._send(404, _error_body(404, f"no route POST {self.path}", _request_id()))

    def _set_latency(self, body: Any) -> None:
        """`POST /_stub/latency {latency_ms, ms_per_output_token?, latency_jitter_ms?, latency_seed?,
        ms_per_input_page?}`: the whole latency model (a key left out is 0; a seed, if given, restarts the
        jitter's draws)."""
        body = body if isinstance(body, dict) else {}
        values = [body.get("latency_ms"), body.get("ms_per_output_token", 0.0), body.get("latency_jitter_ms", 0.0),
                  body.get("ms_per_input_page", 0.0)]
        seed = body.get("latency_seed")
        if any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in values) \
                or (seed is not None and (isinstance(seed, bool) or not isinstance(seed, int))):
            self._send(400, _error_body(400, "expected {\"latency_ms\": <non-negative number>, "
                                             "\"ms_per_output_token\": <non-negative number>, "
                                             "\"latency_jitter_ms\": <non-negative number>, "
                                             "\"latency_seed\": <integer>, "
                                             "\"ms_per_input_page\": <non-negative number>}", _request_id()))
            return
        state = self.server.state
        latency, per_token, jitter, per_page = (float(v) for v in values)  # checked above
        state.set_latency(latency, per_token, jitter, seed=seed, ms_per_input_page=per_page)
        self._send(200, {"latency_ms": state.latency_ms, "ms_per_output_token": state.ms_per_output_token,
                         "latency_jitter_ms": state.latency_jitter_ms, "ms_per_input_page": state.ms_per_input_page})

    def _messages(self, body: Any) -> None:
        status, payload, headers, entry = post_message(self.server.state, body, self.headers)
        # A hung request's client has usually gone by the time it is answered.
        with contextlib.suppress(OSError) if "fault" in entry else contextlib.nullcontext():
            self._send(status, payload, headers)

    def _count_tokens(self, body: Any) -> None:
        self._send(*count_tokens(self.server.state, body, self.headers.get("anthropic-version")))


class RequestHeaders(Protocol):
    """Case-insensitive request headers: http.server's message or httpx's `Headers`."""

    def get(self, name: str, /) -> str | None: ...


def post_message(state: StubState, body: Any, headers: RequestHeaders
                 ) -> tuple[int, dict[str, Any], dict[str, str], dict[str, Any]]:
    """`POST /v1/messages` with its parsed body (or `_INVALID_JSON`) and its request headers, answered and
    logged: (status, payload, response headers, log entry). The HTTP handler and the in-process transport
    (`inprocess.StubTransport`) both answer through it."""
    started = time.monotonic()
    request_id = _request_id()
    run, slot = headers.get("x-chorus-run"), headers.get("x-chorus-slot")
    api_version = headers.get("anthropic-version")
    entry = state.new_entry(body, run, slot, request_id, api_version)
    state.begin(entry)
    status, payload, sent = answer_message(state, body, entry, api_version=api_version, run=run, slot=slot,
                                           request_id=request_id)
    entry.update(status=status, latency_ms=round((time.monotonic() - started) * 1000, 3))
    state.record(entry)
    return status, payload, {"request-id": request_id, **sent}, entry


def count_tokens(state: StubState, body: Any, api_version: str | None) -> tuple[int, dict[str, Any]]:
    """`POST /v1/messages/count_tokens`: (status, payload), the prompt's tokens counted the way
    `answer_message` bills them (every input token, cached or not; the cache is not consulted)."""
    problem = "request body is not valid JSON" if body is _INVALID_JSON else validate(
        {"max_tokens": 0, **body} if isinstance(body, dict) else body, api_version
    )
    if problem:
        return 400, _error_body(400, problem, _request_id())
    media = state.media_reader(count_only=True)
    try:
        media.check(body)
    except MediaError as exc:
        return exc.status, _error_body(exc.status, exc.message, _request_id(), exc.details)
    return 200, {"input_tokens": count_request(body, media)}


def _fit(text: str, max_tokens: int) -> tuple[str, str]:
    """The answer within `max_tokens` by the stub's tokenizer, and its stop reason. A classification
    that does not fit keeps only its `Answer:` line (as the offline provider does with its own
    estimate); any other text is cut where the tokens run out, as a model's is (`max_tokens`)."""
    if max_tokens <= 0:
        return "", "max_tokens"
    if count_text(text) <= max_tokens:
        return text, "end_turn"
    lines = text.strip().splitlines()
    if lines and lines[-1].startswith("Answer:") and count_text(lines[-1]) <= max_tokens:
        return lines[-1], "end_turn"
    return truncate(text, max_tokens), "max_tokens"


_INVALID_JSON = object()


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def make_server(
    host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0, rules: Iterable[FaultRule | str] = (),
    faults: FaultMix | None = None, limiter: StubLimiter | None = None, batch: BatchConfig | None = None,
    latency_jitter_ms: float = 0.0, latency_seed: int = 0, max_request_bytes: int = MAX_REQUEST_BYTES,
    ms_per_input_page: float = 0.0,
) -> StubServer:
    """A bound (not yet serving) stub on a loopback address; port 0 picks a free port."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the stub only listens on loopback addresses, not {host!r}")
    parsed = [r if isinstance(r, FaultRule) else FaultRule.parse(r) for r in rules]
    server_cls = _IPv6StubServer if ":" in host else StubServer
    if latency_jitter_ms < 0:
        raise ValueError(f"--latency-jitter-ms must not be negative, got {latency_jitter_ms:g}")
    if max_request_bytes < 1:
        raise ValueError(f"--max-request-bytes must be positive, got {max_request_bytes}")
    if ms_per_input_page < 0:
        raise ValueError(f"--ms-per-page must not be negative, got {ms_per_input_page:g}")
    return server_cls((host, port), StubState(latency_ms, parsed, faults, limiter, batch, latency_jitter_ms,
                                              latency_seed, max_request_bytes, ms_per_input_page))


def serve_forever(server: StubServer, stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (forever without one), then close the socket."""
    stop = stop or threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.shutdown()
        server.server_close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chorus.testing.stub", description="A local Messages-API stub.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0,
                        help="each answer's delay is --latency-ms plus a uniform draw in [-J, +J] ms (at least 0)")
    parser.add_argument("--latency-seed", type=int, default=0, help="seed of the latency jitter")
    parser.add_argument("--ms-per-page", type=float, default=0.0,
                        help="added to each answer's delay per PDF page in the request (a long PDF reads slower)")
    parser.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES,
                        help="Messages / count_tokens bodies over this many bytes get 413 request_too_large "
                             "(default %(default)d, 32 MB)")
    parser.add_argument(
        "--fail", action="append", default=[], metavar="RULE",
        help="fault rule [run=R,][slot=S]:STATUS[:times=K][:retry_after=S], e.g. slot=2:500; repeatable",
    )
    add_reliability_options(parser)
    batch = parser.add_argument_group("Message Batches (see chorus.testing.stub.batches)")
    batch.add_argument("--batch-delay-ms", type=float, default=BatchConfig.delay_ms,
                       help="how long a batch waits before it is processed (default %(default)g)")
    batch.add_argument("--batch-errored", type=float, default=0.0,
                       help="share of batch requests that end errored (api_error / overloaded_error), 0..1")
    batch.add_argument("--batch-expired", type=float, default=0.0,
                       help="share of batch requests that end expired, 0..1")
    batch.add_argument("--batch-seed", type=int, default=0, help="seed of the errored / expired draws")
    return parser


def batch_config_from_args(args: argparse.Namespace) -> BatchConfig:
    """Raises ValueError naming a bad option."""
    try:
        return BatchConfig().updated({"delay_ms": args.batch_delay_ms, "errored": args.batch_errored,
                                      "expired": args.batch_expired, "seed": args.batch_seed})
    except ValueError as exc:
        raise ValueError(f"{exc} (set by the --batch-* options)") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; once listening, print `{"host", "port", "pid"}` as one JSON line."""
    args = build_parser().parse_args(argv)
    try:
        server = make_server(args.host, args.port, args.latency_ms, [FaultRule.parse(f) for f in args.fail],
                             *reliability_from_args(args), batch=batch_config_from_args(args),
                             latency_jitter_ms=args.latency_jitter_ms, latency_seed=args.latency_seed,
                             max_request_bytes=args.max_request_bytes, ms_per_input_page=args.ms_per_page)
    except (ValueError, OSError) as exc:
        print(f"chorus stub: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"host": server.host, "port": server.port, "pid": os.getpid()}), flush=True)
    serve_forever(server, stop)
    return 0
