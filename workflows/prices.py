"""The price table, as data. Update the figures and `PRICES_AS_OF` together when Anthropic changes them.

Source: Anthropic's pricing page (https://www.anthropic.com/pricing, "API" section) and the prompt
caching guide (docs.anthropic.com, "Prompt caching: pricing"), as quoted in chorus's DESIGN.md.
Base prices are US dollars per million tokens (MTok); the cache and batch figures are multipliers
of the base input price (cache) or of the whole bill (batch), as Anthropic states them.
"""

from __future__ import annotations

PRICES_AS_OF = "2026-11-25"
PRICES_SOURCE = "https://www.anthropic.com/pricing; docs.anthropic.com prompt-caching pricing (via DESIGN.md)"

# model family -> (input $/MTok, output $/MTok)
BASE_PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
}

CACHE_WRITE_5M_MULTIPLIER = 1.25  # of the input price, for a 5-minute cache entry (the default TTL)
CACHE_WRITE_1H_MULTIPLIER = 2.0  # of the input price, for a 1-hour cache entry
CACHE_READ_MULTIPLIER = 0.1  # of the input price
BATCH_API_DISCOUNT = 0.5  # the Message Batches API bills 50 % of every line above
