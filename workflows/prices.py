"""Prices, read from the model registry (`workflows/models.toml`, one entry per model with its source
and date). Kept for the callers of the old price table; new code asks `workflows.registry`.

Base prices are US dollars per million tokens (MTok). Cache reads are priced per model (0.1x the
input on most, 0.05x on Opus/Sonnet 5.5, 0.025x on Fable 5.x); the write multipliers below are the
standard ones every entry follows today, and Haiku 5.5's long-prompt tier re-prices a whole request
(`workflows.cost.cost_of`).
"""

from __future__ import annotations

from workflows import registry

PRICES_AS_OF = registry.REGISTRY_AS_OF
PRICES_SOURCE = "workflows/models.toml (each entry names its pages; mainly https://platform.claude.com/docs/en/about-claude/pricing)"

# model id -> (input $/MTok, output $/MTok), the base tier
BASE_PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    m.id: (m.prices.input, m.prices.output) for m in registry.all_models()
}

CACHE_WRITE_5M_MULTIPLIER = 1.25  # of the input price, for a 5-minute cache entry (the default TTL)
CACHE_WRITE_1H_MULTIPLIER = 2.0  # of the input price, for a 1-hour cache entry
BATCH_API_DISCOUNT = 0.5  # the Message Batches API bills 50 % of every line (per model: registry batch_discount)


def cache_read_multiplier(model: str) -> float:
    """A cache read's price as a share of the model's input price; raises ValueError for an unknown model."""
    info = registry.model_info(model)
    if info is None:
        raise ValueError(f"no price for model {model!r}; add it to workflows/models.toml")
    return info.cache_read_multiplier
