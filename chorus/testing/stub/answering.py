"""The stub's model of the Messages API, without HTTP: its state (fault rules, the request log, the
latency model, the prompt cache, the limits, the batches and files) and the one answer path that the HTTP
server (`server.py`), the in-process transport (`inprocess.py`) and the Message Batches share: check a
request as Anthropic does, apply the fault rules and the rate limit, wait the latency, answer, bill it.
The numbered steps of `answer_message` are those of server.py's module docstring."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from chorus.testing.stub.batches import (
    BatchConfig,
    BatchStore,
    batch_params_problem,
)
from chorus.testing.stub.cache import CacheRequestError, PromptCache
from chorus.testing.stub.documents import MAX_REQUEST_BYTES, MediaError, MediaReader
from chorus.testing.stub.faults import HANG, FaultMix
from chorus.testing.stub.files import FileStore
from chorus.testing.stub.models import traits
from chorus.testing.stub.outputs import config_problem
from chorus.testing.stub.ratelimit import StubLimiter
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
            "body": body if body is not INVALID_JSON else None,
        }

    def batch_call(self, params: dict[str, Any], api_version: str | None, run: str | None, slot: str | None,
                   error: int | None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Answer one request of a Message Batch: (status, payload, log entry). `error` (a status) is an
        outcome the batch knobs forced; otherwise the request goes through `answer_message`."""
        started = time.monotonic()
        request_id = new_request_id()
        entry = self.new_entry(params, run, slot, request_id, api_version)
        if error is not None:
            entry["fault"] = ERROR_TYPES.get(error, "api_error")
            status = error
            payload = error_body(error, ERROR_MESSAGES.get(error, f"HTTP {error} (injected by the stub)"), request_id)
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



def error_body(status: int, message: str, request_id: str, details: dict[str, Any] | None = None
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
    if body is INVALID_JSON:
        return 400, error_body(400, "request body is not valid JSON", request_id), {}
    problem = validate(body, api_version)
    if problem is None and batched:
        problem = batch_params_problem(body)
    if problem:
        return 400, error_body(400, problem, request_id), {}
    media = state.media_reader()
    try:
        media.check(body)
    except MediaError as exc:
        return exc.status, error_body(exc.status, exc.message, request_id, exc.details), {}
    if media.pdf_pages or media.images:
        entry.update(pdf_pages=media.pdf_pages, images=media.images)
    if not batched:
        rule = state.take_rule(run, slot)
        if rule is not None:
            headers = {}
            if rule.status == 429 or rule.retry_after is not None:
                headers["retry-after"] = _seconds(1.0 if rule.retry_after is None else rule.retry_after)
            message = ERROR_MESSAGES.get(rule.status, f"HTTP {rule.status} (injected by the stub)")
            return rule.status, error_body(rule.status, message, request_id), headers
        fault = state.faults.draw() if state.faults else None
        if fault is not None and state.faults is not None:
            entry["fault"] = fault.kind
            if fault.kind == HANG:
                time.sleep(state.faults.hang_s)  # bounded: longer than the client waits, never forever
            headers = {"retry-after": _seconds(state.faults.retry_after_s)} if fault.status == 429 else {}
            message = ERROR_MESSAGES.get(fault.status, f"HTTP {fault.status} (injected by the stub)")
            return fault.status, error_body(fault.status, message, request_id), headers
    try:
        cached = state.cache.lookup(body, media)
    except CacheRequestError as exc:
        return 400, error_body(400, str(exc), request_id), {}
    prompt_tokens = count_request(body, media)
    limit_headers: dict[str, str] = {}
    limiter = state.limiter if not batched and state.limiter is not None and state.limiter.active else None
    if limiter is not None:
        # Cache-aware ITPM: uncached input and cache writes count, cache reads do not.
        verdict = limiter.admit(body["model"], prompt_tokens - cached.read_tokens, body["max_tokens"])
        limit_headers = verdict.headers
        if not verdict.allowed:
            entry["limited"] = verdict.limited
            return 429, error_body(429, verdict.message, request_id), limit_headers
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
    text, stop_reason = fit_answer(reply.text, body["max_tokens"])
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



class RequestHeaders(Protocol):
    """Case-insensitive request headers: http.server's message or httpx's `Headers`."""

    def get(self, name: str, /) -> str | None: ...


def post_message(state: StubState, body: Any, headers: RequestHeaders
                 ) -> tuple[int, dict[str, Any], dict[str, str], dict[str, Any]]:
    """`POST /v1/messages` with its parsed body (or `INVALID_JSON`) and its request headers, answered and
    logged: (status, payload, response headers, log entry). The HTTP handler and the in-process transport
    (`inprocess.StubTransport`) both answer through it."""
    started = time.monotonic()
    request_id = new_request_id()
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
    problem = "request body is not valid JSON" if body is INVALID_JSON else validate(
        {"max_tokens": 0, **body} if isinstance(body, dict) else body, api_version
    )
    if problem:
        return 400, error_body(400, problem, new_request_id())
    media = state.media_reader(count_only=True)
    try:
        media.check(body)
    except MediaError as exc:
        return exc.status, error_body(exc.status, exc.message, new_request_id(), exc.details)
    return 200, {"input_tokens": count_request(body, media)}


def fit_answer(text: str, max_tokens: int) -> tuple[str, str]:
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


INVALID_JSON = object()


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
