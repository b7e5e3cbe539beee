"""Deterministic JSON for a JSON schema, built from a text (the offline provider's structured outputs).

`fill_schema(schema, text, max_tokens)` returns a value that conforms to `schema`, read from `text`:

* The text is cut into units: its lines, and the sentences of a long line. A unit that starts with
  option-like tokens (`-v, --verbose`, `--output=FILE`, as in a man page) is an *option unit*: its key
  is the first option token and its meaning the rest of the line, or the next line when the rest is
  empty (`-v, --verbose` / `    explain what is being done`).
* **object**: every property of `properties` (required or not), in order, plus any `required` name that
  `properties` does not list (filled as text).
* **array**: one item per relevant unit, in order. When the items are objects with a key-like property
  (flag, option, switch, name, key, term, command, id...) and the text has option units, only those
  count; otherwise every unit with a word of three letters or more. The list stops when the JSON would
  pass about `max_tokens` tokens, or at `maxItems`; `minItems` is met by repeating the last item (or
  filling from an empty unit). An array inside an item reads only that item's unit.
* **string**: a property with a key-like name gets the unit's option token, else the unit's first word;
  any other string gets a sentence (an option unit's meaning, another unit's text; at the top level the
  first relevant unit). `maxLength` cuts, `minLength` pads. `format` and `pattern` are not checked.
* **number / integer**: a count (the words of the unit; at the top level the relevant units), moved into
  `minimum` / `maximum` / `exclusive*` and rounded to `multipleOf`.
* **boolean**: whether the unit (or the whole text) mentions the property's name.
* **enum**: the value the unit (or else the whole text) mentions, else the first; **const**: itself.
* `type` lists take the first non-null type (null when there is nothing to read), and so does OpenAPI's
  `nullable: true` (never null: that is no JSON Schema keyword);
  `anyOf` / `oneOf` the first non-null branch; `allOf` the branches merged; local `$ref`s are followed,
  and a recursive schema stops nesting after a few levels (arrays empty, objects with required
  properties only).

`merge_values(schema, values, max_tokens)` is a reduce step: the parts' JSON merged into one value —
arrays concatenated with exact duplicates dropped (first appearance kept, in order), objects merged
property by property, any other value taken from the first part that has it; then cut to `maxItems`
and to about `max_tokens`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from workflows.tokens import estimate_tokens

MAX_DEPTH = 8  # nesting levels a (recursive) schema is followed before it is closed off
_OPTION = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*|-[A-Za-z0-9](?![\d.])[\w-]*)")
_OPTION_HEAD = re.compile(
    r"^\s*(?P<head>(?:(?:--[A-Za-z0-9][\w-]*|-[A-Za-z0-9](?![\d.])[\w-]*)"
    r"(?:[= ]?(?:<[^>\s]+>|\[[^\]\s]+\]|[A-Z][A-Z0-9_]*\b))?(?:,\s*|\s+or\s+|\s*\|\s*)?)+)(?P<rest>.*)$"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_KEY_WORDS = frozenset({"flag", "flags", "option", "options", "opt", "switch", "name", "key", "term", "keyword",
                        "id", "command", "cmd", "identifier", "symbol"})
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


@dataclass(frozen=True)
class Unit:
    """A line or sentence of the text; `key` is its leading option token (man-page style), if any."""

    text: str
    key: str | None = None
    rest: str = ""

    @property
    def sentence(self) -> str:
        return self.rest if self.key is not None else self.text


def units(text: str) -> list[Unit]:
    """The text's lines (a long line split into sentences); an option line takes its meaning along: the
    rest of the line and the more-indented lines under it, or the next line when the rest is empty."""
    lines = text.splitlines()
    out: list[Unit] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        option = _OPTION.match(line)
        head = _OPTION_HEAD.match(line) if option else None
        i += 1
        if not line:
            continue
        if option is None or head is None:
            out.extend(Unit(s.strip()) for s in _SENTENCE_END.split(line) if s.strip())
            continue
        indent = _indent(lines[i - 1])
        meaning = [head.group("rest").strip(" \t:-—–")] if head.group("rest").strip(" \t:-—–") else []
        while i < len(lines) and lines[i].strip() and not _OPTION.match(lines[i].strip()):
            if meaning and _indent(lines[i]) <= indent:
                break
            meaning.append(lines[i].strip())
            i += 1
        out.append(Unit(line, option.group(1), " ".join(meaning)))
    return out


def _indent(line: str) -> int:
    return len(line.expandtabs()) - len(line.expandtabs().lstrip())


def _relevant(unit: Unit) -> bool:
    return any(len(w) >= 3 for w in _WORD.findall(unit.text))


@dataclass
class _Context:
    root: dict[str, Any]
    text: str
    units: list[Unit]
    budget: int  # tokens for the whole value
    unit: Unit | None = None
    name: str = ""
    depth: int = 0

    def at(self, *, unit: Unit | None = None, name: str | None = None) -> _Context:
        return _Context(self.root, self.text, self.units, self.budget, unit if unit is not None else self.unit,
                        self.name if name is None else name, self.depth + 1)

    @property
    def local_text(self) -> str:
        return self.unit.text if self.unit is not None else self.text


def fill_schema(schema: dict[str, Any], text: str, max_tokens: int = 1024) -> Any:
    """A value conforming to `schema`, read from `text`, of about `max_tokens` tokens at most."""
    ctx = _Context(schema, text, units(text), max(16, max_tokens))
    return _fill(schema, ctx)


def _fill(schema: Any, ctx: _Context) -> Any:
    if not isinstance(schema, dict):
        return _string({}, ctx)  # `true` / `{}`-like schemas accept anything: give text
    schema = _resolve(schema, ctx.root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return _enum(schema["enum"], ctx)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if not (isinstance(b, dict) and _resolve(b, ctx.root).get("type") == "null")]
            return _fill((usable or branches)[0], ctx)
    kind = _kind(schema, ctx)
    if kind == "object":
        return _object(schema, ctx)
    if kind == "array":
        return _array(schema, ctx)
    if kind in ("integer", "number"):
        return _number(schema, ctx, integer=kind == "integer")
    if kind == "boolean":
        return _mentions(ctx.name, ctx.local_text) or _mentions(ctx.name, ctx.text)
    if kind == "null":
        return None
    return _string(schema, ctx)


def _resolve(schema: dict[str, Any], root: dict[str, Any], seen: int = 0) -> dict[str, Any]:
    """The schema with a local `$ref` followed and `allOf` merged in (shallowly)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and seen < MAX_DEPTH:
        target: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _resolve({**target, **rest}, root, seen + 1)
    branches = schema.get("allOf")
    if isinstance(branches, list) and branches:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for branch in branches:
            if not isinstance(branch, dict):
                continue
            branch = _resolve(branch, root, seen + 1)
            for key, value in branch.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**value, **merged.get("properties", {})}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged.setdefault(key, value)
        return merged
    return schema


def _kind(schema: dict[str, Any], ctx: _Context) -> str:
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else [t for t in declared or () if isinstance(t, str)]
    nullable = "null" in types  # OpenAPI's `nullable: true` is no JSON Schema: a value of the type fits both
    concrete = [t for t in types if t != "null" and t in _TYPES]
    if not concrete:
        if "properties" in schema or "required" in schema:
            concrete = ["object"]
        elif "items" in schema or "prefixItems" in schema:
            concrete = ["array"]
        elif nullable and types:
            return "null"
        else:
            concrete = ["string"]
    if nullable and not ctx.local_text.strip():
        return "null"
    return concrete[0]


def _object(schema: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    props = _dict(schema.get("properties"))
    required = [r for r in _list(schema.get("required")) if isinstance(r, str)]
    names = list(props) + [r for r in required if r not in props]
    if ctx.depth >= MAX_DEPTH:
        names = [n for n in names if n in required]
    return {name: _fill(props.get(name, {}), ctx.at(name=name)) for name in names}


def _array(schema: dict[str, Any], ctx: _Context) -> list[Any]:
    items = _dict(schema.get("items"))
    low = _count(schema.get("minItems")) or 0
    high = _count(schema.get("maxItems"))
    if ctx.depth >= MAX_DEPTH:
        return [_fill(items, ctx.at()) for _ in range(low)]
    candidates = _candidates(items, ctx)
    out: list[Any] = []
    budget = ctx.budget if ctx.unit is None else max(8, ctx.budget // 4)
    for unit in candidates:
        if high is not None and len(out) >= high:
            break
        value = _fill(items, ctx.at(unit=unit))
        if out and estimate_tokens(json.dumps([*out, value], ensure_ascii=False)) > budget:
            break
        out.append(value)
    while len(out) < low:
        out.append(out[-1] if out else _fill(items, ctx.at(unit=Unit(""))))
    return out


def _candidates(items: dict[str, Any], ctx: _Context) -> list[Unit]:
    if ctx.unit is not None:
        return [ctx.unit] if ctx.unit.text else []
    props = _dict(_resolve(items, ctx.root).get("properties"))
    keyed = any(_is_key_name(name) for name in props)
    options = [u for u in ctx.units if u.key is not None]
    if keyed and options:
        return options
    return [u for u in ctx.units if _relevant(u)]


def _string(schema: dict[str, Any], ctx: _Context) -> str:
    unit = ctx.unit
    if _is_key_name(ctx.name):
        if unit is not None:
            value = unit.key or _first_word(unit.text)
        else:
            first = next((u for u in ctx.units if _relevant(u)), None)
            value = (first.key or _first_word(first.text)) if first else ""
    elif unit is not None:
        value = unit.sentence or unit.text
    else:
        value = next((u.sentence or u.text for u in ctx.units if _relevant(u)), ctx.text.strip())
    low = _count(schema.get("minLength")) or 0
    high = _count(schema.get("maxLength"))
    if high is not None and len(value) > high:
        value = value[:high].rstrip() if high else ""
    if len(value) < low:
        value = (value + " " + "." * low)[:max(low, len(value))] if value else "." * low
    return value


def _number(schema: dict[str, Any], ctx: _Context, *, integer: bool) -> int | float:
    if ctx.unit is not None:
        value: float = len(_WORD.findall(ctx.unit.text))
    else:
        value = sum(1 for u in ctx.units if _relevant(u))
    low, high = _number_of(schema.get("minimum")), _number_of(schema.get("maximum"))
    ex_low, ex_high = _number_of(schema.get("exclusiveMinimum")), _number_of(schema.get("exclusiveMaximum"))
    step = 1 if integer else 0.5
    if low is not None:
        value = max(value, low)
    if ex_low is not None and value <= ex_low:
        value = ex_low + step
    if high is not None:
        value = min(value, high)
    if ex_high is not None and value >= ex_high:
        value = ex_high - step
    multiple = _number_of(schema.get("multipleOf"))
    if multiple is not None and multiple > 0:
        value = math.ceil(value / multiple) * multiple
        if (high is not None and value > high) or (ex_high is not None and value >= ex_high):
            value -= multiple
    return int(value) if integer else value


def _enum(options: Sequence[Any], ctx: _Context) -> Any:
    for text in (ctx.local_text, ctx.text):
        lowered = text.lower()
        for option in options:
            if isinstance(option, str) and option and re.search(
                rf"(?<!\w){re.escape(option.lower())}(?!\w)", lowered
            ):
                return option
    return options[0]


def _mentions(name: str, text: str) -> bool:
    words = [w.lower() for w in _split_name(name) if len(w) >= 3]
    lowered = text.lower()
    return bool(words) and any(re.search(rf"(?<!\w){re.escape(w)}", lowered) for w in words)


def _split_name(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[\W_]+", spaced) if w]


def _is_key_name(name: str) -> bool:
    return any(w.lower() in _KEY_WORDS for w in _split_name(name))


def _first_word(text: str) -> str:
    match = _WORD.search(text)
    return match.group(0) if match else ""


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number_of(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ----- reduce ---------------------------------------------------------------------------------------
def merge_values(schema: dict[str, Any], values: Sequence[Any], max_tokens: int = 1024) -> Any:
    """One value from the parts' values: arrays concatenated without exact duplicates (first appearance
    kept), objects merged per property, anything else from the first part; cut to about max_tokens."""
    merged = _merge(schema, list(values), schema)
    if merged is None and not values:
        return fill_schema(schema, "", max_tokens)
    return _shrink(merged, max(16, max_tokens))


def merge_texts(schema: dict[str, Any], texts: Sequence[str], max_tokens: int = 1024) -> Any:
    """`merge_values` over the parts' texts: a part that is JSON is taken as it is, any other is first
    filled from its text."""
    values = []
    for text in texts:
        try:
            values.append(json.loads(text))
        except ValueError:
            values.append(fill_schema(schema, text, max_tokens))
    return merge_values(schema, values, max_tokens)


def _merge(schema: Any, values: list[Any], root: dict[str, Any]) -> Any:
    schema = _resolve(schema, root) if isinstance(schema, dict) else {}
    present = [v for v in values if v is not None]
    if not present:
        return values[0] if values else None
    if all(isinstance(v, list) for v in present):
        seen: set[str] = set()
        out: list[Any] = []
        for value in present:
            for item in value:
                key = json.dumps(item, sort_keys=True, ensure_ascii=False)
                if key not in seen:
                    seen.add(key)
                    out.append(item)
        high = _count(schema.get("maxItems"))
        return out[:high] if high is not None else out
    if all(isinstance(v, dict) for v in present):
        props = _dict(schema.get("properties"))
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _merge(props.get(k, {}), [v[k] for v in present if k in v], root) for k in keys}
    return present[0]


def _lists(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, list):
        yield value
        for item in value:
            yield from _lists(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _lists(item)


def _shrink(value: Any, max_tokens: int) -> Any:
    while estimate_tokens(json.dumps(value, ensure_ascii=False)) > max_tokens:
        longest = max(_lists(value), key=len, default=None)
        if longest is None or len(longest) <= 1:
            break
        longest.pop()
    return value
