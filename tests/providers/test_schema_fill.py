"""fill_schema builds a value that conforms to any schema from a text; merge_values joins parts' JSON."""

from __future__ import annotations

import json

import jsonschema
import pytest

from providers.schema_fill import fill_schema, merge_texts, merge_values, units

MAN = """LS(1)
NAME
       ls - list directory contents

OPTIONS
       -a, --all
              do not ignore entries starting with .

       -l     use a long listing format

       --color[=WHEN]
              color the output WHEN; more info below
              in the COLORS section

       -1     list one file per line
"""
PROSE = (
    "The release fixes three crashes in the importer. The export is faster on large files. "
    "Windows users can now pick a theme. Support for Python 3.8 is dropped."
)

MAN_OPTIONS = {"type": "object", "required": ["options"], "properties": {"options": {"type": "array", "items": {
    "type": "object", "required": ["flag", "meaning"],
    "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}}}

SCHEMAS: dict[str, dict] = {
    "man-options": MAN_OPTIONS,
    "strict man-options": {**MAN_OPTIONS, "additionalProperties": False},
    "string list": {"type": "object", "properties": {"points": {"type": "array", "items": {"type": "string"}}},
                    "required": ["points"], "additionalProperties": False},
    "bounded list": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 2, "maxItems": 3},
    "at least five": {"type": "array", "items": {"type": "string"}, "minItems": 5},
    "scalars": {"type": "object", "required": ["title", "count", "score", "deprecated", "kind", "version"],
                "properties": {"title": {"type": "string", "minLength": 3},
                               "count": {"type": "integer", "minimum": 10, "maximum": 20},
                               "score": {"type": "number", "exclusiveMaximum": 1, "minimum": 0},
                               "deprecated": {"type": "boolean"},
                               "kind": {"enum": ["feature", "bugfix", "release"]},
                               "version": {"const": 2}}},
    "nullable and type lists": {"type": "object", "required": ["a", "b", "c"],
                                "properties": {"a": {"type": ["string", "null"]},
                                               "b": {"type": "integer", "nullable": True},
                                               "c": {"type": ["null", "number"], "multipleOf": 0.5}}},
    "refs and anyOf": {"$defs": {"opt": {"type": "object", "required": ["name"],
                                         "properties": {"name": {"type": "string"},
                                                        "value": {"anyOf": [{"type": "null"}, {"type": "string"}]}}}},
                       "type": "object", "required": ["items"],
                       "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/opt"}}}},
    "allOf": {"allOf": [{"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}},
                        {"required": ["y"], "properties": {"y": {"type": "integer"}}}]},
    "nested arrays": {"type": "object", "required": ["groups"], "properties": {"groups": {"type": "array", "items": {
        "type": "object", "required": ["key", "words"],
        "properties": {"key": {"type": "string"}, "words": {"type": "array", "items": {"type": "string"},
                                                            "minItems": 1}}}}}},
    "recursive": {"$defs": {"node": {"type": "object", "required": ["name", "children"],
                                     "properties": {"name": {"type": "string"},
                                                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
                  "$ref": "#/$defs/node"},
    "bare string": {"type": "string"},
    "enum of numbers": {"enum": [3, 5, 8]},
}


@pytest.mark.parametrize("text", [MAN, PROSE, ""], ids=["man page", "prose", "empty"])
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_the_filled_value_conforms_to_the_schema(name, text):
    schema = SCHEMAS[name]
    value = fill_schema(schema, text, max_tokens=400)
    jsonschema.validate(value, schema)
    assert fill_schema(schema, text, max_tokens=400) == value  # deterministic


def test_option_lines_become_flag_and_meaning_items():
    value = fill_schema(MAN_OPTIONS, MAN)
    assert value == {"options": [
        {"flag": "-a", "meaning": "do not ignore entries starting with ."},
        {"flag": "-l", "meaning": "use a long listing format"},
        {"flag": "--color", "meaning": "color the output WHEN; more info below in the COLORS section"},
        {"flag": "-1", "meaning": "list one file per line"},
    ]}


def test_without_option_lines_each_sentence_is_an_item_keyed_by_its_first_word():
    value = fill_schema(MAN_OPTIONS, PROSE)
    assert [o["flag"] for o in value["options"]] == ["The", "The", "Windows", "Support"]
    assert value["options"][1]["meaning"] == "The export is faster on large files."


def test_string_lists_take_one_relevant_sentence_each_in_order():
    value = fill_schema(SCHEMAS["string list"], PROSE)
    assert value == {"points": ["The release fixes three crashes in the importer.",
                                "The export is faster on large files.", "Windows users can now pick a theme.",
                                "Support for Python 3.8 is dropped."]}


def test_scalars_read_the_text():
    value = fill_schema(SCHEMAS["scalars"], "This release is deprecated. " + PROSE)
    assert value["kind"] == "release"  # the enum value the text mentions
    assert value["deprecated"] is True  # the text mentions the property's name
    assert value["count"] == 10 and value["version"] == 2
    assert fill_schema(SCHEMAS["scalars"], PROSE)["deprecated"] is False


def test_an_enum_nobody_mentions_gives_its_first_value():
    assert fill_schema({"enum": ["alpha", "beta"]}, PROSE) == "alpha"


def test_lists_stop_at_about_max_tokens():
    text = "\n".join(f"-{c}  option {c} does something quite long and descriptive here" for c in "abcdefghijklmnop")
    short = fill_schema(MAN_OPTIONS, text, max_tokens=60)
    full = fill_schema(MAN_OPTIONS, text, max_tokens=2000)
    assert len(full["options"]) == 16 and 1 <= len(short["options"]) < 16
    assert len(json.dumps(short)) <= 60 * 4
    assert short["options"] == full["options"][: len(short["options"])]


def test_units_join_a_wrapped_option_meaning_and_split_prose_into_sentences():
    parsed = units(MAN)
    assert [u.key for u in parsed if u.key] == ["-a", "-l", "--color", "-1"]
    assert [u.text for u in units(PROSE)][:2] == ["The release fixes three crashes in the importer.",
                                                  "The export is faster on large files."]


def test_merge_concatenates_arrays_drops_exact_duplicates_and_keeps_first_appearance_order():
    a = {"options": [{"flag": "-a", "meaning": "all"}, {"flag": "-l", "meaning": "long"}]}
    b = {"options": [{"flag": "-l", "meaning": "long"}, {"flag": "-l", "meaning": "long format"},
                     {"flag": "-a", "meaning": "all"}, {"flag": "-z", "meaning": "zero"}]}
    merged = merge_values(MAN_OPTIONS, [a, b])
    jsonschema.validate(merged, MAN_OPTIONS)
    assert merged == {"options": [{"flag": "-a", "meaning": "all"}, {"flag": "-l", "meaning": "long"},
                                  {"flag": "-l", "meaning": "long format"}, {"flag": "-z", "meaning": "zero"}]}


def test_merge_keeps_scalars_from_the_first_part_and_respects_max_items():
    schema = {"type": "object", "properties": {"title": {"type": "string"},
                                               "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}}
    merged = merge_values(schema, [{"title": "one", "tags": ["a", "b"]}, {"title": "two", "tags": ["b", "c", "d"]}])
    assert merged == {"title": "one", "tags": ["a", "b", "c"]}


def test_merge_of_texts_fills_parts_that_are_not_json():
    merged = merge_texts(MAN_OPTIONS, [json.dumps({"options": [{"flag": "-a", "meaning": "all"}]}),
                                       "-q, --quiet\n    say nothing"])
    assert merged == {"options": [{"flag": "-a", "meaning": "all"}, {"flag": "-q", "meaning": "say nothing"}]}


def test_merge_shrinks_to_about_max_tokens():
    parts = [{"options": [{"flag": f"-{c}", "meaning": "x" * 40} for c in "abcdefgh"]},
             {"options": [{"flag": f"-{c}", "meaning": "y" * 40} for c in "ijklmnop"]}]
    merged = merge_values(MAN_OPTIONS, parts, max_tokens=100)
    assert 1 <= len(merged["options"]) < 16 and len(json.dumps(merged)) <= 100 * 4
    assert merged["options"][0]["flag"] == "-a"


def test_a_nullable_type_list_is_null_when_there_is_nothing_to_read_and_text_otherwise():
    schema = {"type": "object", "required": ["note"], "properties": {"note": {"type": ["string", "null"]}}}
    assert fill_schema(schema, "") == {"note": None}
    assert fill_schema(schema, PROSE) == {"note": "The release fixes three crashes in the importer."}
