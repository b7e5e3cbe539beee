"""The Anthropic provider: the real `anthropic` SDK, with its exceptions translated at one boundary."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import functools
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic

from providers.anthropic_capabilities import ANTHROPIC_CAPABILITIES
from workflows.calls import Attachment, CallRequest, CallResult, Usage
from workflows.errors import PermanentError, ProviderError, RetryableError
from workflows.tokens import min_cacheable_tokens, request_tokens

HEADER_DIMENSIONS = {"requests": "requests", "input-tokens": "input_tokens", "output-tokens": "output_tokens"}


def remaining_from_headers(headers: Mapping[str, str]) -> dict[str, float]:
    """`anthropic-ratelimit-<dim>-remaining` headers → {dimension: remaining}."""
    out: dict[str, float] = {}
    for header, name in HEADER_DIMENSIONS.items():
        raw = headers.get(f"anthropic-ratelimit-{header}-remaining")
        if raw is None:
            continue
        with contextlib.suppress(ValueError):
            out[name] = float(raw)
    return out

RETRYABLE_STATUSES = frozenset({408, 409, 429})
FIX_HINTS: dict[int, str] = {
    400: "fix the request (model name, max_tokens, message content)",
    401: "check ANTHROPIC_API_KEY",
    402: "check the billing of the Anthropic account",
    403: "the API key may not use this model or workspace; check ANTHROPIC_API_KEY",
    404: "check the model name and ANTHROPIC_BASE_URL",
    413: "the request is too large; shorten the document or split it into sections",
    422: "fix the request parameters",
}
_HEADER_KEY = re.compile(r"[^a-z0-9-]+")


def message_body(request: CallRequest) -> dict[str, Any]:
    """The Messages API body of one request (pure): what `messages.create` sends, and what a Message
    Batches request carries as its `params`.

    `request.temperature` is not sent: SDK 2.x speaks API version 2026-10-21, which rejects
    temperature/top_p/top_k with a 400 on every model, so voters differ by prompt and model instead.
    Nor is forced tool use or an assistant prefill (errors on the 5.5 models, 400 from 4.6 on): a reply's
    shape comes from structured outputs, `output_config.format` with the request's JSON schema.
    """
    blocks: list[dict[str, Any]] = [attachment_block(a) for a in request.attachments]
    blocks += [{"type": "text", "text": text} for text in request.user_blocks]
    prefix = request.prefix_blocks
    if prefix > 0:
        prefix_tokens = request.prefix_tokens if request.prefix_tokens is not None else (
            request_tokens(request, prefix_only=True))
        # Below the model's minimum Anthropic silently does not cache, so marking would only mislead.
        if prefix_tokens >= min_cacheable_tokens(request.model):
            control: dict[str, Any] = {"type": "ephemeral"}
            if request.cache_ttl == "1h":
                control["ttl"] = "1h"
            blocks[prefix - 1]["cache_control"] = control
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": "user", "content": blocks}],
    }
    if request.system:
        body["system"] = request.system
    output_config: dict[str, Any] = {}
    if request.output_schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": request.output_schema}
    if request.effort is not None:
        output_config["effort"] = request.effort
    if output_config:
        body["output_config"] = output_config
    return body


def attachment_block(attachment: Attachment) -> dict[str, Any]:
    """A natively read document as a content block: a PDF as a `document` block, an image as an `image`
    block, by base64 data or by the `file_id` of a Files API upload."""
    if attachment.file_id is not None:
        source: dict[str, Any] = {"type": "file", "file_id": attachment.file_id}
    elif attachment.data is not None:
        source = {"type": "base64", "media_type": attachment.media_type,
                  "data": base64.b64encode(attachment.data).decode("ascii")}
    else:
        raise ValueError("an attachment needs its bytes or a file_id")
    if attachment.kind == "image":
        return {"type": "image", "source": source}
    block: dict[str, Any] = {"type": "document", "source": source}
    if attachment.title:
        block["title"] = attachment.title[:500]
    return block


def build_params(request: CallRequest) -> dict[str, Any]:
    """The keyword arguments of `client.messages.create` for one request (pure, for tests too): the
    body plus the request's tags as headers."""
    return {**message_body(request), "extra_headers": tag_headers(request.tags)}


def tag_headers(tags: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Each tag (k, v) becomes the header `x-chorus-<k>: v` (sanitized: headers are ASCII lines)."""
    headers = {}
    for key, value in tags:
        name = _HEADER_KEY.sub("-", str(key).lower()).strip("-")
        text = "".join(ch for ch in str(value) if " " <= ch <= "~")
        if name:
            headers[f"x-chorus-{name}"] = text
    return headers


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def translate(exc: anthropic.AnthropicError) -> ProviderError:
    """The one place SDK exceptions become chorus errors."""
    if isinstance(exc, anthropic.APITimeoutError):
        return RetryableError("request timed out", retry_after=None)
    if isinstance(exc, anthropic.APIConnectionError):
        return RetryableError(f"connection error: {exc.message}", retry_after=None)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = exc.type or "error"
        detail = exc.api_message or exc.message
        message = f"HTTP {status} {kind}: {detail}"
        if status in RETRYABLE_STATUSES or status >= 500:
            return RetryableError(
                message,
                retry_after=parse_retry_after(exc.response.headers),
                status=status,
                request_id=exc.request_id,
            )
        hint = FIX_HINTS.get(status, "the request was refused; retrying will not help")
        return PermanentError(f"{message} ({hint})", status=status, request_id=exc.request_id)
    return ProviderError(f"{type(exc).__name__}: {exc}")


@functools.lru_cache(maxsize=8)
def _client(api_key: str, base_url: str | None, timeout_s: float, pid: int) -> anthropic.Anthropic:
    # One client per process keeps HTTP connections alive across calls; the pid is in the key
    # because a client created before a fork must not share its sockets with the children.
    # max_retries=0: Celery owns retries per slot, so each attempt is counted once and SDK retries
    # cannot multiply into a retry storm under a 429.
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)


class AnthropicProvider:
    name = "anthropic"
    # Token counting, prompt caching, the Message Batches API, PDF and image blocks, the Files API (a
    # document too large for one request is uploaded once: upload_file/delete_file).
    capabilities = ANTHROPIC_CAPABILITIES

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicProvider(base_url={self.base_url!r}, timeout_s={self.timeout_s})"

    def call(self, request: CallRequest) -> CallResult:
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            raw = client.messages.with_raw_response.create(**build_params(request))
            response = raw.parse()
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc
        return message_result(response, request.model, remaining_from_headers(raw.headers), response._request_id)

    # ----- the Files API (a document too large for one request is uploaded once per run) ------------
    def upload_file(self, data: bytes, filename: str, media_type: str) -> str:
        """Upload bytes once; every call of the run then references the returned file id."""
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            uploaded = client.files.upload(file=(filename, data, media_type))
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc
        return str(uploaded.id)

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file; one already gone counts as deleted."""
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            client.files.delete(file_id)
        except anthropic.NotFoundError:
            return
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc

    # ----- the Message Batches API (the batch lane) ---------------------------------------------
    def entry_size(self, custom_id: str, request: CallRequest) -> int:
        """Bytes the request adds to a provider batch's create body (the module's `entry_size`)."""
        return entry_size(custom_id, request)

    def create_batch(self, items: Sequence[tuple[str, CallRequest]]) -> BatchInfo:
        """One provider batch of `(custom_id, request)` pairs; each request's body is the one `call`
        sends (`message_body`). A refused create raises RetryableError or PermanentError."""
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            requests: Any = [batch_entry(cid, req) for cid, req in items]  # the SDK's TypedDicts, as plain dicts
            batch = client.messages.batches.create(requests=requests)
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc
        return batch_info(batch)

    def retrieve_batch(self, batch_id: str) -> BatchInfo:
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            return batch_info(client.messages.batches.retrieve(batch_id))
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc

    def cancel_batch(self, batch_id: str) -> BatchInfo:
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            return batch_info(client.messages.batches.cancel(batch_id))
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc

    def list_batches(self, created_after: dt.datetime) -> list[BatchInfo]:
        """The provider batches of this key created after `created_after`, newest first (the list is
        paged newest first, so reading stops at the first older one)."""
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        found: list[BatchInfo] = []
        try:
            for batch in client.messages.batches.list(limit=100):
                info = batch_info(batch)
                if info.created_at is not None and info.created_at < created_after:
                    break
                found.append(info)
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc
        return found

    def batch_results(self, batch_id: str) -> Iterator[BatchLine]:
        """The result lines of an ended batch, streamed (the file may be large), each mapped to a
        BatchLine: succeeded -> its CallResult; errored -> RetryableError or PermanentError by the
        error's type; canceled and expired -> the kind alone."""
        client = _client(self.api_key, self.base_url, self.timeout_s, os.getpid())
        try:
            for line in client.messages.batches.results(batch_id):
                yield result_line(line)
        except anthropic.AnthropicError as exc:
            raise translate(exc) from exc


@dataclass(frozen=True)
class BatchInfo:
    """What chorus keeps of a provider batch: its id, processing_status (in_progress, canceling, ended),
    its request counts, and when it ended."""

    id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    ended_at: dt.datetime | None = None
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class BatchLine:
    """One line of a batch's results: `kind` is succeeded, errored, canceled or expired; `result` is set
    for succeeded, `error` for errored."""

    custom_id: str
    kind: str
    result: CallResult | None = None
    error: ProviderError | None = None


def batch_entry(custom_id: str, request: CallRequest) -> dict[str, Any]:
    """One request of a Message Batches create: the custom_id and the same body a single call sends
    (tags travel in the custom_id; a batch request has no headers of its own)."""
    return {"custom_id": custom_id, "params": message_body(request)}


def entry_size(custom_id: str, request: CallRequest) -> int:
    """Bytes the request adds to a batch's JSON body (the 256 MB limit counts the body), plus a comma."""
    return len(json.dumps(batch_entry(custom_id, request), separators=(",", ":")).encode()) + 1


def batch_info(batch: Any) -> BatchInfo:
    counts = batch.request_counts
    return BatchInfo(
        id=batch.id,
        status=batch.processing_status,
        counts={k: int(getattr(counts, k, 0) or 0) for k in ("processing", "succeeded", "errored", "canceled",
                                                              "expired")} if counts is not None else {},
        ended_at=batch.ended_at,
        created_at=getattr(batch, "created_at", None),
    )


# Error types of an errored batch request that another attempt may get past (Anthropic's error types:
# api_error 500, overloaded_error 529, rate_limit_error 429, timeout_error/gateway_timeout 504); every
# other type (invalid_request_error, authentication_error, permission_error, not_found_error,
# billing_error, request_too_large) is permanent.
RETRYABLE_ERROR_TYPES = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error",
                                   "gateway_timeout_error"})


def result_line(line: Any) -> BatchLine:
    """A results-file line (the SDK's MessageBatchIndividualResponse) as a BatchLine."""
    result = line.result
    kind = str(result.type)
    if kind == "succeeded":
        return BatchLine(line.custom_id, kind, result=message_result(result.message, None, {}, result.message.id))
    if kind == "errored":
        return BatchLine(line.custom_id, kind, error=errored_error(result.error))
    return BatchLine(line.custom_id, kind)


def errored_error(response: Any) -> ProviderError:
    """The ErrorResponse of an errored batch request as a chorus error (the one boundary, as `translate`)."""
    inner = getattr(response, "error", None)
    kind = str(getattr(inner, "type", None) or "error")
    message = str(getattr(inner, "message", None) or "no message")
    request_id = getattr(response, "request_id", None)
    text = f"batch request errored: {kind}: {message}"
    if kind in RETRYABLE_ERROR_TYPES:
        return RetryableError(text, request_id=request_id)
    return PermanentError(f"{text} (the request was refused; retrying will not help)", request_id=request_id)


def message_result(response: Any, model: str | None, rate_limit: dict[str, float], request_id: str | None
                   ) -> CallResult:
    """A Message (a call's response, or a succeeded batch request's message, whose id stands for the
    request id a batch request does not have) as a CallResult."""
    usage = response.usage
    return CallResult(
        text="".join(block.text for block in response.content if block.type == "text"),
        model=response.model or model or "",
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        ),
        stop_reason=response.stop_reason,
        request_id=request_id,
        rate_limit=rate_limit,
    )
