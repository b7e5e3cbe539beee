"""Cost maths from token usage (pure). Prices come from the model registry (`workflows/models.toml`).

Anthropic bills four kinds of input separately: uncached input (`input_tokens`), cache writes
(`cache_creation_input_tokens`, 1.25x input for 5 minutes, 2x for 1 hour), cache reads
(`cache_read_input_tokens`, priced per model: 0.1x input on most, 0.05x on Opus/Sonnet 5.5) and
output. The Batches API takes the model's batch discount (50 %) off all of it.

Prices depend on the request: Haiku 5.5 bills EVERY token of a request whose prompt (input + cache
writes + cache reads) is above 100,000 tokens at its upper tier, so `cost_of` takes the usage of one
request. Several requests are priced one by one (`cost_of_requests`), never as one summed usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workflows import registry

CacheTtl = Literal["5m", "1h"]
PER_MTOK = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    model: str
    input_per_mtok: float
    output_per_mtok: float


def model_entry(model: str) -> registry.ModelInfo:
    info = registry.model_info(model)
    if info is None:
        known = ", ".join(m.id for m in registry.all_models())
        raise ValueError(f"no price for model {model!r}; add it to workflows/models.toml (known: {known})")
    return info


def price_for(model: str) -> ModelPrice:
    """The base-tier input and output price (a long-prompt tier is applied per request by `cost_of`)."""
    info = model_entry(model)
    return ModelPrice(info.id, info.prices.input, info.prices.output)


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


def cost_of(model: str, usage: TokenUsage, *, cache_ttl: CacheTtl = "5m", batch_api: bool = False,
            tier_prompt_tokens: int | None = None) -> Cost:
    """The cost of ONE request's usage: its prompt size picks the price tier for all of its tokens.
    `tier_prompt_tokens` (an estimate's): the largest prompt the request may have, when that is more."""
    info = model_entry(model)
    p = info.prices_for(max(usage.prompt_tokens, tier_prompt_tokens or 0))
    scale = (1.0 - info.batch_discount if batch_api else 1.0) / PER_MTOK
    write = p.cache_write_1h if cache_ttl == "1h" else p.cache_write_5m
    return Cost(
        input_usd=usage.input_tokens * p.input * scale,
        output_usd=usage.output_tokens * p.output * scale,
        cache_write_usd=usage.cache_write_tokens * write * scale,
        cache_read_usd=usage.cache_read_tokens * p.cache_read * scale,
        estimated=usage.estimated,
    )


def cost_of_requests(model: str, usages: Iterable[TokenUsage], *, cache_ttl: CacheTtl = "5m",
                     batch_api: bool = False) -> Cost:
    """Several requests of one model, each priced on its own prompt size."""
    return total(cost_of(model, u, cache_ttl=cache_ttl, batch_api=batch_api) for u in usages)


def total(costs: Iterable[Cost]) -> Cost:
    result = Cost()
    for c in costs:
        result = result + c
    return result


def cost_without_cache(model: str, usage: TokenUsage) -> Cost:
    """What the same tokens cost had nothing been written to or read from the cache."""
    return cost_of(model, TokenUsage(usage.prompt_tokens, usage.output_tokens, estimated=usage.estimated))


def minimum_vote_cost(
    model: str, prefix_tokens: int, tail_tokens: Sequence[int], output_tokens: Sequence[int], *, min_cacheable: int,
    lane: bool = False,
) -> Cost:
    """The cheapest a vote on one model can be under Anthropic's cache rules: the cheaper of two
    schedules, the shared prefix written once and read by every other voter (only when it reaches the
    model's minimum), and every voter paying it as plain input (cheaper when a write's premium is not
    repaid by the reads: with the lane's 1-hour write at 2x, two voters). `tail_tokens`/`output_tokens`
    are per voter. `lane`: the calls went through the Message Batches API, at its price with the
    1-hour cache write the lane uses."""
    n = len(tail_tokens)
    if n != len(output_tokens):
        raise ValueError("tail_tokens and output_tokens need one entry per voter")
    if n == 0:
        return Cost()

    def schedule(cached: bool) -> Cost:
        # Priced voter by voter: a request's own prompt size decides its tier (Haiku 5.5 above 100k).
        usages = [
            TokenUsage(input_tokens=tail + (0 if cached else prefix_tokens), output_tokens=out,
                       cache_write_tokens=prefix_tokens if cached and i == 0 else 0,
                       cache_read_tokens=prefix_tokens if cached and i > 0 else 0)
            for i, (tail, out) in enumerate(zip(tail_tokens, output_tokens, strict=True))
        ]
        return cost_of_requests(model, usages, cache_ttl="1h" if lane else "5m", batch_api=lane)

    uncached = schedule(False)
    if prefix_tokens < min_cacheable or n < 2 or prefix_tokens == 0:
        return uncached
    cached = schedule(True)
    return cached if cached.total_usd <= uncached.total_usd else uncached
