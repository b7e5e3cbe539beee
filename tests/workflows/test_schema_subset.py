"""The client's output-schema check (`workflows.schema_subset`, written from Anthropic's structured-outputs
guide) and the stub's (`chorus.testing.stub.outputs`, written from the same guide, independently) agree:
every schema the client accepts is accepted by the stub as chorus sends it (closed), and every schema the
stub refuses is refused by the client before anything is sent, naming the keyword and where it is."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chorus.testing.stub.outputs import schema_problem
from tests.clirunner import chorus
from tests.conftest import ROOT
from workflows.schema_subset import first_problem
from workflows.taskfile import TaskFileError, check_schema, closed_schema
from workflows.voting import label_schema


def stub_accepts(schema: dict[str, Any]) -> bool:
    return schema_problem(closed_schema(schema)) is None


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


S = {"type": "string"}

# Each case: the schema, the path the client names, and a word of its message. The stub refuses all of
# them too (the first block is what the stub refused while the client passed it before issue 25).
REFUSED = [
    (obj(a={"oneOf": [S, {"type": "integer"}]}), "properties.a.oneOf", "use anyOf"),
    (obj(a={"type": "array", "items": S, "uniqueItems": True}), "properties.a.uniqueItems", "array constraints"),
    (obj(a={"type": "array", "items": S, "contains": S}), "properties.a.contains", "array constraints"),
    (obj(a={"type": "object", "properties": {}, "minProperties": 1}), "properties.a.minProperties",
     "not in the JSON Schema subset"),
    (obj(a={"type": "object", "patternProperties": {"^x": S}}), "properties.a.patternProperties", "patternProperties"),
    (obj(a={"not": S}), "properties.a.not", "`not`"),
    (obj(a={"if": S, "then": S}), "properties.a.if", "`if`"),
    (obj(a={"type": "object", "dependentRequired": {}}), "properties.a.dependentRequired", "dependentRequired"),
    (obj(a={"type": "string", "format": "regex"}), "properties.a.format", "string format 'regex'"),
    (obj(a={"type": "string", "pattern": "^(?=a)b$"}), "properties.a.pattern", "lookahead"),
    (obj(a={"type": "string", "pattern": "(a)\\1"}), "properties.a.pattern", "backreferences"),
    (obj(a={"type": "string", "pattern": "\\bword"}), "properties.a.pattern", "word boundaries"),
    (obj(a={"type": "string", "pattern": "(?<name>x)"}), "properties.a.pattern", "(?<n"),
    (obj(a={"enum": [{"x": 1}, "y"]}), "properties.a.enum", "complex types within enums"),
    (obj(a={"$ref": "https://example.com/a.json"}), "properties.a.$ref", "external $ref"),
    ({**obj(a={"$ref": "#/$defs/Node"}),
      "$defs": {"Node": {**obj(child={"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]})}}},
     "$defs.Node", "recursive schemas"),
    ({**obj(a={"allOf": [{"$ref": "#/$defs/A"}]}), "$defs": {"A": obj(x=S)}}, "properties.a.allOf[0].$ref",
     "allOf with $ref"),
    ({"type": "object", "properties": {f"p{i}": S for i in range(25)}}, "", "25 optional properties"),
    (obj(**{f"p{i}": {"type": ["string", "null"]} for i in range(17)}), "", "17 properties with union types"),
    # ... and what both refused before.
    (obj(a={"type": "integer", "minimum": 0}), "properties.a.minimum", "numerical constraints"),
    (obj(a={"type": "string", "maxLength": 3}), "properties.a.maxLength", "string constraints"),
    (obj(a={"type": "array", "items": S, "maxItems": 3}), "properties.a.maxItems", "array constraints"),
    (obj(a={"type": "array", "items": S, "minItems": 2}), "properties.a.minItems", "minItems 0 or 1"),
    ({**obj(a=S), "additionalProperties": True}, "additionalProperties", "closed"),
]


@pytest.mark.parametrize(("schema", "path", "words"), REFUSED, ids=[f"{c[1]}:{c[2]}" for c in REFUSED])
def test_a_feature_outside_the_documented_subset_is_refused_by_both_naming_it(schema, path, words):
    assert not stub_accepts(schema)  # the stub's 400: the case is one the API refuses
    problem = first_problem(schema)
    assert problem is not None and problem[0] == path
    assert words in problem[1]
    with pytest.raises(TaskFileError) as caught:
        check_schema(schema, "map.output_schema")
    assert caught.value.field == ("map.output_schema." + path if path else "map.output_schema")


ACCEPTED = [
    obj(options={"type": "array", "items": obj(flag=S, meaning=S)}),
    label_schema(["urgent", "normal", "R&D <x>"]),
    obj(when={"type": "string", "format": "date-time"}, code={"type": "string", "pattern": "^[A-Z]{2}-\\d{1,4}$"},
        n={"type": ["integer", "null"]}, kind={"enum": ["a", 1, True, None]}, fixed={"const": "v1"},
        note={"type": "string", "description": "free text", "title": "Note", "default": ""}),
    {**obj(a={"$ref": "#/$defs/A"}, b={"anyOf": [{"$ref": "#/definitions/B"}, {"type": "null"}]}),
     "$defs": {"A": obj(x=S)}, "definitions": {"B": obj(y={"type": "number"})}},
    obj(both={"allOf": [obj(x=S), {"type": "object", "properties": {"y": {"type": "boolean"}}}]}),
    {"type": "object", "properties": {"x": S, "y": {"type": "array", "items": S, "minItems": 1}}},  # left open
    obj(path={"type": "string", "pattern": "^(?:[a-z]+/)*[a-z]+\\\\1$"}),  # an escaped backslash, then 1
    obj(**{f"p{i}": S for i in range(40)}),  # required properties do not count toward the limit of 24
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_a_schema_inside_the_subset_passes_both(schema):
    assert first_problem(schema) is None
    assert schema_problem(closed_schema(schema)) is None


# ----- generated schemas ---------------------------------------------------------------------------
NAMES = st.sampled_from(["a", "b", "flag", "meaning", "when", "n"])
PRIMITIVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("xyz", max_size=3))
PATTERNS = st.sampled_from(["^[a-z]+$", "\\d{2,3}", "(ab|cd)+", "(?:x)?y", "a\\\\1", "(a)\\1", "(?=a)",
                            "(?!a)", "(?<=a)", "\\bx", "x\\B", "(?<n>a)", "(?i)a", "[\\w.-]+@[\\w.-]+"])
SUPPORTED_FORMATS = ["date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"]
# Keywords outside the subset, each with a value; the generator sprinkles them in.
OUTSIDE = st.sampled_from([
    ("minimum", 0), ("maximum", 3), ("exclusiveMinimum", 0), ("multipleOf", 2), ("minLength", 1), ("maxLength", 9),
    ("maxItems", 4), ("uniqueItems", True), ("minProperties", 1), ("maxProperties", 2), ("oneOf", [{"type": "null"}]),
    ("not", {"type": "null"}), ("prefixItems", [{"type": "string"}]), ("examples", ["x"]), ("nullable", True),
    ("patternProperties", {"^x": {"type": "string"}}), ("if", {"type": "string"}), ("$comment", "c"),
    ("contains", {"type": "string"}), ("dependentSchemas", {}), ("additionalProperties", True),
    ("minItems", 2), ("format", "regex"), ("enum", [[1]]), ("$ref", "http://x/y.json"), ("$ref", "#/$defs/Loop"),
])


@st.composite
def schemas(draw: st.DrawFn, *, depth: int = 0, wide: bool = False) -> dict[str, Any]:
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "const", "ref"]
    if depth < 3:
        kinds += ["object", "object", "array", "anyOf", "allOf", "union"]
    kind = draw(st.sampled_from(kinds))
    node: dict[str, Any]
    if kind == "object":
        props = draw(st.dictionaries(NAMES, schemas(depth=depth + 1, wide=wide), max_size=4))
        node = {"type": "object", "properties": props}
        names = list(props)
        node["required"] = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        if draw(st.booleans()):
            node["additionalProperties"] = False
    elif kind == "array":
        node = {"type": "array", "items": draw(schemas(depth=depth + 1, wide=wide))}
        if draw(st.booleans()):
            node["minItems"] = draw(st.sampled_from([0, 1]))
    elif kind in ("anyOf", "allOf"):
        node = {kind: draw(st.lists(schemas(depth=depth + 1, wide=wide), min_size=1, max_size=3))}
    elif kind == "union":
        node = {"type": draw(st.lists(st.sampled_from(["string", "integer", "null"]), min_size=1, max_size=3,
                                      unique=True))}
    elif kind == "enum":
        node = {"enum": draw(st.lists(PRIMITIVES, min_size=1, max_size=4))}
    elif kind == "const":
        node = {"const": draw(PRIMITIVES)}
    elif kind == "ref":
        node = {"$ref": draw(st.sampled_from(["#/$defs/Item", "#/definitions/Other"]))}
    else:
        node = {"type": kind}
        if kind == "string" and draw(st.booleans()):
            if draw(st.booleans()):
                node["format"] = draw(st.sampled_from(SUPPORTED_FORMATS))
            else:
                node["pattern"] = draw(PATTERNS)
    if draw(st.integers(0, 5)) == 0:
        node[draw(st.sampled_from(["description", "title", "default"]))] = draw(PRIMITIVES)
    if wide and draw(st.integers(0, 6)) == 0:
        key, value = draw(OUTSIDE)
        node[key] = value
    return node


@st.composite
def documents(draw: st.DrawFn, *, wide: bool) -> dict[str, Any]:
    """A top-level schema (an object, as chorus's map steps return) with the $defs its $refs name."""
    top = draw(schemas(depth=1, wide=wide).filter(lambda s: s.get("type") == "object")
               | st.builds(lambda p: {"type": "object", "properties": p, "required": list(p)},
                           st.dictionaries(NAMES, schemas(depth=1, wide=wide), max_size=4)))
    top["$defs"] = {"Item": draw(schemas(depth=2, wide=wide)), "Loop": {"$ref": "#/$defs/Loop"}} \
        if wide and draw(st.integers(0, 8)) == 0 else {"Item": draw(schemas(depth=2, wide=wide))}
    top["definitions"] = {"Other": draw(schemas(depth=2, wide=wide))}
    return top


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.filter_too_much])


@FAST
@given(documents(wide=False))
def test_every_schema_the_client_accepts_the_stub_accepts(schema):
    if first_problem(schema) is None:
        assert schema_problem(closed_schema(schema)) is None, schema


@FAST
@given(documents(wide=True))
def test_every_schema_the_stub_refuses_the_client_refuses_first(schema):
    if schema_problem(closed_schema(schema)) is not None:
        assert first_problem(schema) is not None, schema


def test_the_generated_schemas_are_mostly_accepted_so_the_property_tests_something():
    accepted = 0

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(documents(wide=False))
    def count(schema: dict[str, Any]) -> None:
        nonlocal accepted
        accepted += first_problem(schema) is None

    count()
    assert accepted >= 50


# ----- through the real SDK and the stub (in this process), and the CLI -----------------------------
@pytest.mark.parametrize("schema", ACCEPTED)
def test_an_accepted_schema_is_answered_by_the_stub(stub_client, schema):
    reply = stub_client.messages.create(model="claude-haiku-5-5", max_tokens=512,
                                   messages=[{"role": "user", "content": "-a, --all  show all\n"}],
                                   output_config={"format": {"type": "json_schema", "schema": closed_schema(schema)}})
    assert reply.type == "message"  # answered (a refusal too), not a 400


@pytest.mark.integration  # the command, in a process of its own
def test_task_check_exits_2_naming_the_keyword(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "examples" / "man-options.toml").read_text().replace(
        'properties = { flag = { type = "string" }, meaning = { type = "string" } }',
        'properties = { flag = { type = "string" }, meaning = { oneOf = [{ type = "string" }, { type = "null" }] } }'))
    done = chorus("task", "check", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "map.output_schema.properties.options.items.properties.meaning.oneOf" in done.stderr
    assert "oneOf is not supported; use anyOf" in " ".join(done.stderr.split())
