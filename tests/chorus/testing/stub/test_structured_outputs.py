"""The stub speaks structured outputs and refuses what the current models refuse, through the real SDK
(answered by the stub in this process: the `stub_client` fixture)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import pytest

from chorus.testing.stub.models import traits
from chorus.testing.stub.outputs import schema_problem
from workflows.taskfile import Label, VoteTask
from workflows.voting import Voter, label_schema, vote_request

LABELS = ("urgent", "normal")
TASK = VoteTask(name="tickets", instructions="You triage support tickets. Decide how urgent the ticket is.",
                labels=(Label("urgent", "the customer cannot work at all, or data is being lost"),
                        Label("normal", "something is broken but there is a workaround")))
TICKET = "Since the update our whole team cannot log in, and orders are being lost."
MAN_SCHEMA = {"type": "object", "required": ["options"], "additionalProperties": False, "properties": {
    "options": {"type": "array", "items": {"type": "object", "required": ["flag", "meaning"],
                                           "additionalProperties": False,
                                           "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}
MAN_SECTION = "-a, --all\n       do not ignore entries starting with .\n-l     use a long listing format\n"


@pytest.fixture
def client(stub_client: anthropic.Anthropic) -> anthropic.Anthropic:
    return stub_client


def create(client: anthropic.Anthropic, **overrides: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {
        "model": "claude-haiku-5-5", "max_tokens": 256, "system": "You list options.",
        "messages": [{"role": "user", "content": f"<section>\n{MAN_SECTION}</section>\n"}],
    }
    params.update(overrides)
    return client.messages.create(**params)


def bad_request(client: anthropic.Anthropic, **overrides: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client, **overrides)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


def text_of(response: anthropic.types.Message) -> str:
    block = response.content[0]
    assert block.type == "text"
    return block.text


def json_format(schema: dict[str, Any] | None) -> dict[str, Any]:
    assert schema is not None
    return {"format": {"type": "json_schema", "schema": schema}}


def test_a_voters_structured_request_round_trips_and_the_log_keeps_the_whole_body(client, stub_state):
    voter = Voter(0, "claude-haiku-5-5", "own", name="cannot-do", prompt="Judge from what they cannot do.")
    request = vote_request(voter, TASK, TICKET, structured=True)
    response = client.messages.create(
        model=request.model, max_tokens=request.max_tokens, system=request.system,
        messages=[{"role": "user", "content": [{"type": "text", "text": b} for b in request.user_blocks]}],
        output_config={"format": {"type": "json_schema", "schema": request.output_schema}, "effort": "low"},
    )
    reply = json.loads(text_of(response))
    jsonschema.validate(reply, label_schema(LABELS))
    assert reply["label"] == "urgent" and reply["reason"] in TICKET
    assert response.stop_reason == "end_turn" and response.usage.output_tokens > 0
    logged = stub_state.log()[-1]
    body = logged["body"]
    assert logged["status"] == 200 and logged["anthropic_version"] == "2026-10-21"
    assert "the customer cannot work at all, or data is being lost" in body["system"]
    assert "<voter>\nJudge from what they cannot do.\n</voter>" in body["messages"][0]["content"][1]["text"]
    assert body["output_config"]["format"]["schema"]["properties"]["label"]["enum"] == list(LABELS)
    assert not {"temperature", "top_p", "top_k"} & set(body)


def test_a_section_schema_is_answered_with_conforming_json(client):
    response = create(client, output_config=json_format(MAN_SCHEMA))
    value = json.loads(text_of(response))
    jsonschema.validate(value, MAN_SCHEMA)
    assert [o["flag"] for o in value["options"]] == ["-a", "-l"]


def test_a_vote_with_no_evidence_is_a_refusal(client):
    request = vote_request(Voter(0, "claude-sonnet-5-5", "direct"), ("sports", "politics"),
                           "The meeting is on Tuesday in room four.", structured=True)
    response = client.messages.create(
        model=request.model, max_tokens=request.max_tokens, system=request.system,
        messages=[{"role": "user", "content": request.user_text}], output_config=json_format(request.output_schema))
    assert response.stop_reason == "refusal" and text_of(response)


def test_a_reply_longer_than_max_tokens_stops_with_max_tokens(client):
    response = create(client, max_tokens=4, output_config=json_format(MAN_SCHEMA))
    assert response.stop_reason == "max_tokens" and response.usage.output_tokens <= 4
    with pytest.raises(ValueError):
        json.loads(text_of(response))


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_a_400_under_the_sdks_api_version(client, name):
    assert bad_request(client, extra_body={name: 0.5}) == f"{name}: Extra inputs are not permitted"


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-5-5", "claude-fable-5-2"])
def test_assistant_prefill_is_a_400_from_the_4_6_models_on(client, model):
    prefill = [{"role": "user", "content": "List the options."}, {"role": "assistant", "content": "{"}]
    message = bad_request(client, model=model, messages=prefill)
    assert message == ("This model does not support assistant message prefill. "
                       "The conversation must end with a user message.")


def test_older_models_still_take_a_prefill(client):
    prefill = [{"role": "user", "content": "List the options."}, {"role": "assistant", "content": "Options:"}]
    assert create(client, model="claude-haiku-4-5", messages=prefill).stop_reason == "end_turn"


TOOL = {"name": "record", "description": "Record the label.",
        "input_schema": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}}


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "record"}, {"type": "any"}])
@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"])
def test_forced_tool_use_is_a_400_on_the_5_5_models(client, model, choice):
    message = bad_request(client, model=model, tools=[TOOL], tool_choice=choice)
    assert "forced tool use" in message and "tool_choice" in message


def test_forced_tool_use_is_still_accepted_before_5_5_and_auto_everywhere(client):
    assert create(client, model="claude-sonnet-4-6", tools=[TOOL], tool_choice={"type": "tool", "name": "record"})
    assert create(client, model="claude-sonnet-5-5", tools=[TOOL], tool_choice={"type": "auto"})


@pytest.mark.parametrize(
    ("output_config", "expected"),
    [
        ({"format": {"type": "json_schema"}}, "output_config.format.schema: Field required"),
        ({"format": {"type": "json", "schema": MAN_SCHEMA}},
         "output_config.format.type: Input should be 'json_schema'"),
        ({"format": {"type": "json_schema", "schema": "object"}},
         "output_config.format.schema: Input should be a valid"),
        ({"format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}}},
         "'additionalProperties' must be explicitly set to false (at the root)"),
        ({"format": {"type": "json_schema", "schema": {**MAN_SCHEMA, "additionalProperties": True}}},
         "'additionalProperties: true' is not supported"),
        (json_format({"type": "object", "additionalProperties": False,
                      "properties": {"n": {"type": "integer", "minimum": 1}}}),
         "'minimum' is not supported (numerical constraints are not supported in structured outputs) "
         "(at properties.n)"),
        (json_format({"type": "array", "items": {"type": "string"}, "maxItems": 3}), "'maxItems' is not supported"),
        (json_format({"type": "array", "items": {"type": "string"}, "minItems": 2}), "'minItems: 2' is not supported"),
        (json_format({"$defs": {"n": {"type": "object", "additionalProperties": False,
                                      "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}),
         "recursive schemas are not supported"),
        (json_format({"$ref": "https://example.com/schema.json"}), "external $ref"),
        (json_format({"enum": [{"a": 1}]}), "complex types within enums"),
        ({"format": {"type": "json_schema", "schema": MAN_SCHEMA}, "effort": "extreme"},
         "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"),
        ({"verbosity": "low"}, "output_config.verbosity: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_output_config_is_a_400_naming_the_problem(client, output_config, expected):
    assert expected in bad_request(client, output_config=output_config)


@pytest.mark.filterwarnings("ignore:The model 'claude-opus-4-5' is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("model", "effort", "accepted"),
    [("claude-haiku-5-5", "xhigh", True), ("claude-opus-4-6", "max", True), ("claude-opus-4-6", "xhigh", False),
     ("claude-opus-4-5", "max", False), ("claude-haiku-4-5", "low", False), ("claude-sonnet-4-5", "high", False),
     ("claude-fable-5-2", "low", True)],
)
def test_effort_is_accepted_only_at_the_levels_a_model_has(client, model, effort, accepted):
    if accepted:
        assert create(client, model=model, output_config={"effort": effort}).stop_reason == "end_turn"
    else:
        assert "output_config.effort" in bad_request(client, model=model, output_config={"effort": effort})


def test_structured_outputs_are_a_400_on_models_before_4_5(client):
    message = bad_request(client, model="claude-opus-4-1", output_config=json_format(MAN_SCHEMA))
    assert "structured outputs are not supported on the model 'claude-opus-4-1'" in message


def test_the_voters_schema_and_the_sdks_own_transform_pass_the_stubs_checks():
    assert schema_problem(label_schema(["urgent", "normal", "R&D <x>"])) is None
    loose = {"type": "object", "required": ["options"], "properties": {
        "options": {"type": "array", "items": {"type": "object", "properties": {"flag": {"type": "string"}}}}}}
    assert schema_problem(loose) is not None
    assert schema_problem(anthropic.transform_schema(loose)) is None


@pytest.mark.parametrize(
    ("model", "family", "version"),
    [("claude-haiku-5-5", "haiku", (5, 5)), ("claude-fable-5-2", "fable", (5, 2)), ("claude-opus-4", "opus", (4, 0)),
     ("claude-sonnet-4-5-20250929", "sonnet", (4, 5)), ("claude-opus-4-20250514", "opus", (4, 0)),
     ("claude-3-5-haiku-latest", "haiku", (3, 5)), ("claude-3-haiku", "haiku", (3, 0))],
)
def test_model_ids_are_read_by_family_and_version(model, family, version):
    got = traits(model)
    assert got is not None and (got.family, got.version) == (family, version)
    assert traits("stub-model") is None
