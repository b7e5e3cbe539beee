"""The stub server speaks the Messages API, injects faults by rule, and logs every request."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from chorus.testing.stub.server import FaultRule, make_server, serve_forever
from chorus.testing.stub.testing import StubHandle, running_stub


@pytest.fixture(scope="module")
def stub_process() -> Iterator[StubHandle]:
    with running_stub() as handle:
        yield handle


@pytest.fixture
def stub_server(stub_process: StubHandle) -> StubHandle:
    """The module's HTTP stub, reset for each test (a test using it is in the integration lane)."""
    stub_process.reset()
    return stub_process


def message_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You classify documents."}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<labels>\npositive\nnegative\n</labels>\n<document>\nI love it.\n</document>\n"},
            {"type": "text", "text": "<focus>whole</focus>\nReply with one line: Answer: <label>"},
        ]}],
    }
    body.update(overrides)
    return body


def post(stub: StubHandle, body: Any, headers: dict[str, str] | None = None,
         path: str = "/v1/messages", conn: http.client.HTTPConnection | None = None):
    """(status, headers, JSON body) of one POST; `conn` reuses a keep-alive connection."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(stub.host, stub.port, timeout=10)
    try:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=raw, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        if own:
            conn.close()


def slot_headers(slot: int, run: str = "run-1") -> dict[str, str]:
    return {"x-chorus-run": run, "x-chorus-slot": str(slot)}


def test_a_message_gets_a_messages_api_body_and_a_request_id(stub_server):
    status, headers, body = post(stub_server, message_body())
    assert status == 200
    assert headers["request-id"].startswith("req_") and headers["content-type"] == "application/json"
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"].startswith("msg_")
    assert body["content"][0]["type"] == "text" and body["content"][0]["text"].endswith("Answer: positive")
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert set(body["usage"]) == {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                  "cache_read_input_tokens", "cache_creation"}


def test_the_log_counts_requests_per_slot(stub_server):
    for slot in (0, 0, 0, 1, 1, 2):
        post(stub_server, message_body(), slot_headers(slot))
    log = stub_server.requests()
    assert Counter(r["slot"] for r in log) == {"0": 3, "1": 2, "2": 1}
    assert [r["seq"] for r in log] == [1, 2, 3, 4, 5, 6]
    first = log[0]
    assert {"seq", "time", "run", "slot", "model", "status", "latency_ms", "input_tokens",
            "output_tokens"} <= set(first)
    assert first["run"] == "run-1" and first["model"] == "claude-haiku-4-5" and first["status"] == 200
    assert first["input_tokens"] > 0 and first["output_tokens"] > 0


def test_a_request_being_answered_is_in_flight_until_it_enters_the_log(stub_server):
    stub_server.set_latency(400)
    try:
        sender = threading.Thread(target=post, args=(stub_server, message_body(), slot_headers(7, "run-9")))
        sender.start()
        deadline = time.monotonic() + 5
        while not stub_server.inflight() and time.monotonic() < deadline:
            time.sleep(0.01)
        [flying] = stub_server.inflight()
        assert (flying["run"], flying["slot"]) == ("run-9", "7") and flying["request_id"].startswith("req_")
        assert stub_server.requests() == []  # not answered yet
        sender.join(5)
        [logged] = stub_server.requests()
        assert logged["request_id"] == flying["request_id"] and stub_server.inflight() == []
    finally:
        stub_server.set_latency(0)


def test_a_rule_with_times_stops_after_k_matches(stub_server):
    stub_server.set_rules([{"slot": "1", "status": 500, "times": 2}])
    statuses = [post(stub_server, message_body(), slot_headers(1))[0] for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert post(stub_server, message_body(), slot_headers(0))[0] == 200


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (429, "rate_limit_error"),
     (500, "api_error"), (529, "overloaded_error")],
)
def test_injected_errors_have_anthropic_error_bodies(stub_server, status, kind):
    stub_server.set_rules([{"status": status}])
    got, headers, body = post(stub_server, message_body())
    assert got == status
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert ("retry-after" in headers) is (status == 429)


@pytest.mark.integration  # the stub server, a process
def test_rules_from_the_command_line_match_run_and_slot():
    with running_stub(rules=["run=abc,slot=1:429:times=2:retry_after=3"]) as stub:
        other_run = post(stub, message_body(), slot_headers(1, run="xyz"))[0]
        first, headers, _ = post(stub, message_body(), slot_headers(1, run="abc"))
        second = post(stub, message_body(), slot_headers(1, run="abc"))[0]
        third = post(stub, message_body(), slot_headers(1, run="abc"))[0]
    assert (other_run, first, second, third) == (200, 429, 429, 200)
    assert headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("slot=2:500", FaultRule(status=500, slot="2")),
        ("run=abc,slot=1:429:times=2", FaultRule(status=429, run="abc", slot="1", times=2)),
        ("529", FaultRule(status=529)),
        ("*:500:times=1", FaultRule(status=500, times=1)),
        ("slot=0:429:retry_after=0.5", FaultRule(status=429, slot="0", retry_after=0.5)),
    ],
)
def test_fault_rules_parse_from_their_command_line_form(spec, expected):
    assert FaultRule.parse(spec) == expected


@pytest.mark.parametrize("spec", ["slot=2", "slot=2:abc", "slot=2:200", "slot=2:500:times", "colour=red:500"])
def test_bad_fault_rules_are_refused(spec):
    with pytest.raises(ValueError):
        FaultRule.parse(spec)


def test_bad_rules_on_the_admin_api_are_a_400(stub_server):
    status, _, body = post(stub_server, [{"slot": "1"}], path="/_stub/rules")
    assert status == 400 and body["type"] == "error"
    status, _, _ = post(stub_server, {"status": 500}, path="/_stub/rules")
    assert status == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (message_body(model=None), "model"),
        ({k: v for k, v in message_body().items() if k != "max_tokens"}, "max_tokens: Field required"),
        ({k: v for k, v in message_body().items() if k != "messages"}, "messages: Field required"),
        (message_body(messages=[]), "messages"),
        (message_body(max_tokens="64"), "max_tokens"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_malformed_request_is_a_400_invalid_request_error(stub_server, body, message):
    status, headers, error = post(stub_server, body)
    assert status == 400
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]
    assert headers["request-id"].startswith("req_")
    assert stub_server.requests()[-1]["status"] == 400


def test_sampling_parameters_are_refused_under_the_2026_api_version_like_anthropic_does(stub_server):
    body = message_body(temperature=0.5)
    status, _, error = post(stub_server, body, {"anthropic-version": "2026-10-21"})
    assert status == 400 and error["error"]["message"] == "temperature: Extra inputs are not permitted"
    assert post(stub_server, body, {"anthropic-version": "2023-06-01"})[0] == 200


@pytest.mark.integration  # the stub server, a process
def test_latency_is_applied_to_each_answer():
    with running_stub(latency_ms=300) as stub:
        started = time.monotonic()
        status, _, _ = post(stub, message_body())
        elapsed = time.monotonic() - started
        logged = stub.requests()[0]["latency_ms"]
    assert status == 200
    assert elapsed >= 0.3 and logged >= 300


@pytest.mark.integration  # the stub server, a process
def test_latency_jitter_varies_each_answer_within_its_bounds():
    with running_stub(latency_ms=200, extra_args=("--latency-jitter-ms", "100", "--latency-seed", "3")) as stub:
        elapsed = []
        for _ in range(8):
            started = time.monotonic()
            assert post(stub, message_body())[0] == 200
            elapsed.append(time.monotonic() - started)
        logged = stub.requests(bodies=False)
    delays = [e["delay_ms"] for e in logged]
    assert all("body" not in e for e in logged)  # ?bodies=0
    assert len(set(delays)) == len(delays)  # each call drew its own delay
    assert all(100 <= d <= 300 for d in delays)
    assert max(delays) - min(delays) > 20  # spread, not 200 ms give or take rounding
    assert all(e["latency_ms"] >= e["delay_ms"] for e in logged)
    assert all(s * 1000 >= d for s, d in zip(elapsed, delays, strict=True))


def test_latency_jitter_set_through_the_admin_api_repeats_with_its_seed(stub_server):
    def delays() -> list[float]:
        stub_server.set_latency(30, jitter_ms=30, seed=11)
        stub_server.reset()
        for _ in range(5):
            post(stub_server, message_body())
        return [e["delay_ms"] for e in stub_server.requests(bodies=False)]

    try:
        first, again = delays(), delays()
    finally:
        stub_server.set_latency(0)
    assert first == again and len(set(first)) == 5
    assert all(0 <= d <= 60 for d in first)
    status, _, error = post(stub_server, {"latency_ms": 10, "latency_jitter_ms": -1}, path="/_stub/latency")
    assert status == 400 and "latency_jitter_ms" in error["error"]["message"]


def test_one_keep_alive_connection_serves_many_requests(stub_server):
    conn = http.client.HTTPConnection(stub_server.host, stub_server.port, timeout=10)
    try:
        statuses = [post(stub_server, message_body(), conn=conn)[0] for _ in range(3)]
        statuses.append(post(stub_server, b"{bad", conn=conn)[0])
        statuses.append(post(stub_server, message_body(), conn=conn)[0])
    finally:
        conn.close()
    assert statuses == [200, 200, 200, 400, 200]


def test_reset_clears_the_log_and_the_rules(stub_server):
    stub_server.set_rules(["slot=1:500"])
    post(stub_server, message_body(), slot_headers(1))
    stub_server.reset()
    assert stub_server.requests() == []
    assert post(stub_server, message_body(), slot_headers(1))[0] == 200


def test_health_and_unknown_routes(stub_server):
    assert stub_server.health()["ok"] is True
    status, _, body = post(stub_server, {}, path="/v1/complete")
    assert status == 404 and body["error"]["type"] == "not_found_error"


@pytest.mark.integration  # the stub server, a process
def test_running_stub_stops_the_process_even_when_the_body_raises():
    seen: list[StubHandle] = []
    with pytest.raises(RuntimeError, match="boom"), running_stub() as handle:
        seen.append(handle)
        assert handle.health()["pid"] == handle.pid
        raise RuntimeError("boom")
    assert seen[0].exit_code == 0  # a clean SIGTERM shutdown
    with pytest.raises(ProcessLookupError):
        os.kill(seen[0].pid, 0)


@pytest.mark.integration  # the stub server on a thread, a socket
def test_the_server_runs_in_process_until_stopped():
    server = make_server(latency_ms=0, rules=["slot=9:529"])
    stop = threading.Event()
    thread = threading.Thread(target=serve_forever, args=(server, stop), daemon=True)
    thread.start()
    try:
        handle = StubHandle(server.host, server.port, os.getpid())
        assert post(handle, message_body(), slot_headers(9))[0] == 529
        assert post(handle, message_body(), slot_headers(8))[0] == 200
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_the_stub_listens_on_loopback_only(host):
    with pytest.raises(ValueError, match="loopback"):
        make_server(host=host)
