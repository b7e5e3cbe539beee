"""Cost of prompt caching and of a cheaper voting panel, from measured usage.

    python -m bench.cost_compare [--docs 20] [--latency-ms 300] [--single-model M] [--panel-model M]

The same long man pages (`bench.manpages`, above the panel model's cache minimum) go through real
workers on Redis + PostgreSQL and the real anthropic SDK against the stub, whose prompt cache
follows Anthropic's rules. Three patterns, the stub's cache emptied before each: one call on the
single model, 3 voters on the panel model with cache-aware dispatch, and the same 3 sent at once.
The models default to those of `chorus compare` (Sonnet 5.5 for the single call, Haiku 5.5 for
the panel); prices come from the model registry (`workflows/models.toml`).

"cost / minimum" is measured against the independent minimum of `chorus/costing.py`: the shared
prefix counted with the API's count_tokens (here the stub's), each call's whole prompt as the API
billed it, and the cheapest legal schedule under the cache rules (one write of the prefix and a
read for every other voter, when the prefix reaches the model's minimum). It does not look at
what the run cached, so a vote that cached nothing shows a ratio well above 1.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, workers
from bench.manpages import LABELS, build

REDIS_DB = 11
# `chorus compare`'s defaults (chorus/cli/analysis.py), restated: the bench does not import the CLI.
SINGLE_MODEL, PANEL_MODEL, VOTERS = "claude-sonnet-5-5", "claude-haiku-5-5", 3


def run(quick: bool = True, docs: int = 20, latency_ms: int = 300, in_flight: int = 2,
        single_model: str = SINGLE_MODEL, panel_model: str = PANEL_MODEL) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    per_section = max(1, docs // 5)
    rows = build(per_section, min_chars=20000)[:docs]
    with running_stub(latency_ms=latency_ms) as stub, fresh_postgres("chorus_bench_cost"), \
            flushed_redis(REDIS_DB):
        data = configure_env(redis_db=REDIS_DB, pg_db="chorus_bench_cost", stub_url=stub.base_url)
        from chorus.analysis.compare import default_specs, run_compare
        from chorus.analysis.labelled import LabelledDoc
        from settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        documents = [LabelledDoc(r["id"], r["text"], r["label"]) for r in rows]
        with workers(data, pool="threads", concurrency=10):
            result = run_compare(documents, LABELS, default_specs(single_model, panel_model, VOTERS),
                                 source="bench.manpages --min-chars 20000", settings=settings, timeout=120,
                                 in_flight=in_flight)
    result.pop("_results")
    return {
        "benchmark": "cost_compare",
        "command": f"python -m bench.cost_compare --docs {docs} --latency-ms {latency_ms} "
                   f"--single-model {single_model} --panel-model {panel_model}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "params": {"docs": len(rows), "latency_ms": latency_ms, "in_flight": in_flight, "single_model": single_model,
                   "panel_model": panel_model, "voters": VOTERS,
                   "mean_chars": round(sum(len(r["text"]) for r in rows) / max(1, len(rows)))},
        **result,
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    counted = sorted({row.get("minimum_counted_with", "local estimate") for row in result["patterns"]})
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['docs']} man pages of at least 20,000 characters (mean {p['mean_chars']}), stub latency "
        f"{p['latency_ms']} ms, {p['in_flight']} runs in flight; costs from the usage the stub reported "
        "(its cache follows Anthropic's rules), priced with the model registry (`workflows/models.toml`).",
        "",
        "\"minimum\" is the independent minimum of `chorus/costing.py`, not what the run cached: the shared prefix "
        f"counted with {' / '.join(counted)}, each call's whole billed prompt, and the cheapest legal schedule "
        "under the cache rules (one write of the prefix, a read for every other voter). \"cost / minimum\" is the "
        "cost over that.",
        "",
        "| pattern | cost (USD) | minimum (independent) | cost / minimum | cache write tok | "
        "cache read tok | mean wall ms | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["patterns"]:
        cost, minimum = row["cost"]["total_usd"], row["minimum_cost"]["total_usd"]
        ratio = f"{cost / minimum:.4f}" if minimum > 0 else "-"
        lines.append(
            f"| {row['pattern']} | {cost:.6f} | {minimum:.6f} | {ratio} | "
            f"{row.get('cache_write_tokens', '-')} | {row.get('cache_read_tokens', '-')} | "
            f"{row['mean_wall_s'] * 1000:.0f} | "
            f"{row['correct']}/{row['labelled']} |"
        )
    lines.append("")
    for name, value in result["ratios"].items():
        lines.append(f"- `{name}` = **{value}**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--latency-ms", type=int, default=300)
    ap.add_argument("--single-model", default=SINGLE_MODEL)
    ap.add_argument("--panel-model", default=PANEL_MODEL)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(docs=args.docs, latency_ms=args.latency_ms, single_model=args.single_model,
                 panel_model=args.panel_model)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
