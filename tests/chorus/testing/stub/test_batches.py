"""The stub's Message Batches API, driven through the real anthropic SDK: create, poll, results, list,
cancel and delete; validation at creation and at processing; the seeded and forced outcomes; the
request log; and usage that matches what `POST /v1/messages` reports for the same params."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from chorus.testing.stub.server import main
from chorus.testing.stub.testing import StubHandle, running_stub

STARTUP_DELAY_MS = 20  # the module's stub processes a batch 20 ms after it is created
POLL_GUARD_S = 30.0  # a batch that has not ended by then is a bug (a guard, not a speed assertion)
LONG_DOC = "The kettle is excellent and quiet. " * 600  # 4,800 stub tokens: above claude-haiku-4-5's 4,096


@pytest.fixture(scope="module")
def stub() -> Iterator[StubHandle]:
    with running_stub(extra_args=("--batch-delay-ms", str(STARTUP_DELAY_MS))) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(stub: StubHandle) -> None:
    stub.reset()


@pytest.fixture
def client(stub: StubHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=stub.base_url, max_retries=0)


def params(document: str = "I love it.", focus: str = "whole", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": "You classify documents.",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": f"<labels>\npositive\nnegative\n</labels>\n<document>\n{document}\n</document>\n"},
            {"type": "text", "text": f"<focus>{focus}</focus>\nReply with one line: Answer: <label>"},
        ]}],
    }
    body.update(overrides)
    return body


def cached_params(focus: str) -> dict[str, Any]:
    body = params(LONG_DOC, focus)
    body["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    return body


def requests_of(*pairs: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"custom_id": custom_id, "params": p} for custom_id, p in pairs]


def wait_ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    deadline = time.monotonic() + POLL_GUARD_S
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.processing_status}"
        time.sleep(0.02)


def run_batch(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Create a batch, wait until it has ended, and return it with its results by custom_id."""
    created = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    ended = wait_ended(client, created.id)
    results = {line.custom_id: line.result for line in client.messages.batches.results(created.id)}
    return ended, results


def outcome(result: Any) -> str:
    """`succeeded`, `expired`, `canceled`, or `errored:<error type>`."""
    return f"errored:{result.error.error.type}" if result.type == "errored" else result.type


def raw(stub: StubHandle, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# ----- the life of a batch ---------------------------------------------------------------------------

def test_a_batch_is_in_progress_then_ends_with_the_answers_of_the_messages_api(stub, client):
    long_id = "x" * 64  # the longest custom_id allowed
    created = client.messages.batches.create(requests=requests_of(  # type: ignore[arg-type]
        ("love", params("I love it.")), ("hate", params("I hate it, it broke.")), (long_id, params("Fine."))))
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.model_dump() == {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0,
                                                   "expired": 0}
    assert created.results_url is None and created.ended_at is None and created.cancel_initiated_at is None
    assert created.archived_at is None
    assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600

    ended = wait_ended(client, created.id)
    assert ended.request_counts.model_dump() == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0,
                                                 "expired": 0}
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.results_url == f"{stub.base_url}/v1/messages/batches/{created.id}/results"

    lines = list(client.messages.batches.results(created.id))
    assert sorted(line.custom_id for line in lines) == sorted(["love", "hate", long_id])
    for line in lines:
        assert line.result.type == "succeeded"
    by_id = {line.custom_id: line.result.message for line in lines}
    for custom_id, document in (("love", "I love it."), ("hate", "I hate it, it broke."), (long_id, "Fine.")):
        direct = client.messages.create(**params(document))
        message = by_id[custom_id]
        assert message.id.startswith("msg_") and message.role == "assistant" and message.model == "claude-haiku-4-5"
        assert [b.text for b in message.content] == [b.text for b in direct.content]  # type: ignore[union-attr]
        assert message.stop_reason == direct.stop_reason
        assert message.usage.service_tier == "batch"
    assert by_id["love"].content[0].text.endswith("Answer: positive")  # type: ignore[union-attr]


def test_results_are_jsonl_and_not_available_before_the_batch_has_ended(stub, client):
    stub.batch_config(delay_ms=60_000)
    batch = client.messages.batches.create(requests=requests_of(("a", params())))
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(batch.id)
    status, _, body = raw(stub, "GET", f"/v1/messages/batches/{batch.id}/results")
    error = json.loads(body)
    assert status == 404 and error["error"]["type"] == "not_found_error"
    assert "in_progress" in error["error"]["message"]

    stub.batch_config(delay_ms=0)
    done = client.messages.batches.create(requests=requests_of(("a", params()), ("b", params("So bad."))))
    wait_ended(client, done.id)
    status, headers, body = raw(stub, "GET", f"/v1/messages/batches/{done.id}/results")
    assert status == 200 and headers["content-type"] == "application/x-jsonl"
    lines = body.decode().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith("\n") for line in lines)
    assert [json.loads(line)["custom_id"] for line in lines] == ["a", "b"]


def test_unknown_batch_ids_are_404_not_found(stub, client):
    for call in (client.messages.batches.retrieve, client.messages.batches.cancel, client.messages.batches.delete):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call("msgbatch_nope")
        assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        assert "msgbatch_nope" in caught.value.message
    status, _, body = raw(stub, "GET", "/v1/messages/batches/msgbatch_nope/results")
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"


# ----- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("requests", "message"), [
    ([], "1 to 100,000 requests"),
    (requests_of(("has space", params())), "does not match"),
    (requests_of(("x" * 65, params())), "does not match"),
    (requests_of(("", params())), "does not match"),
    (requests_of(("dup", params()), ("ok", params()), ("dup", params())), "'dup' is used more than once"),
    ([{"custom_id": "no-params"}], "requests.0.params: Field required"),
    ([{"custom_id": "a", "params": "not an object"}], "requests.0.params"),
])
def test_a_bad_batch_body_is_a_400_and_creates_no_batch(stub, client, requests, message):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert message in caught.value.message
    assert stub.batches() == []


def test_a_batch_holds_at_most_100000_requests(stub, client):
    stub.batch_config(delay_ms=60_000)  # accepted batches are canceled before anything is processed
    over = [{"custom_id": f"r{i}", "params": {}} for i in range(100_001)]
    status, _, body = raw(stub, "POST", "/v1/messages/batches", json.dumps({"requests": over}).encode())
    assert status == 400 and "1 to 100,000 requests, got 100,001" in json.loads(body)["error"]["message"]
    status, _, body = raw(stub, "POST", "/v1/messages/batches", json.dumps({"requests": over[:-1]}).encode())
    assert status == 200
    batch = json.loads(body)
    assert batch["request_counts"]["processing"] == 100_000
    client.messages.batches.cancel(batch["id"])
    assert wait_ended(client, batch["id"]).request_counts.canceled == 100_000


def test_a_body_over_256_mb_is_refused_unread_with_413(stub):
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/messages/batches")
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(256 * 1024 * 1024 + 1))
        conn.endheaders()  # no body is sent: the stub answers from the header alone
        response = conn.getresponse()
        error = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413 and error["error"]["type"] == "request_too_large"
    assert "256 MB" in error["error"]["message"]
    assert stub.health()["ok"] and stub.batches() == []


def test_params_are_validated_when_processed_and_an_invalid_one_ends_errored(stub, client):
    no_messages = params()
    del no_messages["messages"]
    ended, results = run_batch(client, requests_of(
        ("good", params()),
        ("no-messages", no_messages),
        ("sampling", params(temperature=0.5)),  # refused under the SDK's anthropic-version 2026-10-21
        ("prewarm", params(max_tokens=0)),  # fine for /v1/messages, not inside a batch
        ("streaming", params(stream=True)),
        ("bad-cache", params(cache_control={"type": "persistent"})),
        ("good-2", params("Terrible.")),
    ))
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 5
    assert results["good"].type == results["good-2"].type == "succeeded"
    expected = {"no-messages": "messages: Field required", "sampling": "temperature: Extra inputs are not permitted",
                "prewarm": "max_tokens: must be at least 1", "streaming": "stream:",
                "bad-cache": "cache_control: type must be 'ephemeral'"}
    for custom_id, message in expected.items():
        result = results[custom_id]
        assert outcome(result) == "errored:invalid_request_error", custom_id
        assert result.error.type == "error" and message in result.error.error.message, custom_id
    # the same max_tokens 0 body is a valid Messages API request on its own
    assert client.messages.create(**params(max_tokens=0)).stop_reason == "max_tokens"


# ----- outcomes: seeded shares and forcing rules -------------------------------------------------------

def outcomes_with(stub: StubHandle, client: anthropic.Anthropic, n: int, **knobs: Any) -> dict[str, str]:
    stub.batch_config(**knobs)
    _, results = run_batch(client, requests_of(*[(f"r{i}", params()) for i in range(n)]))
    return {custom_id: outcome(result) for custom_id, result in results.items()}


def test_seeded_shares_of_errored_and_expired_are_reproducible(stub, client):
    first = outcomes_with(stub, client, 60, errored=0.25, expired=0.25, seed=11)
    log = stub.requests(bodies=False)
    again = outcomes_with(stub, client, 60, seed=11)  # setting the config restarts the draws
    other = outcomes_with(stub, client, 60, seed=12)
    assert again == first and other != first
    kinds = Counter(first.values())
    assert set(kinds) == {"succeeded", "expired", "errored:api_error", "errored:overloaded_error"}
    assert 5 <= kinds["expired"] <= 25 and 5 <= kinds["errored:api_error"] + kinds["errored:overloaded_error"] <= 25
    # expired requests were never processed: only the succeeded and errored ones reached the log
    assert {e["custom_id"] for e in log} == {c for c, o in first.items() if o != "expired"}
    assert {e["status"] for e in log if e["result"] == "errored"} <= {500, 529}
    assert {e["fault"] for e in log if e["result"] == "errored"} == {"api_error", "overloaded_error"}


def test_a_resent_request_gets_a_fresh_draw(stub, client):
    stub.batch_config(errored=0.5, seed=3)
    _, first = run_batch(client, requests_of(*[(f"r{i}", params()) for i in range(20)]))
    failed = sorted(c for c, r in first.items() if r.type == "errored")
    assert failed
    _, second = run_batch(client, requests_of(*[(c, params()) for c in failed]))
    assert any(r.type == "succeeded" for r in second.values())


def test_a_forced_expired_request_expires_once_and_succeeds_when_resent(stub, client):
    config = stub.batch_config(rules=[{"custom_id": "doc-2", "result": "expired", "times": 1}])
    assert config["rules"][0]["result"] == "expired" and config["delay_ms"] == STARTUP_DELAY_MS
    ended, results = run_batch(client, requests_of(("doc-1", params()), ("doc-2", params()), ("doc-3", params())))
    assert {c: outcome(r) for c, r in results.items()} == {"doc-1": "succeeded", "doc-2": "expired",
                                                           "doc-3": "succeeded"}
    assert ended.request_counts.expired == 1 and ended.request_counts.succeeded == 2
    _, resent = run_batch(client, requests_of(("doc-2", params())))
    assert outcome(resent["doc-2"]) == "succeeded"
    assert Counter(e["custom_id"] for e in stub.requests(bodies=False)) == {"doc-1": 1, "doc-2": 1, "doc-3": 1}


def test_a_rule_on_a_chorus_slot_forces_an_error_of_the_given_type(stub, client):
    run = uuid.uuid4().hex
    stub.batch_config(rules=[{"slot": "2", "result": "errored", "error": "overloaded_error", "times": 1}])
    _, results = run_batch(client, requests_of(*[(f"{run}-{slot}", params()) for slot in range(4)]))
    assert {c: outcome(r) for c, r in results.items()} == {
        f"{run}-0": "succeeded", f"{run}-1": "succeeded", f"{run}-2": "errored:overloaded_error",
        f"{run}-3": "succeeded"}
    errored = [e for e in stub.requests(bodies=False) if e["slot"] == "2"]
    assert len(errored) == 1 and errored[0]["status"] == 529 and errored[0]["run"] == run


@pytest.mark.parametrize(("knobs", "message"), [
    ({"errored": 2}, "errored must be between 0 and 1"),
    ({"errored": 0.6, "expired": 0.6}, "is more than 1"),
    ({"delay_ms": -1}, "delay_ms must be at least 0"),
    ({"seed": "x"}, "seed must be an integer"),
    ({"colour": 1}, "unknown key(s) ['colour']"),
    ({"rules": [{"custom_id": "a", "result": "lost"}]}, "result must be 'errored' or 'expired'"),
    ({"rules": [{"result": "errored", "error": "teapot_error"}]}, "error must be one of"),
    ({"rules": [{"result": "expired", "times": 0}]}, "times must be a positive integer"),
])
def test_bad_batch_knobs_are_a_400_naming_the_problem(stub, knobs, message):
    with pytest.raises(urllib.error.HTTPError) as caught:
        stub.batch_config(**knobs)
    assert caught.value.code == 400
    assert message in json.loads(caught.value.read())["error"]["message"]


def test_bad_batch_flags_stop_the_stub_with_a_message(capsys):
    assert main(["--port", "0", "--batch-errored", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "errored must be between 0 and 1, got 1.5" in err and "--batch-" in err


# ----- cancel, delete, list -------------------------------------------------------------------------

def test_cancel_before_processing_cancels_every_request(stub, client):
    stub.batch_config(delay_ms=60_000)
    batch = client.messages.batches.create(requests=requests_of(("a", params()), ("b", params()), ("c", params())))
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.model_dump() == {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 3,
                                                 "expired": 0}
    assert {line.custom_id: line.result.type for line in client.messages.batches.results(batch.id)} == {
        "a": "canceled", "b": "canceled", "c": "canceled"}
    assert stub.requests() == []
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)


def test_a_cancel_racing_the_processing_leaves_every_request_exactly_one_result(stub, client):
    # On a quiet machine the stub can finish 300 requests before the cancel arrives (a 400: only a batch in
    # progress can be canceled); then the race is tried again with a batch ten times the size.
    for size in (300, 3000):
        stub.reset()  # the log, and the batch knobs back to their defaults
        stub.batch_config(delay_ms=0)
        batch = client.messages.batches.create(requests=requests_of(*[(f"r{i}", params()) for i in range(size)]))
        try:
            client.messages.batches.cancel(batch.id)
        except anthropic.BadRequestError as exc:
            assert "already ended" in str(exc)
            wait_ended(client, batch.id)
            continue
        break
    else:
        pytest.fail("every batch ended before its cancel arrived: the race was never run")
    ended = wait_ended(client, batch.id)
    counts = ended.request_counts
    lines = list(client.messages.batches.results(batch.id))
    assert len(lines) == size and len({line.custom_id for line in lines}) == size
    kinds = Counter(line.result.type for line in lines)
    assert kinds == {k: v for k, v in {"succeeded": counts.succeeded, "canceled": counts.canceled}.items() if v}
    assert counts.succeeded + counts.canceled == size
    assert len(stub.requests(bodies=False)) == counts.succeeded  # canceled requests never reached the log


def test_delete_needs_an_ended_batch(stub, client):
    stub.batch_config(delay_ms=60_000)
    waiting = client.messages.batches.create(requests=requests_of(("a", params())))
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        client.messages.batches.delete(waiting.id)
    client.messages.batches.cancel(waiting.id)
    wait_ended(client, waiting.id)
    deleted = client.messages.batches.delete(waiting.id)
    assert deleted.id == waiting.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(waiting.id)


def test_the_list_is_newest_first_and_pages_like_the_sdk_expects(stub, client):
    stub.batch_config(delay_ms=60_000)
    created = [client.messages.batches.create(requests=requests_of((f"r{i}", params()))).id for i in range(5)]
    newest_first = created[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True and page.first_id == newest_first[0] and page.last_id == newest_first[1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # the SDK follows after_id
    assert [b.id for b in client.messages.batches.list()] == newest_first
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more is True
    last = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and last.has_more is False
    for bad in ({"limit": 0}, {"limit": 1001}, {"after_id": "msgbatch_nope"}):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(**bad)


# ----- what a batch shares with the Messages API ---------------------------------------------------------

def test_the_log_has_one_entry_per_processed_request_with_batch_and_custom_id(stub, client):
    run = uuid.uuid4().hex
    requests = requests_of(*[(f"{run}-{slot}", params(f"Document {slot}.")) for slot in range(3)], ("plain", params()))
    ended, _ = run_batch(client, requests)
    log = stub.requests()
    assert len(log) == 4
    by_id = {e["custom_id"]: e for e in log}
    for slot in range(3):
        entry = by_id[f"{run}-{slot}"]
        assert (entry["batch"], entry["run"], entry["slot"]) == (ended.id, run, str(slot))
        assert entry["body"] == requests[slot]["params"] and entry["status"] == 200
        assert entry["result"] == "succeeded" and entry["output_tokens"] > 0 and entry["request_id"].startswith("req_")
        assert entry["anthropic_version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert (by_id["plain"]["run"], by_id["plain"]["slot"]) == (None, None)


def test_batch_usage_is_what_the_messages_api_reports_for_the_same_params(stub, client):
    writer, reader = cached_params("whole"), cached_params("opening")  # same cached prefix, different tails
    direct = [client.messages.create(**p).usage.model_dump() for p in (writer, reader)]
    assert direct[0]["cache_creation_input_tokens"] > 0 and direct[0]["cache_read_input_tokens"] == 0
    assert direct[1]["cache_read_input_tokens"] == direct[0]["cache_creation_input_tokens"]

    stub.reset()  # an empty cache again: the batch's first request writes, its second reads
    _, results = run_batch(client, requests_of(("writer", writer), ("reader", reader)))
    batched = [results[c].message.usage.model_dump() for c in ("writer", "reader")]
    for usage in batched:
        assert usage.pop("service_tier") == "batch"
    for usage in direct:
        assert usage.pop("service_tier") is None  # the stub's /v1/messages reports no tier
    assert batched == direct
    log = {e["custom_id"]: e for e in stub.requests(bodies=False)}
    assert log["writer"]["cache_write_tokens"] == direct[0]["cache_creation_input_tokens"]
    assert log["reader"]["cache_read_tokens"] == direct[1]["cache_read_input_tokens"]

    # and a later /v1/messages call reads the prefix the batch wrote
    again = client.messages.create(**cached_params("closing")).usage
    assert again.cache_read_input_tokens == direct[0]["cache_creation_input_tokens"]


def test_messages_api_rate_limits_and_fault_rules_do_not_apply_to_batch_requests():
    with running_stub(rules=["500"], extra_args=("--rpm", "1", "--batch-delay-ms", "0")) as limited:
        client = anthropic.Anthropic(api_key="test", base_url=limited.base_url, max_retries=0)
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(**params())  # every Messages API call is failed by the rule
        ended, results = run_batch(client, requests_of(*[(f"r{i}", params()) for i in range(5)]))
        assert ended.request_counts.succeeded == 5
        assert all(r.type == "succeeded" for r in results.values())


def test_reset_forgets_batches_and_restores_the_startup_knobs(stub, client):
    stub.batch_config(delay_ms=60_000, errored=0.5, rules=[{"result": "expired"}])
    batch = client.messages.batches.create(requests=requests_of(("a", params())))
    assert [b["id"] for b in stub.batches()] == [batch.id]
    assert stub.batches()[0]["custom_ids"] == ["a"] and stub.batches()[0]["results"] is None
    stub.reset()
    assert stub.batches() == []
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    config = stub.batch_config()
    assert (config["delay_ms"], config["errored"], config["expired"], config["rules"]) == (STARTUP_DELAY_MS, 0, 0, [])
    assert stub.requests() == []
