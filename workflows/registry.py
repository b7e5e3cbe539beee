"""The model registry: every model chorus knows, read from the data file `workflows/models.toml`.

Costs (`workflows.cost`), cache decisions (`workflows.tokens.min_cacheable_tokens`), size checks
(`context_window`, `max_output_tokens`), capabilities (structured outputs, effort) and the rate-limit
pools (`family`) all read it, so a price or a new model is one edit of the data file, with its source
and date. Pure: it imports nothing of the project.

A dated snapshot (`claude-sonnet-4-5-20250929`) or `-latest` is its base model; any other suffix is a
different model (`claude-opus-4-7` is not `claude-opus-4`).

A model outside the registry is used only with an explicit entry and its prices: the user's models
file (CHORUS_MODELS_FILE, read by `settings`; `parse_user_models`, `use_user_models`) is merged over
the registry, so that every model chorus calls has a price. A name neither knows is refused with the
closest names (`unknown_model`).
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

DATA_FILE = "models.toml"
_WHERE = f"workflows/{DATA_FILE}"
_SNAPSHOT = re.compile(r"^(?P<base>.+?)(?:-\d{8}|-latest)?$")
STATUSES = ("current", "served", "retired")
TOKENIZERS = ("legacy", "2026")

T = TypeVar("T")


class RegistryError(ValueError):
    """The data file is malformed; the message names the entry, the field and the fix."""


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class LongPromptTier:
    """Every token of a request whose prompt (input + cache writes + cache reads) is above
    `above_prompt_tokens` is billed at `prices` (Haiku 5.5: the whole request, not the excess)."""

    above_prompt_tokens: int
    prices: Prices
    source: str


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    status: str  # current | served | retired
    family: str  # the rate-limit pool
    prices: Prices
    long_prompt: LongPromptTier | None
    batch_discount: float  # share taken off every line by the Message Batches API
    min_cacheable_tokens: int
    context_window: int
    max_output_tokens: int
    tokenizer: str  # "legacy" or "2026" (Opus 4.7 and later)
    tokenizer_ratio: float  # tokens of this tokenizer per token of the legacy one, same text
    structured_outputs: bool
    effort_levels: tuple[str, ...]
    default_effort: str | None
    thinking: str
    snapshots: tuple[str, ...]
    source: str
    as_of: str
    note: str
    origin: str = "registry"  # or the path of the user's models file (CHORUS_MODELS_FILE) it comes from

    def prices_for(self, prompt_tokens: int) -> Prices:
        """The prices of one request whose prompt (input + cache writes + cache reads) has this many tokens."""
        if self.long_prompt is not None and prompt_tokens > self.long_prompt.above_prompt_tokens:
            return self.long_prompt.prices
        return self.prices

    @property
    def cache_read_multiplier(self) -> float:
        return self.prices.cache_read / self.prices.input if self.prices.input else 0.0

    def to_json(self) -> dict[str, Any]:
        tier = self.long_prompt
        return {
            "id": self.id, "name": self.name, "status": self.status, "family": self.family,
            "prices_per_mtok": _prices_json(self.prices),
            "long_prompt": None if tier is None else {"above_prompt_tokens": tier.above_prompt_tokens,
                                                      "prices_per_mtok": _prices_json(tier.prices),
                                                      "source": tier.source},
            "batch_discount": self.batch_discount, "min_cacheable_tokens": self.min_cacheable_tokens,
            "context_window": self.context_window, "max_output_tokens": self.max_output_tokens,
            "tokenizer": self.tokenizer, "tokenizer_ratio": self.tokenizer_ratio,
            "structured_outputs": self.structured_outputs, "effort_levels": list(self.effort_levels),
            "default_effort": self.default_effort, "thinking": self.thinking, "snapshots": list(self.snapshots),
            "source": self.source, "as_of": self.as_of, "note": self.note, "origin": self.origin,
        }


def _prices_json(p: Prices) -> dict[str, float]:
    return {"input": p.input, "output": p.output, "cache_write_5m": p.cache_write_5m,
            "cache_write_1h": p.cache_write_1h, "cache_read": p.cache_read}


# ----- reading the data file ----------------------------------------------------------------------
def _field(entry: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise RegistryError(f"{where}: '{key}' is missing; add it (see the comments at the top of {_WHERE})")
    value = entry[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):  # True is an int too
        raise RegistryError(f"{where}: '{key}' must be a {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "whole number", float: "number", str: "text", bool: "true or false", list: "list"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _price(entry: Mapping[str, Any], key: str, where: str) -> float:
    value = float(_field(entry, key, (int, float), where))
    if value < 0:
        raise RegistryError(f"{where}: '{key}' must be 0 or more dollars per MTok, got {value:g}")
    return value


def _positive_int(entry: Mapping[str, Any], key: str, where: str) -> int:
    value = _field(entry, key, int, where)
    if value <= 0:
        raise RegistryError(f"{where}: '{key}' must be a positive whole number, got {value}")
    return int(value)


def _prices(entry: Mapping[str, Any], where: str) -> Prices:
    return Prices(*(_price(entry, f"{name}_per_mtok", where)
                    for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")))


def _entry(raw: Any, index: int, file: str = _WHERE) -> ModelInfo:
    if not isinstance(raw, dict):
        raise RegistryError(f"{file}: [[model]] number {index + 1} is not a table")
    model_id = _field(raw, "id", str, f"{file}: [[model]] number {index + 1}")
    where = f"{file}: model {model_id!r}"
    if model_id != model_id.strip().lower() or not model_id:
        raise RegistryError(f"{where}: 'id' must be the API's model id in lower case, without spaces")
    status = _field(raw, "status", str, where)
    if status not in STATUSES:
        raise RegistryError(f"{where}: 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    tokenizer = _field(raw, "tokenizer", str, where)
    if tokenizer not in TOKENIZERS:
        raise RegistryError(f"{where}: 'tokenizer' must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    ratio = float(_field(raw, "tokenizer_ratio", (int, float), where))
    if not 0.5 <= ratio <= 3:
        raise RegistryError(f"{where}: 'tokenizer_ratio' must be between 0.5 and 3, got {ratio:g}")
    discount = float(_field(raw, "batch_discount", (int, float), where))
    if not 0 <= discount < 1:
        raise RegistryError(f"{where}: 'batch_discount' is the share taken off (0.5 = 50 % off), got {discount:g}")
    effort = _field(raw, "effort_levels", list, where)
    if not all(isinstance(level, str) and level for level in effort):
        raise RegistryError(f"{where}: 'effort_levels' must be a list of names such as [\"low\", \"high\"]")
    default_effort = raw.get("default_effort")
    if default_effort is not None and default_effort not in effort:
        raise RegistryError(f"{where}: 'default_effort' {default_effort!r} is not one of its 'effort_levels'")
    snapshots = raw.get("snapshots", [])
    if not isinstance(snapshots, list) or not all(isinstance(s, str) for s in snapshots):
        raise RegistryError(f"{where}: 'snapshots' must be a list of model ids")
    tier = raw.get("long_prompt")
    long_prompt = None
    if tier is not None:
        if not isinstance(tier, dict):
            raise RegistryError(f"{where}: 'long_prompt' must be a table ([model.long_prompt])")
        tier_where = f"{where}, long_prompt"
        long_prompt = LongPromptTier(_positive_int(tier, "above_prompt_tokens", tier_where), _prices(tier, tier_where),
                                     _field(tier, "source", str, tier_where))
    source, as_of = _field(raw, "source", str, where), _field(raw, "as_of", str, where)
    if not source.strip():
        raise RegistryError(f"{where}: 'source' is empty; name the pages the figures come from")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of):
        raise RegistryError(f"{where}: 'as_of' must be the date the sources were read, YYYY-MM-DD; got {as_of!r}")
    return ModelInfo(
        id=model_id, name=_field(raw, "name", str, where), status=status, family=_field(raw, "family", str, where),
        prices=_prices(raw, where), long_prompt=long_prompt, batch_discount=discount,
        min_cacheable_tokens=_positive_int(raw, "min_cacheable_tokens", where),
        context_window=_positive_int(raw, "context_window", where),
        max_output_tokens=_positive_int(raw, "max_output_tokens", where),
        tokenizer=tokenizer, tokenizer_ratio=ratio,
        structured_outputs=_field(raw, "structured_outputs", bool, where),
        effort_levels=tuple(effort), default_effort=default_effort, thinking=_field(raw, "thinking", str, where),
        snapshots=tuple(snapshots), source=source, as_of=as_of, note=str(raw.get("note", "")),
    )


def parse(text: str) -> tuple[str, dict[str, ModelInfo]]:
    """(as_of, id -> entry) of a registry file's text. Raises RegistryError naming the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{_WHERE} is not valid TOML: {exc}") from None
    as_of = data.get("as_of")
    if not isinstance(as_of, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of):
        raise RegistryError(f"{_WHERE}: the top-level 'as_of' must be a date, YYYY-MM-DD")
    entries = data.get("model")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"{_WHERE}: list the models as [[model]] tables")
    table: dict[str, ModelInfo] = {}
    for i, raw in enumerate(entries):
        info = _entry(raw, i)
        for name in (info.id, *info.snapshots):
            if name in table:
                raise RegistryError(f"{_WHERE}: {name!r} is listed twice; keep one entry")
            table[name] = info
    return as_of, table


@functools.cache
def _load() -> tuple[str, dict[str, ModelInfo]]:
    return parse(resources.files("workflows").joinpath(DATA_FILE).read_text(encoding="utf-8"))


REGISTRY_AS_OF: str = _load()[0]


# ----- models outside the registry: the user's models file (CHORUS_MODELS_FILE) -----------------------
# What a user's entry may leave out when it names a registry model as `like`: limits and capabilities,
# never prices (a model outside the registry is priced by its own entry, so its cost is never unknown).
_LIKE_FIELDS = ("batch_discount", "min_cacheable_tokens", "context_window", "max_output_tokens", "tokenizer",
                "tokenizer_ratio", "structured_outputs", "effort_levels", "default_effort", "thinking")
_PRICE_FIELDS = tuple(f"{name}_per_mtok" for name in ("input", "output", "cache_write_5m", "cache_write_1h",
                                                      "cache_read"))
_user: dict[str, ModelInfo] = {}


def _like_raw(info: ModelInfo) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "batch_discount": info.batch_discount, "min_cacheable_tokens": info.min_cacheable_tokens,
        "context_window": info.context_window, "max_output_tokens": info.max_output_tokens,
        "tokenizer": info.tokenizer, "tokenizer_ratio": info.tokenizer_ratio,
        "structured_outputs": info.structured_outputs, "effort_levels": list(info.effort_levels),
        "thinking": info.thinking,
    }
    if info.default_effort is not None:
        raw["default_effort"] = info.default_effort
    return raw


def parse_user_models(text: str, file: str) -> dict[str, ModelInfo]:
    """The entries of a user's models file (the registry's `[[model]]` format), id and snapshot -> entry.

    Each entry needs its `id`, its five prices (`input_per_mtok` ... `cache_read_per_mtok`), `source`
    and `as_of`. Its limits and capabilities are either written out, or taken from the registry model
    it names as `like` (what it leaves out); `name` defaults to the id, `status` to current, `family`
    (its rate-limit pool) to its own id. Raises RegistryError naming the file, the entry and the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{file} is not valid TOML: {exc}") from None
    entries = data.get("model")
    if not isinstance(entries, list) or not entries:
        raise RegistryError(f"{file}: list the models as [[model]] tables (id, the five prices, source, as_of)")
    table: dict[str, ModelInfo] = {}
    base = _load()[1]
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise RegistryError(f"{file}: [[model]] number {i + 1} is not a table")
        model_id = _field(raw, "id", str, f"{file}: [[model]] number {i + 1}")
        where = f"{file}: model {model_id!r}"
        for key in _PRICE_FIELDS:
            if key not in raw:
                raise RegistryError(f"{where}: '{key}' is missing: a model outside the registry needs all five "
                                    f"prices (US dollars per million tokens: {', '.join(_PRICE_FIELDS)}), so that "
                                    f"its cost is known")
        merged: dict[str, Any] = {"name": model_id, "status": "current", "family": model_id}
        like = raw.get("like")
        if like is not None:
            if not isinstance(like, str) or like.strip().lower() not in base:
                close = difflib.get_close_matches(str(like).strip().lower(), [m.id for m in base.values()], n=1)
                raise RegistryError(f"{where}: 'like' must name a model of the registry (`chorus models`), got "
                                    f"{like!r}" + (f"; did you mean {close[0]}?" if close else ""))
            merged.update(_like_raw(base[like.strip().lower()]))
        else:
            missing = [key for key in _LIKE_FIELDS if key not in raw and key != "default_effort"]
            if missing:
                raise RegistryError(f"{where}: '{missing[0]}' is missing; write it, or take the limits and "
                                    f"capabilities of a registry model with like = \"claude-sonnet-5-5\" (any id "
                                    f"of `chorus models`)")
        merged.update({k: v for k, v in raw.items() if k != "like"})
        info = replace(_entry(merged, i, file), origin=file)
        for name in (info.id, *info.snapshots):
            if name in table:
                raise RegistryError(f"{file}: {name!r} is listed twice; keep one entry")
            table[name] = info
    return table


def use_user_models(table: Mapping[str, ModelInfo] | None) -> None:
    """Merge these entries (`parse_user_models`) over the registry, in place of any merged before; None
    takes them away. An entry with a registry id replaces that model (its snapshots too)."""
    global _user
    _user = dict(table or {})
    _table.cache_clear()


def user_models() -> tuple[ModelInfo, ...]:
    """The entries merged from the user's models file, in its order."""
    return tuple(dict.fromkeys(_user.values()))


@functools.cache
def _table() -> dict[str, ModelInfo]:
    merged = {name: _user.get(info.id, info) for name, info in _load()[1].items()}
    merged.update(_user)
    return merged


def close_models(name: str, n: int = 3) -> list[str]:
    """The ids closest to a name the registry does not know, closest first (difflib); retired models
    (which the API no longer serves) are left out."""
    ids = [m.id for m in all_models() if m.status != "retired"]
    return difflib.get_close_matches(name.strip().lower(), ids, n=n, cutoff=0.6)


def unknown_model(name: str, named_by: str | None = None) -> str | None:
    """None when the registry (or the user's models file) knows `name`; else what to tell the user:
    the closest names and where the list is. `named_by` says where the name came from (a setting)."""
    if model_info(name) is not None:
        return None
    close = close_models(name)
    guess = (f"did you mean {close[0]}? " + (f"Also close: {', '.join(close[1:])}. " if close[1:] else "")
             if close else "")
    origin = f" ({named_by})" if named_by else ""
    return (f"model {name!r}{origin} is not in the model registry; {guess}`chorus models` lists the models chorus "
            f"knows, with their prices. A model outside the registry needs an entry with its prices in your models "
            f"file (CHORUS_MODELS_FILE; see the README, \"Models outside the registry\")")


# ----- what the rest of chorus asks -----------------------------------------------------------------
def canonical_id(model: str) -> str:
    """`claude-sonnet-4-5-20250929` or `claude-sonnet-4-5-latest` -> `claude-sonnet-4-5`."""
    name = model.strip().lower()
    table = _table()
    if name in table:
        return table[name].id
    match = _SNAPSHOT.match(name)
    return match.group("base") if match else name


def model_info(model: str) -> ModelInfo | None:
    """The registry's entry for a model id, a dated snapshot or `-latest`; None when unknown."""
    return _table().get(canonical_id(model))


def all_models() -> tuple[ModelInfo, ...]:
    """Every entry, in the data file's order (the current line-up first), then the user's models."""
    return tuple(dict.fromkeys(_table().values()))


def supports_structured_outputs(model: str) -> bool:
    info = model_info(model)
    return bool(info and info.structured_outputs)


def effort_levels(model: str) -> tuple[str, ...]:
    info = model_info(model)
    return info.effort_levels if info else ()


def context_window(model: str) -> int | None:
    info = model_info(model)
    return info.context_window if info else None


def max_output_tokens(model: str) -> int | None:
    info = model_info(model)
    return info.max_output_tokens if info else None


def family(model: str) -> str:
    """The rate-limit pool a model shares with the others of its family (Anthropic's rate-limits page
    lists one table per family, e.g. Opus 4.5, 4.6 and 4.7 combined). An unknown model is a pool of
    its own: its id (a dated snapshot as its base id)."""
    info = model_info(model)
    return info.family if info else canonical_id(model)


def pooled(table: Mapping[str, T], model: str) -> T | None:
    """What `table` (keyed by model id, snapshot or family name) says for the pool of `model`: the
    model's own entry, else its family's, else that of another model of the same family."""
    if model in table:
        return table[model]
    pool = family(model)
    if pool in table:
        return table[pool]
    for key, value in table.items():
        if key != "*" and family(key) == pool:
            return value
    return None


def pool_conflicts(table: Mapping[str, object]) -> list[str]:
    """One message per family whose models `table` gives different values (they share one pool)."""
    by_pool: dict[str, dict[str, object]] = {}
    for key, value in table.items():
        if key != "*":
            by_pool.setdefault(family(key), {})[key] = value
    problems = []
    for pool, entries in by_pool.items():
        if len({repr(v) for v in entries.values()}) > 1:
            names = " and ".join(sorted(entries))
            problems.append(f"{names} share the rate-limit pool {pool!r} (Anthropic pools limits per model "
                            f"family); give the limit once, as {pool}:... or on one of them")
    return problems


# ----- what one request may carry (the [documents] table) -----------------------------------------
@dataclass(frozen=True)
class DocumentLimits:
    request_max_bytes: int
    batch_max_bytes: int
    pdf_pages: int
    pdf_pages_1m: int
    image_max_side_px: int
    image_max_base64_bytes: int
    file_max_bytes: int
    source: str
    as_of: str


@functools.cache
def document_limits() -> DocumentLimits:
    raw = tomllib.loads(resources.files("workflows").joinpath(DATA_FILE).read_text(encoding="utf-8"))
    table = raw.get("documents")
    if not isinstance(table, dict):
        raise RegistryError(f"{_WHERE}: the [documents] table is missing")
    where = f"{_WHERE} [documents]"
    ints = {k: _positive_int(table, k, where) for k in ("request_max_bytes", "batch_max_bytes", "pdf_pages",
                                                        "pdf_pages_1m", "image_max_side_px",
                                                        "image_max_base64_bytes", "file_max_bytes")}
    return DocumentLimits(**ints, source=_field(table, "source", str, where), as_of=_field(table, "as_of", str, where))


def pdf_page_limit(model: str) -> int:
    """PDF pages one request may carry: 600 on the 1M-context models, 100 on the others (and on a
    model the registry does not know)."""
    limits = document_limits()
    window = context_window(model)
    return limits.pdf_pages_1m if window is not None and window >= 1_000_000 else limits.pdf_pages
