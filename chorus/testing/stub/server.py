"""A local HTTP server that speaks enough of the Messages API for the real `anthropic` SDK.

It is chorus's model of Anthropic, written from Anthropic's documentation and never from chorus's
own estimates, tables or limiter (see `tokenizer`, `cache` and `ratelimit`, each citing its page).
Only the answer *text* comes from chorus: `providers.offline.answer` is the stub's "model".

This module is the HTTP layer and the command line; the state and the answer path are `answering`
(shared with the in-process transport, `inprocess`). One request to `POST /v1/messages` goes through
these steps, in order:

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
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chorus.testing.stub.answering import (
    INVALID_JSON,
    FaultRule,
    StubState,
    count_tokens,
    error_body,
    new_request_id,
    post_message,
)
from chorus.testing.stub.batches import (
    MAX_BODY_BYTES,
    BatchConfig,
    BatchError,
)
from chorus.testing.stub.documents import MAX_REQUEST_BYTES
from chorus.testing.stub.faults import FaultMix
from chorus.testing.stub.files import MAX_UPLOAD_BYTES, FileError
from chorus.testing.stub.ratelimit import StubLimiter, add_reliability_options, reliability_from_args

# API version 2026-10-21 rejects sampling parameters on every model. The rejection keys on the
# `anthropic-version` header because that is what decides it at Anthropic: anthropic SDK 2.x always
# sends `anthropic-version: 2026-10-21` (anthropic._constants.ANTHROPIC_API_VERSION), while a raw
# client on 2023-06-01 may still send them to the models that take them.
DRAIN_LIMIT_BYTES = 1024 * 1024 * 1024  # a refused body up to this size is read (and dropped) before the 413
DRAIN_TIMEOUT_S = 2.0


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
            self._send(413, error_body(413, message, new_request_id()), headers)

    def _files_api(self, method: str, path: str, query: Mapping[str, list[str]]) -> bool:
        """Answer a Files API route; False when `path` is none of them."""
        parts = path.rstrip("/").split("/")[1:]  # ["v1", "files", id?, "content"?]
        if parts[:2] != ["v1", "files"] or len(parts) > 4:
            return False
        file_id, action = (parts[2:] + ["", ""])[:2]
        store = self.server.state.files
        request_id = new_request_id()
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
            self._send(exc.status, error_body(exc.status, exc.message, request_id, exc.details), sent)
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
        request_id = new_request_id()
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
            self._send(exc.status, error_body(exc.status, exc.message, request_id), sent)
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
                self._send(404, error_body(404, f"no route GET {self.path}", new_request_id()))

    def do_DELETE(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._batch_api("DELETE", url.path, query) and not self._files_api("DELETE", url.path, query):
            self._send(404, error_body(404, f"no route DELETE {self.path}", new_request_id()))

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
            self._send(413, error_body(413, message, new_request_id()), {"connection": "close"})
            return
        body, ok = self._read_json()
        if url.path == "/v1/messages":
            self._messages(body if ok else INVALID_JSON)
        elif url.path == "/v1/messages/count_tokens":
            self._count_tokens(body if ok else INVALID_JSON)
        elif self.path == "/_stub/rules":
            try:
                if not isinstance(body, list):
                    raise ValueError("expected a JSON list of rules")
                self.server.state.set_rules([FaultRule.from_json(r) for r in body])
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, error_body(400, str(exc), new_request_id()))
                return
            self._send(200, self.server.state.rules())
        elif self.path == "/_stub/reset":
            self.server.state.reset()
            self._send(200, {"ok": True})
        elif self.path == "/_stub/batches":
            try:
                config = self.server.state.batches.configure(body if ok else None)
            except ValueError as exc:
                self._send(400, error_body(400, str(exc), new_request_id()))
                return
            self._send(200, config)
        elif self.path == "/_stub/latency":
            self._set_latency(body if ok else None)
        elif self.path == "/_stub/limits":
            try:
                self._send(200, self.server.state.set_limits(body if ok else None))
            except ValueError as exc:
                self._send(400, error_body(400, str(exc), new_request_id()))
        elif url.path.startswith("/v1/messages/batches"):
            if not ok:
                self._send(400, error_body(400, "request body is not valid JSON", new_request_id()))
            elif not self._batch_api("POST", url.path, parse_qs(url.query), body):
                self._send(404, error_body(404, f"no route POST {self.path}", new_request_id()))
        else:
            self._send(404, error_body(404, f"no route POST {self.path}", new_request_id()))

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
            self._send(400, error_body(400, "expected {\"latency_ms\": <non-negative number>, "
                                             "\"ms_per_output_token\": <non-negative number>, "
                                             "\"latency_jitter_ms\": <non-negative number>, "
                                             "\"latency_seed\": <integer>, "
                                             "\"ms_per_input_page\": <non-negative number>}", new_request_id()))
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
