"""A map reply cut at max_tokens before its JSON was complete is sent once more with a larger budget
before its slot fails (tasks/requests.retry_request, tasks/calls.call_again); both calls' usage is the
slot's, and a step with its own max_output_tokens keeps it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

import tasks.calls as calls
from chorus.section import plan_section
from models import OutcomeStatus, repo
from models.tables import OutcomeRole
from settings import Settings
from tasks.requests import build_request, interpret, retry_request
from workflows.calls import CallRequest, CallResult, Usage
from workflows.errors import RetryableError
from workflows.sectioning import RETRY_OUTPUT_FACTOR
from workflows.taskfile import SectionTask, Step

SCHEMA = {"type": "object", "required": ["flags"],
          "properties": {"flags": {"type": "array", "items": {"type": "string"}}}}
DOC = "# One\n-a  all\n\n# Two\n-b  brief\n"
TASK = SectionTask(name="flags", map=Step("List the flags.", output_schema=SCHEMA), merge="concat")
CUT = CallResult(text='{"flags": ["-a", ', model="m", usage=Usage(100, 50), stop_reason="max_tokens")
WHOLE = CallResult(text='{"flags": ["-b"]}', model="m", usage=Usage(100, 8), stop_reason="end_turn")


def claim(role: OutcomeRole = OutcomeRole.SECTION, slot: int = 1) -> repo.Claim:
    return repo.Claim("run1", slot, role, "claude-haiku-5-5", None, None, 1, dt.datetime.now(dt.UTC))


class Provider:
    name = "fake"

    def __init__(self, *replies: CallResult | Exception) -> None:
        self.replies = list(replies)
        self.sent: list[CallRequest] = []

    def call(self, request: CallRequest) -> CallResult:
        self.sent.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch):
    def install(*replies: CallResult | Exception) -> Provider:
        fake = Provider(*replies)
        monkeypatch.setattr(calls, "get_provider", lambda settings: fake)
        monkeypatch.setattr(calls, "take_token", lambda *args: None)
        monkeypatch.setattr(calls, "settle_call", lambda *args: None)
        monkeypatch.setattr(calls, "_run_closed", lambda run_id: False)
        monkeypatch.setattr(calls, "holding", lambda *args: _nothing())
        return fake
    return install


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def test_a_cut_map_reply_gets_one_retry_with_a_larger_budget():
    config = plan_section(DOC, task=TASK).config()
    request = build_request(claim(), config, DOC)
    retry = retry_request(claim(), config, request, CUT)
    assert retry is not None and retry.max_tokens == RETRY_OUTPUT_FACTOR * request.max_tokens
    assert retry.user_blocks == request.user_blocks and retry.output_schema == request.output_schema
    assert retry_request(claim(), config, request, WHOLE) is None  # a whole reply needs none


def test_no_retry_for_a_steps_own_budget_a_synthesis_or_a_voter():
    own = replace(TASK, map=replace(TASK.map, max_output_tokens=50))
    config = plan_section(DOC, task=own).config()
    request = build_request(claim(), config, DOC)
    assert request.max_tokens == 50 and retry_request(claim(), config, request, CUT) is None
    config = plan_section(DOC, task=TASK).config()
    assert retry_request(claim(OutcomeRole.SYNTHESIS), config, request, CUT) is None


def test_the_retry_is_sent_and_its_reply_and_both_usages_are_the_slots(provider):
    fake = provider(WHOLE)
    config = plan_section(DOC, task=TASK).config()
    request = build_request(claim(), config, DOC)
    retry = retry_request(claim(), config, request, CUT)
    assert retry is not None
    result, note = calls.call_again(Settings(), claim(), "task", 15.0, retry, CUT)
    assert note is None and fake.sent == [retry]
    assert result.text == WHOLE.text and result.usage == Usage(200, 58)
    fields = interpret(claim(), config, result)
    assert fields.get("status") is None and fields["error"] is None  # succeeded


def test_a_retry_that_fails_keeps_the_first_reply_and_says_why(provider):
    provider(RetryableError("overloaded", status=529))
    config = plan_section(DOC, task=TASK).config()
    request = build_request(claim(), config, DOC)
    retry = retry_request(claim(), config, request, CUT)
    assert retry is not None
    result, note = calls.call_again(Settings(), claim(), "task", 15.0, retry, CUT)
    assert result is CUT and note is not None
    assert note.startswith(f"sent again with max_tokens {retry.max_tokens}, which failed: overloaded")
    assert interpret(claim(), config, result)["status"] is OutcomeStatus.FAILED
