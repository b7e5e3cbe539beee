"""The user's section task in the pure core: the map and reduce prompts with an output schema, reading a
structured reply, and `merge = "concat"`."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from workflows.sectioning import (
    EFFORT_OUTPUT_TOKENS,
    SECTION_OUTPUT_TOKENS,
    STRUCTURED_OUTPUT_TOKENS,
    SYNTHESIS_OUTPUT_TOKENS,
    Part,
    concat_values,
    json_path,
    output_budget,
    read_section_reply,
    read_structured,
    section_request,
    split,
    synthesis_request,
)

OPTIONS: dict[str, Any] = {
    "type": "object",
    "required": ["options"],
    "properties": {"options": {"type": "array", "items": {
        "type": "object", "required": ["flag", "meaning"],
        "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}},
}
FLAGS = {"type": "array", "items": {"type": "string"}}
DOC = "# A\nalpha text\n# B\n-v  be verbose\n"
MAP = "List every command-line option this section documents."


def second_section() -> tuple:
    sections = split(DOC)
    return sections[1], len(sections)


def test_a_map_request_with_structured_outputs_sends_the_schema_and_the_instructions():
    section, total = second_section()
    request = section_request("claude-haiku-5-5", MAP, section, DOC, total, output_schema=OPTIONS, structured=True,
                              effort="low", max_tokens=1500)
    assert request.output_schema == OPTIONS
    assert request.effort == "low" and request.max_tokens == 1500 and request.model == "claude-haiku-5-5"
    assert MAP in request.user_text
    assert "<section>\n# B\n-v  be verbose\n" in request.user_text and "alpha text" not in request.user_text
    assert "follows the output schema" in request.user_text
    assert "<output_schema>" not in request.user_text  # the API holds the reply to it


def test_a_map_request_without_structured_outputs_writes_the_schema_into_the_prompt():
    section, total = second_section()
    request = section_request("claude-opus-4-1", MAP, section, DOC, total, output_schema=OPTIONS, structured=False)
    assert request.output_schema is None
    written = request.user_text.split("<output_schema>\n", 1)[1].split("\n</output_schema>", 1)[0]
    assert json.loads(written) == OPTIONS
    assert "JSON only" in request.user_text


def test_a_free_text_map_request_asks_for_no_json():
    section, total = second_section()
    request = section_request("m", "Translate to French.", section, DOC, total, structured=True)
    assert request.output_schema is None and request.effort is None
    assert "Translate to French." in request.user_text and "JSON" not in request.user_text


def test_a_reduce_request_carries_its_instructions_the_parts_and_the_schema():
    parts = [Part("section 1: A", '{"options": []}'), Part('section 2: "B"', '{"options": [{"flag": "-v"}]}')]
    request = synthesis_request("claude-sonnet-5-5", "Merge the lists, drop duplicates.", parts, missing=[3],
                                output_schema=OPTIONS, structured=True, effort="medium")
    text = request.user_text
    assert "Merge the lists, drop duplicates." in text
    assert text.index('<part n="1"') < text.index('<part n="2"') < text.index("</synthesis>")
    assert 'label="section 2: &quot;B&quot;"' in text  # a title cannot break the part's tag
    assert "section 3 missing" in text
    assert request.output_schema == OPTIONS and request.effort == "medium"


@pytest.mark.parametrize(
    ("text", "stop", "value", "error"),
    [
        ('{"options": [{"flag": "-v", "meaning": "verbose"}]}', "end_turn",
         {"options": [{"flag": "-v", "meaning": "verbose"}]}, None),
        ('```json\n{"options": []}\n```', "end_turn", {"options": []}, None),
        ('{"options": [', "max_tokens", None,
         "the reply was cut at max_tokens before the JSON was complete; raise max_output_tokens"),
        ("I can't help with that.", "refusal", None,
         "the model declined to answer (stop_reason refusal): I can't help with that."),
        ('{"options": [{"flag": "-a", "meaning": "all"}, {"flag": "-b", "meaning": "b"}, {"meaning": "c"}]}',
         "end_turn", None, "the reply does not match the output schema: 'flag' is a required property at options[2]"),
        ('{"options": "none"}', "end_turn", None,
         "the reply does not match the output schema: 'none' is not of type 'array' at options"),
        ("[]", "end_turn", None, "the reply does not match the output schema: [] is not of type 'object' at the "
                                 "top level"),
    ],
)
def test_a_structured_reply_is_a_result_only_when_it_is_complete_json_that_fits_the_schema(text, stop, value, error):
    assert read_structured(text, OPTIONS, stop) == (value, error)


def test_a_reply_that_is_not_json_names_the_parse_error():
    value, error = read_structured("Options: -v, -q", OPTIONS, "end_turn")
    assert value is None
    assert error is not None and error.startswith("the reply is not valid JSON (Expecting value")
    assert error.endswith(": Options: -v, -q")


@pytest.mark.parametrize(
    ("schema", "text", "stop", "result"),
    [
        (None, "Un résumé.", "end_turn", ("Un résumé.", None)),
        (None, "A summary cut sho", "max_tokens", ("A summary cut sho", None)),  # a cut summary still says something
        (None, "No.", "refusal", (None, "the model declined to answer (stop_reason refusal): No.")),
        (FLAGS, '["-v", "-q"]', "end_turn", (["-v", "-q"], None)),
    ],
)
def test_a_section_reply_without_a_schema_is_its_text_unless_refused(schema, text, stop, result):
    assert read_section_reply(text, schema, stop) == result


@pytest.mark.parametrize(("path", "shown"), [([], "the top level"), (["options"], "options"),
                                             (["options", 2, "flag"], "options[2].flag"), ([0, "a"], "[0].a")])
def test_a_json_path_reads_like_the_field_it_names(path, shown):
    assert json_path(path) == shown


def test_concat_joins_top_level_arrays_in_section_order():
    joined, error = concat_values([["-a"], [], ["-b", "-c"]], FLAGS)
    assert (joined, error) == (["-a", "-b", "-c"], None)


def test_concat_joins_the_one_array_property_and_keeps_the_first_sections_other_fields():
    schema = {"type": "object", "required": ["source", "options"],
              "properties": {"source": {"type": "string"}, "options": OPTIONS["properties"]["options"]}}
    values = [{"source": "bash(1)", "options": [{"flag": "-a", "meaning": "a"}]},
              {"source": "bash(1) part 2", "options": []},
              {"source": "x", "options": [{"flag": "-b", "meaning": "b"}]}]
    joined, error = concat_values(values, schema)
    assert error is None
    assert joined == {"source": "bash(1)", "options": [{"flag": "-a", "meaning": "a"}, {"flag": "-b", "meaning": "b"}]}
    jsonschema.validate(joined, schema)


def test_a_joined_list_that_breaks_the_schema_is_reported_not_returned_as_valid():
    schema = {"type": "array", "items": {"type": "string"}, "maxItems": 2}
    joined, error = concat_values([["-a", "-b"], ["-c"]], schema)
    assert joined == ["-a", "-b", "-c"]
    assert error == ("the joined result does not match the output schema: ['-a', '-b', '-c'] is too long "
                     "at the top level")


@pytest.mark.parametrize(
    ("step_max", "default", "schema", "effort", "budget"),
    [
        (None, SECTION_OUTPUT_TOKENS, None, None, SECTION_OUTPUT_TOKENS),
        (None, SECTION_OUTPUT_TOKENS, OPTIONS, None, STRUCTURED_OUTPUT_TOKENS),
        (None, SYNTHESIS_OUTPUT_TOKENS, OPTIONS, None, 2 * STRUCTURED_OUTPUT_TOKENS),
        (None, SECTION_OUTPUT_TOKENS, None, "low", EFFORT_OUTPUT_TOKENS),
        (300, SECTION_OUTPUT_TOKENS, OPTIONS, "high", 300),  # the user's own budget wins
    ],
)
def test_the_output_budget_grows_for_json_and_effort_unless_the_step_sets_it(step_max, default, schema, effort,
                                                                            budget):
    assert output_budget(step_max, default=default, schema=schema, effort=effort) == budget
