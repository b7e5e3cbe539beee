"""The stub in this process (`inprocess.StubTransport`): a real anthropic client answered by the stub's own
answer path, with no socket (these tests are in the fast lane, whose guard fails any connection: see
tests/lanes.py) and no thread."""

from __future__ import annotations

import threading
from typing import Any

import anthropic
import pytest

from chorus.testing.stub.answering import FaultRule, StubState
from chorus.testing.stub.tokenizer import count_request

MESSAGES: list[Any] = [{"role": "user", "content": "I love this kettle. Is the review positive or negative?"}]


def test_a_message_is_answered_logged_and_billed_by_the_stubs_own_count(stub_client, stub_state):
    threads = threading.active_count()
    reply = stub_client.messages.create(model="claude-haiku-4-5", max_tokens=64, system="Classify.",
                                        messages=MESSAGES, extra_headers={"x-chorus-run": "r1", "x-chorus-slot": "2"})
    assert reply.type == "message" and reply.content and reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens == count_request({"system": "Classify.", "messages": MESSAGES})
    assert reply._request_id is not None and reply._request_id.startswith("req_")
    (logged,) = stub_state.log()
    assert (logged["run"], logged["slot"], logged["status"]) == ("r1", "2", 200)
    assert logged["request_id"] == reply._request_id and logged["body"]["system"] == "Classify."
    assert threading.active_count() == threads


def test_count_tokens_is_what_the_message_bills(stub_client):
    counted = stub_client.messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES).input_tokens
    billed = stub_client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES).usage
    assert counted == billed.input_tokens > 0


def test_fault_rules_and_validation_answer_as_over_http(stub_client, stub_state):
    stub_state.set_rules([FaultRule.parse("slot=3:429:retry_after=2")])
    with pytest.raises(anthropic.RateLimitError) as limited:
        stub_client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES,
                                    extra_headers={"x-chorus-slot": "3"})
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        stub_client.messages.create(model="claude-haiku-4-5", max_tokens=-1, messages=MESSAGES)
    assert [e["status"] for e in stub_state.log()] == [429, 400]


def test_a_body_over_the_request_limit_is_a_413(stub_state, stub_client):
    stub_state.set_limits({"max_request_bytes": 200})
    with pytest.raises(anthropic.APIStatusError) as refused:
        stub_client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES * 4)
    assert refused.value.status_code == 413 and "at most 200 bytes" in str(refused.value)


def test_a_route_it_does_not_serve_is_a_404_naming_the_http_stub(stub_client):
    with pytest.raises(anthropic.NotFoundError, match="running_stub"):
        stub_client.files.list()


def test_two_clients_on_one_state_share_its_log_and_cache():
    from chorus.testing.stub.inprocess import stub_client

    state = StubState()
    for client in (stub_client(state), stub_client(state)):
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
    assert len(state.log()) == 2
