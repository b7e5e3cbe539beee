"""What a section worker sends and how its reply is read (tasks/requests.py), from the config a plan
stores: the map step's instructions and schema, structured outputs by model, and a failed slot for a
reply that is no result (its usage kept: the call was paid)."""

from __future__ import annotations

import datetime as dt

import pytest

from chorus.section import plan_section
from models import OutcomeStatus, repo
from models.tables import OutcomeRole
from tasks.calls import usage_fields
from tasks.requests import build_request, interpret
from workflows.calls import CallResult, Usage
from workflows.taskfile import SectionTask, Step, closed_schema

SCHEMA = {"type": "object", "required": ["flags"],
          "properties": {"flags": {"type": "array", "items": {"type": "string"}}}}
DOC = "# One\n-a  all\n\n# Two\n-b  brief\n"
TASK = SectionTask(name="flags", map=Step("List the flags.", output_schema=SCHEMA), merge="concat")


def claim(model: str, slot: int = 0, role: OutcomeRole = OutcomeRole.SECTION) -> repo.Claim:
    return repo.Claim("run1", slot, role, model, None, None, 1, dt.datetime.now(dt.UTC))


def reply(text: str, stop: str = "end_turn") -> CallResult:
    return CallResult(text=text, model="m", usage=Usage(input_tokens=120, output_tokens=30), stop_reason=stop)


@pytest.mark.parametrize(("model", "structured"), [("claude-haiku-4-5", True), ("claude-opus-4-1", False)])
def test_a_section_call_sends_the_map_schema_only_to_a_model_with_structured_outputs(model, structured):
    config = plan_section(DOC, task=TASK).config()
    request = build_request(claim(model, slot=1), config, DOC)
    assert "List the flags." in request.user_text and "-b  brief" in request.user_text
    assert "-a  all" not in request.user_text
    assert (request.output_schema == closed_schema(SCHEMA)) is structured  # sent closed, as the API requires
    assert ("<output_schema>" in request.user_text) is not structured


@pytest.mark.parametrize(
    ("text", "stop", "status", "error"),
    [
        ('{"flags": ["-a"]}', "end_turn", None, None),
        ('{"flags": "-a"}', "end_turn", OutcomeStatus.FAILED,
         "the reply does not match the output schema: '-a' is not of type 'array' at flags"),
        ('{"flags": ["-a", ', "max_tokens", OutcomeStatus.FAILED,
         "the reply was cut at max_tokens before the JSON was complete; raise max_output_tokens"),
        ("No.", "refusal", OutcomeStatus.FAILED, "the model declined to answer (stop_reason refusal): No."),
    ],
)
def test_a_map_reply_that_breaks_the_schema_fails_its_slot_with_the_reason(text, stop, status, error):
    config = plan_section(DOC, task=TASK).config()
    fields = interpret(claim("claude-haiku-4-5"), config, reply(text, stop))
    assert fields.get("status") == status  # None: run_slot records it as succeeded
    assert fields["error"] == error
    assert fields["raw_output"] == text


def test_a_free_text_section_reply_is_kept_as_text():
    config = plan_section(DOC, task="translate to French").config()
    fields = interpret(claim("claude-haiku-4-5"), config, reply("Tous les drapeaux."))
    assert "status" not in fields and fields["error"] is None and fields["raw_output"] == "Tous les drapeaux."


def test_a_failed_reply_keeps_the_usage_of_the_paid_call():
    config = plan_section(DOC, task=TASK).config()
    result = reply("not json")
    fields = interpret(claim("claude-haiku-4-5"), config, result) | usage_fields(result)
    assert fields["status"] is OutcomeStatus.FAILED
    assert (fields["input_tokens"], fields["output_tokens"]) == (120, 30)


def test_a_synthesis_uses_the_reduce_steps_own_schema_when_it_has_one():
    merged = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}
    task = SectionTask(name="t", map=Step("List the flags.", output_schema=SCHEMA),
                       reduce=Step("Describe the flags in one sentence.", output_schema=merged))
    config = plan_section(DOC, task=task).config()
    step = claim("claude-haiku-4-5", slot=2, role=OutcomeRole.SYNTHESIS)
    assert interpret(step, config, reply('{"summary": "Two flags."}')).get("status") is None
    assert interpret(step, config, reply('{"flags": []}'))["error"] == (
        "the reply does not match the output schema: 'summary' is a required property at the top level")


def test_a_run_stored_before_task_files_is_still_sent_its_task():
    legacy = {"task": "extract every option", "model": "claude-haiku-4-5", "section_output_tokens": 400,
              "synthesis_output_tokens": 800, "sections": [[0, 14, "One"], [14, len(DOC), "Two"]]}
    request = build_request(claim("claude-haiku-4-5"), legacy, DOC)
    assert "extract every option" in request.user_text and request.output_schema is None
    assert interpret(claim("claude-haiku-4-5"), legacy, reply("-a")).get("status") is None
