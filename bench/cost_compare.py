"""Cost of prompt caching and of a cheaper voting panel, from measured usage.

    python -m bench.cost_compare [--docs 20] [--latency-ms 300]

The same long man pages (`bench.manpages`, above Haiku 4.5's 4,096-token cache minimum) go
through real workers on Redis + PostgreSQL and the real anthropic SDK against the stub, whose
prompt cache follows Anthropic's rules. Three patterns, the stub's cache emptied before each:
1 x Sonnet 4.6, 3 x Haiku 4.5 with cache-aware dispatch, 3 x Haiku 4.5 sent at once. The minimum
is what the same calls cost if the shared prefix is written once and read by the other voters.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, workers
from bench.manpages import LABELS, build

REDIS_DB = 11


def run(quick: bool = True, docs: int = 20, latency_ms: int = 300, in_flight: int = 2) -> dict[str, Any]:
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
            result = run_compare(documents, LABELS, default_specs("claude-sonnet-4-6", "claude-haiku-4-5", 3),
                                 source="bench.manpages --min-chars 20000", settings=settings, timeout=120,
                                 in_flight=in_flight)
    result.pop("_results")
    return {
        "benchmark": "cost_compare",
        "command": f"python -m bench.cost_compare --docs {docs} --latency-ms {latency_ms}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "params": {"docs": len(rows), "latency_ms": latency_ms, "in_flight": in_flight,
                   "mean_chars": round(sum(len(r["text"]) for r in rows) / max(1, len(rows)))},
        **result,
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['docs']} man pages of at least 20,000 characters (mean {p['mean_chars']}), stub latency "
        f"{p['latency_ms']} ms, {p['in_flight']} runs in flight; costs from the usage the stub reported "
        "(its cache follows Anthropic's rules), priced with `providers/prices.py`.",
        "",
        "| pattern | cost (USD) | minimum under the cache rules | cost / minimum | cache write tok | "
        "cache read tok | mean wall ms | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["patterns"]:
        cost, minimum = row["cost"]["total_usd"], row["minimum_cost"]["total_usd"]
        lines.append(
            f"| {row['pattern']} | {cost:.6f} | {minimum:.6f} | {cost / minimum:.4f} | "
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(docs=args.docs, latency_ms=args.latency_ms)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
