"""The stub in this process, for unit tests: an httpx transport that hands each request to the stub's
own answer path (`server.post_message`, `server.count_tokens`), with no socket and no thread.

    state = StubState()
    client = stub_client(state)          # a real anthropic.Anthropic, answered by the stub
    client.messages.create(...)
    state.log()                          # the request log, as GET /_stub/requests shows it

It answers `POST /v1/messages` and `POST /v1/messages/count_tokens`, the same steps in the same order as
the HTTP server (the request-size limit, validation, fault rules and mix, the prompt cache, the rate
limit, the latency, the answer). The Files API, the Message Batches API and the admin routes need the
HTTP server (`testing.running_stub`, or `server.make_server` on a thread): here they are a 404 saying so.
The transport answers on the caller's thread, so a configured latency or hang blocks the caller.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2

from chorus.testing.stub.answering import (
    INVALID_JSON,
    StubState,
    count_tokens,
    error_body,
    new_request_id,
    post_message,
)

BASE_URL = "http://stub.invalid"  # never resolved: the transport answers before any connection


class StubTransport(httpx2.BaseTransport):
    """Answers the anthropic SDK's requests from a `StubState`, in the calling thread."""

    def __init__(self, state: StubState) -> None:
        self.state = state

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        raw = request.read()
        status: int
        payload: dict[str, Any]
        headers: dict[str, str] = {}
        limit = self.state.max_request_bytes
        if request.method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens") and len(raw) > limit:
            what = "the Messages API" if path == "/v1/messages" else "the Token Counting API"
            status, payload = 413, error_body(413, f"Request exceeds the maximum allowed number of bytes: {what} "
                                                    f"takes at most {limit:,} bytes, this request has {len(raw):,}",
                                               new_request_id())
        elif request.method == "POST" and path == "/v1/messages":
            status, payload, headers, _ = post_message(self.state, _parse(raw), request.headers)
        elif request.method == "POST" and path == "/v1/messages/count_tokens":
            status, payload = count_tokens(self.state, _parse(raw), request.headers.get("anthropic-version"))
        else:
            status, payload = 404, error_body(404, f"the in-process stub answers only POST /v1/messages and "
                                                    f"/v1/messages/count_tokens, not {request.method} {path}; use "
                                                    f"the HTTP stub (chorus.testing.stub.testing.running_stub)",
                                               new_request_id())
        return httpx2.Response(status, headers=headers, json=payload, request=request)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return INVALID_JSON


def stub_client(state: StubState | None = None, **options: Any) -> anthropic.Anthropic:
    """A real `anthropic.Anthropic` client whose requests the stub answers in this process (a fresh
    `StubState` unless one is given). `options` go to the client (e.g. `timeout`); the SDK's own retries
    are off, as chorus's provider has them."""
    options.setdefault("max_retries", 0)
    http_client = httpx2.Client(transport=StubTransport(state if state is not None else StubState()))
    return anthropic.Anthropic(api_key="test-key", base_url=BASE_URL, http_client=http_client, **options)
