"""The Anthropic provider's Message Batches methods: the request body is the single call's, results map
onto chorus's error tree; driven through the real SDK against the stub's batches endpoints."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse

from chorus.testing.stub.testing import StubHandle, running_stub
from providers.anthropic_provider import (
    AnthropicProvider,
    BatchLine,
    batch_entry,
    build_params,
    entry_size,
    message_body,
    result_line,
)
from providers.offline import OfflineProvider
from workflows.calls import CallRequest
from workflows.errors import ConfigError, PermanentError, RetryableError

LONG_PREFIX = "A shared instruction block that every voter reads. " * 400  # well above Haiku's cache minimum


def request(text: str = "I loved this kettle. Great.", ttl: str = "5m", model: str = "claude-haiku-4-5") -> CallRequest:
    return CallRequest(model=model, system="Classify the review.", user_blocks=(LONG_PREFIX, text), max_tokens=64,
                       cache_blocks=1, tags=(("run", "r1"), ("slot", "0")), cache_ttl=ttl)


def test_a_lane_request_marks_its_prefix_with_the_one_hour_ttl_and_a_sync_one_without_a_ttl():
    assert message_body(request(ttl="1h"))["messages"][0]["content"][0]["cache_control"] == {
        "type": "ephemeral", "ttl": "1h"}
    assert message_body(request())["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_a_batch_entry_carries_the_single_calls_body_without_headers():
    params = build_params(request())
    entry = batch_entry("abc-0", request())
    assert entry["custom_id"] == "abc-0"
    assert entry["params"] == {k: v for k, v in params.items() if k != "extra_headers"}
    assert "extra_headers" not in entry["params"] and "x-chorus-run" in params["extra_headers"]
    assert entry_size("abc-0", request()) > len(LONG_PREFIX)
    assert entry_size("abc-0", request("x" * 1000)) - entry_size("abc-0", request("")) == 1000


def line(result: dict) -> MessageBatchIndividualResponse:
    return MessageBatchIndividualResponse.model_validate({"custom_id": "run-3", "result": result})


@pytest.mark.parametrize(("kind", "expected"), [
    ("api_error", RetryableError), ("overloaded_error", RetryableError), ("rate_limit_error", RetryableError),
    ("invalid_request_error", PermanentError), ("authentication_error", PermanentError),
    ("permission_error", PermanentError), ("not_found_error", PermanentError),
])
def test_an_errored_result_maps_onto_the_error_tree_by_its_type(kind, expected):
    mapped = result_line(line({"type": "errored", "error": {"type": "error", "request_id": "req_1",
                                                             "error": {"type": kind, "message": "boom"}}}))
    assert mapped.kind == "errored" and mapped.result is None
    assert type(mapped.error) is expected
    assert kind in str(mapped.error) and "boom" in str(mapped.error)


@pytest.mark.parametrize("kind", ["expired", "canceled"])
def test_expired_and_canceled_results_carry_only_their_kind(kind):
    assert result_line(line({"type": kind})) == BatchLine("run-3", kind)


def test_a_succeeded_result_becomes_the_call_result_a_single_call_would_give():
    mapped = result_line(line({"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Answer: positive"}], "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 5, "cache_creation_input_tokens": 300,
                  "cache_read_input_tokens": 0}}}))
    assert mapped.kind == "succeeded" and mapped.error is None
    assert mapped.result is not None
    assert mapped.result.text == "Answer: positive"
    assert (mapped.result.usage.input_tokens, mapped.result.usage.output_tokens,
            mapped.result.usage.cache_creation_input_tokens) == (11, 5, 300)
    assert mapped.result.request_id == "msg_1"


def test_the_offline_provider_refuses_the_batch_lane_naming_the_fix():
    with pytest.raises(ConfigError, match="CHORUS_PROVIDER=anthropic"):
        OfflineProvider().create_batch([("a-0", request())])


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubHandle]:
    with running_stub() as handle:
        yield handle


def wait_ended(provider: AnthropicProvider, batch_id: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while provider.retrieve_batch(batch_id).status != "ended":
        assert time.monotonic() < deadline, "the batch never ended"
        time.sleep(0.05)


def test_a_batch_goes_through_the_stub_and_its_results_map_back_by_custom_id(stub_server):
    stub_server.reset()
    stub_server.batch_config(delay_ms=50, rules=[{"custom_id": "r1-1", "result": "expired", "times": 1},
                                                 {"custom_id": "r1-2", "result": "errored", "times": 1}])
    provider = AnthropicProvider(api_key="test-key", base_url=stub_server.base_url, timeout_s=10)
    items = [(f"r1-{i}", dataclasses.replace(request(f"review {i}: I loved it."), cache_ttl="1h")) for i in range(3)]
    info = provider.create_batch(items)
    assert info.status == "in_progress" and info.id
    wait_ended(provider, info.id)
    lines = {ln.custom_id: ln for ln in provider.batch_results(info.id)}
    assert set(lines) == {"r1-0", "r1-1", "r1-2"}
    assert lines["r1-0"].kind == "succeeded" and lines["r1-0"].result is not None
    assert lines["r1-0"].result.usage.output_tokens > 0
    assert lines["r1-1"].kind == "expired"
    assert lines["r1-2"].kind == "errored" and isinstance(lines["r1-2"].error, RetryableError)
    assert provider.retrieve_batch(info.id).counts["succeeded"] == 1


def test_cancelling_a_batch_before_it_is_processed_cancels_its_requests(stub_server):
    stub_server.reset()
    stub_server.batch_config(delay_ms=5000)
    provider = AnthropicProvider(api_key="test-key", base_url=stub_server.base_url, timeout_s=10)
    info = provider.create_batch([("r2-0", request())])
    assert provider.cancel_batch(info.id).status in ("canceling", "ended")
    wait_ended(provider, info.id)
    assert [ln.kind for ln in provider.batch_results(info.id)] == ["canceled"]


def test_an_unknown_batch_is_a_permanent_error(stub_server):
    provider = AnthropicProvider(api_key="test-key", base_url=stub_server.base_url, timeout_s=10)
    with pytest.raises(PermanentError, match="404"):
        provider.retrieve_batch("msgbatch_does_not_exist")
