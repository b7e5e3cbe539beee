"""Run the benchmarks and write BENCHMARKS.md.

    python -m bench all [--quick] [--only overhead,throughput]
    python -m bench list

Each benchmark module has `run(quick) -> dict` and `render(dict) -> str`. Results are printed,
kept as JSON in bench/results/, and rendered into BENCHMARKS.md, each table under the command that
made it, the machine and the date. A benchmark that fails is reported as failed in the file; the
others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# (key, module, title); a module's `run` takes `quick`, or the keyword arguments in QUICK_ARGS.
REGISTRY: list[tuple[str, str, str]] = [
    ("overhead", "bench.overhead", "Orchestration overhead of a 5-voter vote (issue 7)"),
    ("throughput", "bench.throughput", "Throughput at zero provider latency (issue 7)"),
    ("concurrency", "bench.concurrency", "Concurrency with a 2 s provider (issue 7)"),
    ("embedded", "bench.embedded", "Embedded mode chord overhead (issue 7)"),
    ("vote_overhead", "bench.vote_overhead", "Vote overhead, chorus alone on Redis + PostgreSQL (issue 2)"),
    ("batch_enqueue", "bench.batch_enqueue", "Batch enqueue rate and submitter memory (issue 3)"),
    ("cost_compare", "bench.cost_compare", "Cost: prompt caching and a cheaper voting panel (issue 5)"),
    ("ratelimit", "bench.ratelimit",
     "Shared rate limit vs Celery's per-worker rate_limit, naive and careful, at 600 RPM (issues 4, 14)"),
    ("cache_warm", "bench.cache_warm", "Cache warm-up: leader first vs a max_tokens: 0 pre-warm (issue 13)"),
    ("lanes", "bench.lanes", "Adaptive voting and the batch lane on the man-page set (issue 13)"),
    ("batch_limit", "bench.batch_limit",
     "A batch at the rate limit: chorus batch vs an asyncio script, 3,000 RPM, 1 s ± 0.3 s (issue 12)"),
    ("capacity", "bench.capacity", "Capacity: calls in flight through chorus batch at 2 s latency (issue 12)"),
    ("documents", "bench.documents",
     "Documents: a 300-page PDF sectioned by pages vs one call; a 5-voter PDF vote's cost (issue 21)"),
    ("estimates", "bench.estimates",
     "Estimates: the estimate ÷ the stub's bill, per document kind, way and model (issue 22)"),
    ("offline_scorer", "bench.offline_scorer",
     "The offline scorer's accuracy on the README's task, new beside old (issue 25)"),
    ("startup", "bench.startup", "Start-up: `chorus --help`, `chorus models`, an embedded vote's overhead (issue 25)"),
]

QUICK_ARGS: dict[str, dict[str, Any]] = {
    "batch_enqueue": {"sizes": [1000, 10000], "voters": 3, "max_in_flight": 64, "concurrency": 4, "e2e_max": 0,
                      "pool": "prefork"},
    "ratelimit": {"quick": True, "window": 30.0},
}

BEGIN, END = "<!-- bench all: begin -->", "<!-- bench all: end -->"
INTRO = """{begin}
Written by `python -m bench all{quick}` on {date}, {machine}. The machine is shared (on the development VM,
other engineers' test sessions run at the same time) and noisy, so every comparison is between
systems measured in the same run; read ratios, not absolute numbers. Every section names the
command that produces it alone. Raw results: `bench/results/<key>.json`, one small JSON summary
per benchmark, committed with this file (`.gitignore` keeps everything else under bench/results/ out).
"""


def run_one(key: str, module: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark in a fresh process: settings and the Celery app are read once per process,
    and each benchmark points them at its own databases."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{key}.json"
    out.unlink(missing_ok=True)
    kwargs = QUICK_ARGS[key] if quick and key in QUICK_ARGS else {"quick": quick}
    code = (
        "import importlib, json, sys, time\n"
        f"mod = importlib.import_module({module!r})\n"
        "t0 = time.perf_counter()\n"
        f"result = mod.run(**json.loads({json.dumps(json.dumps(kwargs))}))\n"
        "result['bench_seconds'] = round(time.perf_counter() - t0, 1)\n"
        f"open({str(out)!r}, 'w').write(json.dumps(result, indent=2, default=str))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{module} exited with code {proc.returncode}")
    return json.loads(out.read_text())


def write_markdown(sections: list[str], quick: bool) -> None:
    """Replace the generated part of BENCHMARKS.md; the hand-written notes after it stay."""
    from bench.harness import machine

    path = ROOT / "BENCHMARKS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    head = INTRO.format(begin=BEGIN, quick=" --quick" if quick else "",
                        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine())
    generated = head + "\n" + "\n\n".join(sections) + "\n" + END
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
    else:
        before, after = "# Benchmarks\n\n", "\n\n" + old.split("\n", 1)[-1]
    path.write_text(before + generated + after)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "list"])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (about 22 minutes on 2 cores)")
    ap.add_argument("--only", help="comma-separated keys")
    args = ap.parse_args(argv)
    if args.what == "list":
        for key, module, title in REGISTRY:
            print(f"{key:14} {module:24} {title}")
        return 0
    wanted = set(args.only.split(",")) if args.only else None
    sections, failed = [], 0
    for key, module, title in REGISTRY:
        if wanted and key not in wanted:
            continue
        print(f"==> {key}: {title}", flush=True)
        try:
            result = run_one(key, module, args.quick)
            body = importlib.import_module(module).render(result)
            print(body, flush=True)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            failed += 1
            traceback.print_exc()
            body = f"**This benchmark failed in this run:** `{type(exc).__name__}: {exc}`"
        sections.append(f"## {title}\n\n{body}")
    write_markdown(sections, args.quick)
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
