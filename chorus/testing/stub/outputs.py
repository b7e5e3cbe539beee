"""`output_config` as the Messages API checks it: the structured-output format and the effort level.

Each check returns Anthropic's 400 message for the first problem, or None. The JSON-schema rules are
the "JSON Schema limitations" of platform.claude.com/docs/en/build-with-claude/structured-outputs:

* supported: the basic types, `enum` (strings, numbers, booleans or null only), `const`, `anyOf` and
  `allOf` (not `allOf` with `$ref`), local `$ref` / `$defs` / `definitions`, `default`, `required`,
  `additionalProperties` (must be false), the string formats date-time, time, date, duration, email,
  hostname, uri, ipv4, ipv6 and uuid, `pattern` ("The following regex features are not supported:
  Backreferences to groups (e.g., \\1, \\2); Lookahead/lookbehind assertions (e.g., (?=...), (?!...));
  Word boundaries: \\b, \\B"), and `minItems` of 0 or 1;
* not supported: recursive schemas, complex types within enums, external `$ref`, numerical
  constraints (minimum, maximum, multipleOf, ...), string constraints (minLength, maxLength), array
  constraints beyond `minItems` 0 or 1, and `additionalProperties` set to anything other than false.

Schema complexity limits, "Explicit limits" ("If complexity limits are hit the API returns a 400"): "No
more than 24 optional parameters" and "No more than 16 parameters with union types" (anyOf or a type
list), counted here over the properties of every object of the format's schema.

Every object must set `additionalProperties: false` explicitly: the API answers "For 'object' type,
'additionalProperties' must be explicitly set to false" otherwise (reported by users, e.g.
ax-llm/ax#458, veryfront/veryfront-code#3918); the SDK's `anthropic.transform_schema` adds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from chorus.testing.stub.models import EFFORT_LEVELS, traits

TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"})
UNSUPPORTED = {
    "minimum": "numerical constraints", "maximum": "numerical constraints",
    "exclusiveMinimum": "numerical constraints", "exclusiveMaximum": "numerical constraints",
    "multipleOf": "numerical constraints",
    "minLength": "string constraints", "maxLength": "string constraints",
    "maxItems": "array constraints beyond minItems 0 or 1", "uniqueItems": "array constraints beyond minItems 0 or 1",
    "contains": "array constraints beyond minItems 0 or 1", "minContains": "array constraints beyond minItems 0 or 1",
    "maxContains": "array constraints beyond minItems 0 or 1",
    "minProperties": "object constraints", "maxProperties": "object constraints",
    "patternProperties": "patternProperties", "dependentRequired": "dependentRequired",
    "dependentSchemas": "dependentSchemas", "if": "conditional schemas", "not": "'not'",
    "oneOf": "'oneOf' (use 'anyOf')",
}
_REGEX_UNSUPPORTED = re.compile(r"\(\?[=!<]|\\[1-9]|\\k<|\\[bB]")
_ESCAPED_BACKSLASH = re.compile(r"\\\\")  # `\\1` is a backslash then 1, no backreference
MAX_OPTIONAL_PARAMETERS = 24
MAX_UNION_PARAMETERS = 16
FIELD = "output_config"


def config_problem(config: Any, model: str) -> str | None:
    """The message for the first problem of a request's `output_config`, or None."""
    if config is None:
        return None
    if not isinstance(config, dict):
        return f"{FIELD}: Input should be a valid dictionary"
    extra = sorted(set(config) - {"format", "effort"})
    if extra:
        return f"{FIELD}.{extra[0]}: Extra inputs are not permitted"
    return format_problem(config.get("format"), model) or effort_problem(config.get("effort"), model)


def format_problem(fmt: Any, model: str) -> str | None:
    where = f"{FIELD}.format"
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return f"{where}: Input should be a valid dictionary"
    if "type" not in fmt:
        return f"{where}.type: Field required"
    if fmt["type"] != "json_schema":
        return f"{where}.type: Input should be 'json_schema'"
    if "schema" not in fmt:
        return f"{where}.schema: Field required"
    extra = sorted(set(fmt) - {"type", "schema"})
    if extra:
        return f"{where}.{extra[0]}: Extra inputs are not permitted"
    schema = fmt["schema"]
    if not isinstance(schema, dict):
        return f"{where}.schema: Input should be a valid dictionary"
    known = traits(model)
    if known is not None and not known.structured_outputs:
        return f"{where}: structured outputs are not supported on the model {model!r}"
    problem = schema_problem(schema)
    return f"{where}.schema: {problem}" if problem else None


def effort_problem(effort: Any, model: str) -> str | None:
    where = f"{FIELD}.effort"
    if effort is None:
        return None
    if effort not in EFFORT_LEVELS:
        listed = ", ".join(f"'{e}'" for e in EFFORT_LEVELS[:-1])
        return f"{where}: Input should be {listed} or '{EFFORT_LEVELS[-1]}'"
    known = traits(model)
    if known is None:
        return None
    if not known.efforts:
        return f"{where}: the effort parameter is not supported on the model {model!r}"
    if effort not in known.efforts:
        return f"{where}: {effort!r} is not supported on the model {model!r}; use one of {', '.join(known.efforts)}"
    return None


def schema_problem(schema: dict[str, Any]) -> str | None:
    """The first documented limitation the schema breaks, naming where (`at properties.x.items`)."""
    for path, node in _walk(schema, ""):
        problem = _node_problem(node, schema)
        if problem:
            return f"{problem} (at {path or 'the root'})"
    cycle = _recursive_ref(schema)
    if cycle:
        return f"recursive schemas are not supported ({cycle} refers back to itself)"
    return _complexity_problem(schema)


def _complexity_problem(schema: dict[str, Any]) -> str | None:
    optional = unions = 0
    for _, node in _walk(schema, ""):
        props = node.get("properties")
        if not isinstance(props, dict):
            continue
        listed = node.get("required")
        required: list[Any] = listed if isinstance(listed, list) else []
        optional += sum(1 for name in props if name not in required)
        unions += sum(1 for sub in props.values()
                      if isinstance(sub, dict) and ("anyOf" in sub or isinstance(sub.get("type"), list)))
    if optional > MAX_OPTIONAL_PARAMETERS:
        return f"Schema is too complex: {optional} optional parameters (the limit is {MAX_OPTIONAL_PARAMETERS})"
    if unions > MAX_UNION_PARAMETERS:
        return f"Schema is too complex: {unions} parameters with union types (the limit is {MAX_UNION_PARAMETERS})"
    return None


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield path, node
    join = (lambda key: f"{path}.{key}") if path else (lambda key: key)
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _walk(child, join(f"{key}.{name}"))
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], join("items"))
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        branches = node.get(key)
        if isinstance(branches, list):
            for i, child in enumerate(branches):
                yield from _walk(child, join(f"{key}.{i}"))


def _node_problem(node: dict[str, Any], root: dict[str, Any]) -> str | None:
    for key, what in UNSUPPORTED.items():
        if key in node:
            return f"'{key}' is not supported ({what} are not supported in structured outputs)"
    kinds = node.get("type")
    kind_list = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    unknown = [k for k in kind_list if k not in TYPES]
    if unknown:
        return f"type {unknown[0]!r} is not supported; use one of {', '.join(sorted(TYPES))}"
    is_object = "object" in kind_list or ("properties" in node and not kind_list)
    if is_object:
        extra = node.get("additionalProperties")
        if "additionalProperties" not in node:
            return "For 'object' type, 'additionalProperties' must be explicitly set to false"
        if extra is not False:
            return f"For 'object' type, 'additionalProperties: {_json(extra)}' is not supported. " \
                   "Please set 'additionalProperties' to false"
    if "minItems" in node and node["minItems"] not in (0, 1):
        return f"'minItems: {_json(node['minItems'])}' is not supported; only 0 and 1 are"
    enum = node.get("enum")
    if isinstance(enum, list) and any(isinstance(x, dict | list) for x in enum):
        return "complex types within enums are not supported; use strings, numbers, booleans or null"
    fmt = node.get("format")
    if fmt is not None and fmt not in FORMATS:
        return f"string format {fmt!r} is not supported; use one of {', '.join(sorted(FORMATS))}"
    pattern = node.get("pattern")
    if isinstance(pattern, str) and _REGEX_UNSUPPORTED.search(_ESCAPED_BACKSLASH.sub("", pattern)):
        return "'pattern' with backreferences, lookaround or word boundaries is not supported"
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        return f"external $ref {ref!r} is not supported; use $defs in the same schema"
    if isinstance(ref, str) and _target(root, ref) is None:
        return f"$ref {ref!r} does not resolve"
    all_of = node.get("allOf")
    if isinstance(all_of, list) and any(isinstance(b, dict) and "$ref" in b for b in all_of):
        return "'allOf' with '$ref' is not supported"
    return None


def _target(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _recursive_ref(root: dict[str, Any]) -> str | None:
    """A local $ref whose target reaches itself again through its own $refs, if any."""
    def reaches(ref: str, goal: str, seen: set[str]) -> bool:
        for inner in _refs(_target(root, ref)):
            if inner == goal:
                return True
            if inner.startswith("#") and inner not in seen:
                seen.add(inner)
                if reaches(inner, goal, seen):
                    return True
        return False

    for ref in dict.fromkeys(r for r in _refs(root) if r.startswith("#")):
        if ref in ("#", "#/") or reaches(ref, ref, {ref}):
            return ref
    return None


def _json(value: Any) -> str:
    return json.dumps(value)
