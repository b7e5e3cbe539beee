"""The JSON Schema subset Anthropic's structured outputs accept (pure), checked before anything is sent.

Written from the "JSON Schema limitations" of Anthropic's structured-outputs guide
(platform.claude.com/docs/en/build-with-claude/structured-outputs; checked 2026-12-03), as an ALLOW list:
a keyword the guide does not list as supported is refused, naming it and where it is, so a task that
passes `chorus task check` is not a 400 on every call of a batch. What the guide lists:

* supported: all basic types (object, array, string, integer, number, boolean, null); `enum` of strings,
  numbers, bools or nulls only; `const`; `anyOf` and `allOf` ("allOf with $ref not supported"); `$ref`,
  `$defs` and `definitions` ("external $ref not supported"); `default`; `required` and
  `additionalProperties` ("must be set to false for objects"); the string formats date-time, time, date,
  duration, email, hostname, uri, ipv4, ipv6, uuid; array `minItems` of 0 or 1 only; `pattern` with the
  regex features "full matching, quantifiers, character classes, groups";
* not supported: recursive schemas, complex types within enums, external `$ref`, numerical constraints
  (minimum, maximum, multipleOf, ...), string constraints (minLength, maxLength), array constraints beyond
  minItems 0 or 1, `additionalProperties` other than false; in `pattern`: backreferences,
  lookahead/lookbehind, word boundaries (`\\b`, `\\B`);
* explicit complexity limits: at most 24 optional parameters and 16 parameters with union types
  (`anyOf` or a type list) across the strict schemas of a request.

Beyond the list, `properties` and `items` (a schema, not a list) hold the structure, and `title` and
`description` are annotations the SDK's own `transform_schema` keeps. Anything else (`oneOf`, `not`,
`prefixItems`, `uniqueItems`, `patternProperties`, `if`, `examples`, `nullable`, ...) is refused: the
guide does not say the API takes it, and the SDK's transform drops or rewrites it (`oneOf` -> `anyOf`).
Conservative where the guide is vague: `$ref` points at `#/$defs/NAME` or `#/definitions/NAME` of the
top-level schema, `$defs` sits at the top, an `allOf` holds no `$ref` at any depth, `format` is on
strings, `const` is a plain value, and a `pattern` group is `(...)` or `(?:...)` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
STRING_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid")
MAX_OPTIONAL_PARAMETERS = 24
MAX_UNION_PARAMETERS = 16
SUPPORTED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "minItems", "enum", "const",
    "anyOf", "allOf", "$ref", "$defs", "definitions", "default", "format", "pattern", "title", "description",
})
# The guide's "not supported" list, by the kind of constraint it names; any other unknown keyword is
# refused as outside the documented subset.
NAMED = {
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
                    "numerical constraints are not supported"),
    **dict.fromkeys(("minLength", "maxLength"), "string constraints are not supported"),
    **dict.fromkeys(("maxItems", "uniqueItems", "contains", "minContains", "maxContains", "prefixItems",
                     "additionalItems", "unevaluatedItems"),
                    "array constraints beyond minItems 0 or 1 are not supported"),
    "oneOf": "oneOf is not supported; use anyOf",
}
DOCS = "Anthropic's structured outputs, JSON Schema limitations"


def first_problem(schema: Any) -> tuple[str, str] | None:
    """(path in the schema, what is wrong and how to fix it) of the first feature outside the subset, or
    None. The path is dotted from the schema's top (`properties.options.items.maxLength`, `anyOf[1]`; ""
    for the top itself)."""
    return next(problems(schema), None)


def problems(schema: Any) -> Iterator[tuple[str, str]]:
    if not isinstance(schema, Mapping):
        yield "", "must be a JSON schema (a table)"
        return
    defs = _defs(schema)
    yield from _node(schema, "", schema, top=True, in_all_of=False)
    yield from _recursion(defs)
    yield from _limits(schema)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _defs(root: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        table = root.get(key)
        if isinstance(table, Mapping):
            out.update({f"#/{key}/{name}": sub for name, sub in table.items()})
    return out


def _node(node: Any, path: str, root: Mapping[str, Any], *, top: bool, in_all_of: bool
          ) -> Iterator[tuple[str, str]]:
    if not isinstance(node, Mapping):
        yield path, "must be a schema (a table)"
        return
    for key in node:
        if key not in SUPPORTED:
            why = NAMED.get(key, f"`{key}` is not in the JSON Schema subset structured outputs support")
            yield _join(path, key), f"{why} ({DOCS}); remove `{key}` (a reply is still validated against the rest)"
            return
    kinds = node.get("type")
    kind_list = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
    if isinstance(kinds, list) and not kinds:
        yield _join(path, "type"), "an empty type list; name one JSON type or more"
        return
    for k in kind_list:
        if k not in JSON_TYPES:
            yield _join(path, "type"), f"unknown JSON type {k!r}; use one of: {', '.join(JSON_TYPES)}"
            return
    if "additionalProperties" in node and node["additionalProperties"] is not False:
        yield (_join(path, "additionalProperties"),
               "structured outputs need objects closed: set additionalProperties = false or leave it out")
        return
    if "minItems" in node and (node["minItems"] not in (0, 1) or isinstance(node["minItems"], bool)):
        yield _join(path, "minItems"), f"structured outputs support minItems 0 or 1 only, got {node['minItems']!r}"
        return
    if "enum" in node:
        enum = node["enum"]
        if not isinstance(enum, list) or not enum:
            yield _join(path, "enum"), "enum must be a non-empty list of values"
            return
        if any(isinstance(v, Mapping | list) for v in enum):
            yield _join(path, "enum"), "complex types within enums are not supported; use strings, numbers, " \
                                       "booleans or null"
            return
    if "const" in node and isinstance(node["const"], Mapping | list):
        yield _join(path, "const"), "const must be a string, number, boolean or null"
        return
    if "format" in node:
        fmt = node["format"]
        if fmt not in STRING_FORMATS:
            yield _join(path, "format"), f"string format {fmt!r} is not supported; use one of: " \
                                         f"{', '.join(STRING_FORMATS)}"
            return
        if "string" not in kind_list:
            yield _join(path, "format"), "format applies to strings only; give this schema type = \"string\""
            return
    if "pattern" in node:
        problem = pattern_problem(node["pattern"])
        if problem:
            yield _join(path, "pattern"), problem
            return
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            yield _join(path, "$ref"), f"external $ref {ref!r} is not supported; put the schema under $defs and " \
                                       "refer to it as #/$defs/NAME"
            return
        if in_all_of:
            yield _join(path, "$ref"), "allOf with $ref is not supported; write the referred schema out in " \
                                       "the allOf"
            return
        if ref not in _defs(root):
            yield _join(path, "$ref"), f"$ref {ref!r} does not name a schema of this one's $defs or definitions " \
                                       "(write #/$defs/NAME)"
            return
    for key in ("$defs", "definitions"):
        if key in node:
            if not top:
                yield _join(path, key), f"put {key} at the top of the schema, where #/{key}/NAME refers to it"
                return
            if not isinstance(node[key], Mapping):
                yield _join(path, key), "must be a table of named schemas"
                return
            for name, sub in node[key].items():
                yield from _node(sub, _join(path, f"{key}.{name}"), root, top=False, in_all_of=False)
    props = node.get("properties")
    if props is not None:
        if not isinstance(props, Mapping):
            yield _join(path, "properties"), "must be a table of property schemas"
            return
        for name, sub in props.items():
            yield from _node(sub, _join(path, f"properties.{name}"), root, top=False, in_all_of=in_all_of)
    required = node.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            yield _join(path, "required"), "must be a list of property names"
            return
        missing = [r for r in required if r not in (props or {})]
        if missing:
            yield _join(path, "required"), f"names {', '.join(missing)}, which are not in `properties`"
            return
    if "items" in node:
        yield from _node(node["items"], _join(path, "items"), root, top=False, in_all_of=in_all_of)
    for key in ("anyOf", "allOf"):
        if key in node:
            branches = node[key]
            if not isinstance(branches, list) or not branches:
                yield _join(path, key), f"{key} must be a non-empty list of schemas"
                return
            for i, sub in enumerate(branches):
                yield from _node(sub, f"{_join(path, key)}[{i}]", root, top=False,
                                 in_all_of=in_all_of or key == "allOf")


def pattern_problem(pattern: Any) -> str | None:
    """What in a `pattern` is outside the documented regex subset, or None."""
    if not isinstance(pattern, str):
        return "pattern must be a string (a regular expression)"
    i, in_class = 0, False
    while i < len(pattern):
        c, nxt = pattern[i], pattern[i + 1:i + 2]
        if c == "\\" and nxt:
            if nxt in "123456789" or (nxt == "k" and pattern[i + 2:i + 3] == "<"):
                return f"backreferences ({pattern[i:i + 2]}) are not supported in a pattern ({DOCS})"
            if nxt in "bB":  # in a class too: conservative, the guide makes no exception
                return f"word boundaries ({pattern[i:i + 2]}) are not supported in a pattern ({DOCS})"
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if nxt == "]" or (nxt == "^" and pattern[i + 2:i + 3] == "]") else 1  # `[]...]` holds a ]
            continue
        elif c == "(" and nxt == "?" and pattern[i + 2:i + 3] != ":":
            head = pattern[i:i + 4]
            if pattern[i + 2:i + 3] in ("=", "!") or pattern[i + 2:i + 4] in ("<=", "<!"):
                return f"lookahead/lookbehind ({head}...) is not supported in a pattern ({DOCS})"
            return f"the group {head}... is not supported in a pattern: write (...) or (?:...) ({DOCS})"
        i += 1
    return None


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for key, value in node.items():
            if key not in ("enum", "const", "default"):
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _recursion(defs: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """A $defs entry that reaches itself through $refs: recursive schemas are not supported."""
    for start in defs:
        seen: set[str] = set()
        todo = [r for r in _refs(defs[start]) if r in defs]
        while todo:
            ref = todo.pop()
            if ref == start:
                where = start[2:].replace("/", ".")
                yield where, f"recursive schemas are not supported ({start} refers back to itself; {DOCS})"
                return
            if ref not in seen:
                seen.add(ref)
                todo.extend(r for r in _refs(defs[ref]) if r in defs)


def _parameters(node: Any) -> Iterator[tuple[Any, bool]]:
    """(schema, required) of every property of every object in the schema, $defs included."""
    if isinstance(node, Mapping):
        props = node.get("properties")
        if isinstance(props, Mapping):
            listed = node.get("required")
            required: list[Any] = listed if isinstance(listed, list) else []
            for name, sub in props.items():
                yield sub, name in required
        for key, value in node.items():
            if key in ("enum", "const", "default"):
                continue
            if key == "properties" and isinstance(value, Mapping):
                for sub in value.values():
                    yield from _parameters(sub)
            elif isinstance(value, Mapping | list):
                yield from _parameters(value)
    elif isinstance(node, list):
        for value in node:
            yield from _parameters(value)


def _limits(schema: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    params = list(_parameters(schema))
    optional = sum(1 for _, required in params if not required)
    if optional > MAX_OPTIONAL_PARAMETERS:
        yield "", (f"{optional} optional properties (not in `required`); structured outputs take at most "
                   f"{MAX_OPTIONAL_PARAMETERS} ({DOCS}): list more of them in `required`")
        return
    unions = sum(1 for sub, _ in params if isinstance(sub, Mapping)
                 and ("anyOf" in sub or isinstance(sub.get("type"), list)))
    if unions > MAX_UNION_PARAMETERS:
        yield "", (f"{unions} properties with union types (anyOf or a type list); structured outputs take at "
                   f"most {MAX_UNION_PARAMETERS} ({DOCS})")
