"""`chorus models`: every model chorus knows (the registry, workflows/models.toml, and the user's models
file, CHORUS_MODELS_FILE)."""

from __future__ import annotations

import json

from chorus.cli.base import JsonOpt, Table, cli_settings, out
from workflows.registry import REGISTRY_AS_OF, ModelInfo, all_models


def _tokens(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K" if n % 1000 == 0 else f"{n:,}"


def _money(x: float) -> str:
    return f"${x:g}"


def _price_cell(m: ModelInfo) -> str:
    base = f"{_money(m.prices.input)} / {_money(m.prices.output)}"
    if m.long_prompt is None:
        return base
    tier = m.long_prompt
    return (f"{base}\n{_money(tier.prices.input)} / {_money(tier.prices.output)} "
            f"above {_tokens(tier.above_prompt_tokens)} prompt")


def models(as_json: JsonOpt = False) -> None:
    """List the models chorus knows: family (rate-limit pool), prices, cache minimum, limits, capabilities."""
    settings = cli_settings()  # reads CHORUS_MODELS_FILE, merged over the registry
    entries = all_models()
    mine = [m for m in entries if m.origin != "registry"]
    if as_json:
        out.print_json(json.dumps({"as_of": REGISTRY_AS_OF, "models_file": str(settings.models_file or "") or None,
                                   "models": [m.to_json() for m in entries]}))
        return
    table = Table("id", "status", "family", "$ in / out per MTok", "cache read", "min cacheable", "context",
                  "max output", "structured outputs", "effort")
    for m in entries:
        table.add_row(m.id + (" *" if m.origin != "registry" else ""), m.status, m.family, _price_cell(m),
                      f"{_money(m.prices.cache_read)} ({m.cache_read_multiplier:g}x)", f"{m.min_cacheable_tokens:,}",
                      _tokens(m.context_window), _tokens(m.max_output_tokens),
                      "yes" if m.structured_outputs else "no", ", ".join(m.effort_levels) or "-")
    out.print(table)
    out.print(f"[dim]Prices as of {REGISTRY_AS_OF}; each entry's sources: chorus models --json. The Batches API "
              f"takes 50 % off. A family shares one set of rate-limit buckets.[/dim]")
    if mine:
        out.print(f"[dim]* from your models file ({mine[0].origin}, CHORUS_MODELS_FILE), with the prices and "
                  f"sources it gives.[/dim]", highlight=False)
