"""Cost maths from token usage (pure). Prices come from `providers/prices.py`.

Anthropic bills four kinds of input separately: uncached input (`input_tokens`), cache writes
(`cache_creation_input_tokens`, 1.25x input for 5 minutes, 2x for 1 hour), cache reads
(`cache_read_input_tokens`, 0.1x input) and output. The Batches API halves all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workflows import prices
from workflows.tokens import model_family

CacheTtl = Literal["5m", "1h"]
PER_MTOK = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input_per_mtok: float
    output_per_mtok: float


def price_for(model: str) -> ModelPrice:
    family = model_family(model)
    try:
        inp, outp = prices.BASE_PRICES_PER_MTOK[family]
    except KeyError:
        known = ", ".join(prices.BASE_PRICES_PER_MTOK)
        raise ValueError(f"no price for model {model!r}; add it to providers/prices.py (known: {known})") from None
    return ModelPrice(family, inp, outp)


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    estimated: bool = False

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


@dataclass(frozen=True)
class Cost:
    """US dollars, split by what they pay for. `estimated` when any usage was an estimate."""

    input_usd: float = 0.0
    output_usd: float = 0.0
    cache_write_usd: float = 0.0
    cache_read_usd: float = 0.0
    estimated: bool = False

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.output_usd + self.cache_write_usd + self.cache_read_usd

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.input_usd + other.input_usd, self.output_usd + other.output_usd,
                    self.cache_write_usd + other.cache_write_usd, self.cache_read_usd + other.cache_read_usd,
                    self.estimated or other.estimated)

    def to_json(self) -> dict[str, Any]:
        return {"total_usd": round(self.total_usd, 8), "input_usd": round(self.input_usd, 8),
                "output_usd": round(self.output_usd, 8), "cache_write_usd": round(self.cache_write_usd, 8),
                "cache_read_usd": round(self.cache_read_usd, 8), "estimated": self.estimated}


def cost_of(model: str, usage: TokenUsage, *, cache_ttl: CacheTtl = "5m", batch_api: bool = False) -> Cost:
    p = price_for(model)
    write_mult = prices.CACHE_WRITE_1H_MULTIPLIER if cache_ttl == "1h" else prices.CACHE_WRITE_5M_MULTIPLIER
    scale = prices.BATCH_API_DISCOUNT if batch_api else 1.0
    per_in = p.input_per_mtok / PER_MTOK * scale
    return Cost(
        input_usd=usage.input_tokens * per_in,
        output_usd=usage.output_tokens * p.output_per_mtok / PER_MTOK * scale,
        cache_write_usd=usage.cache_write_tokens * per_in * write_mult,
        cache_read_usd=usage.cache_read_tokens * per_in * prices.CACHE_READ_MULTIPLIER,
        estimated=usage.estimated,
    )


def total(costs: Iterable[Cost]) -> Cost:
    result = Cost()
    for c in costs:
        result = result + c
    return result


def cost_without_cache(model: str, usage: TokenUsage) -> Cost:
    """What the same tokens cost had nothing been written to or read from the cache."""
    return cost_of(model, TokenUsage(usage.prompt_tokens, usage.output_tokens, estimated=usage.estimated))


def minimum_vote_cost(
    model: str, prefix_tokens: int, tail_tokens: Sequence[int], output_tokens: Sequence[int], *, min_cacheable: int
) -> Cost:
    """The cheapest a vote on one model can be under Anthropic's cache rules: the shared prefix is
    written once and read by every other voter (when it reaches the model's minimum; otherwise
    every voter pays it as plain input). `tail_tokens`/`output_tokens` are per voter."""
    n = len(tail_tokens)
    if n != len(output_tokens):
        raise ValueError("tail_tokens and output_tokens need one entry per voter")
    if n == 0:
        return Cost()
    cached = prefix_tokens >= min_cacheable and n > 1
    usage = TokenUsage(
        input_tokens=sum(tail_tokens) + (0 if cached else prefix_tokens * n),
        output_tokens=sum(output_tokens),
        cache_write_tokens=prefix_tokens if cached else 0,
        cache_read_tokens=prefix_tokens * (n - 1) if cached else 0,
    )
    return cost_of(model, usage)
