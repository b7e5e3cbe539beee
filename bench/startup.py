"""Start-up: `chorus --help`, `chorus models`, and one embedded vote's overhead (issue 25).

    python -m bench.startup [--quick] [--before REF]

Each figure is a real `python -m chorus.cli ...` process in a clean environment (no CHORUS_* or
ANTHROPIC_* variables: embedded mode, offline provider), timed from the outside:

- `--help` and `models`: the wall time of the process, and the import time `python -X importtime`
  reports for `--help` (the sum of every module's own time), with the heavy packages it imported;
- `vote`: `chorus vote TEXT --labels ... --json` in one data directory (the first vote creates the
  store; it is reported apart). Overhead = the run's wall time minus its slowest voter, as `chorus vote`
  prints it; the process's wall time besides (start-up, the worker's start and stop included);
- `demo`: `chorus demo --json`, its own `elapsed_s` (what the README quotes) and the process's wall time.

With `--before REF` the same measurements run on `git archive REF` (extracted to a temporary folder),
interleaved round by round with the working tree's, so both see the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import goal_lines, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HEAVY = ("celery", "kombu", "sqlalchemy", "alembic", "anthropic", "httpx", "pypdf", "docx", "bs4", "PIL", "redis",
         "pydantic_settings")
TEXT = "The kettle boils fast and the handle stays cool. I love it."
GOAL_HELP_S = 0.5
GOAL_MODELS_S = 0.5
GOAL_OVERHEAD_S = 1.0


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env["CHORUS_DATA_DIR"] = str(data)
    env.pop("PYTHONPATH", None)
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli(tree: Path, data: Path, *args: str, importtime: bool = False, cpu: list[float] | None = None
         ) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run the command; its wall time, and (appended to `cpu`) the CPU seconds it and its children used,
    which the machine's load does not inflate as it does the wall time."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "chorus.cli", *args]
    c0, t0 = _cpu(), time.perf_counter()
    # cwd = the tree: `python -m` puts it first on sys.path, ahead of the editable install.
    proc = subprocess.run(command, cwd=tree, env=_env(data), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(_cpu() - c0)
    return wall, proc


def _imports(stderr: str) -> tuple[float, list[str]]:
    """Total import time (ms, the sum of each module's own time) and the heavy packages imported."""
    total, seen = 0, set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            total += int(m[1])
            seen.add(m[2].split(".")[0])
    return round(total / 1000, 1), sorted(h for h in HEAVY if h in seen)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3)}


def _checked(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if proc.returncode != 0:
        raise SystemExit(f"{what} exited with {proc.returncode}: {proc.stderr[-1500:]}")
    return proc


def _tree_of(ref: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="chorus-startup-before-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(quick: bool = True, before: str | None = None) -> dict[str, Any]:
    rounds = 5 if quick else 10
    votes = 4 if quick else 8
    demos = 2 if quick else 3
    trees = {"after": ROOT}
    if before:
        trees = {"before": _tree_of(before), **trees}
    raw: dict[str, dict[str, list[Any]]] = {name: {k: [] for k in (
        "help_s", "help_cpu_s", "models_s", "models_cpu_s", "help_import_ms", "vote_first", "vote", "demo_elapsed_s",
        "demo_wall_s")}
        for name in trees}
    heavy: dict[str, list[str]] = {}
    data = {name: Path(tempfile.mkdtemp(prefix=f"chorus-startup-{name}-")) for name in trees}
    load_before = _load()
    for i in range(max(rounds, votes + 1, demos)):
        for name, tree in trees.items():
            r = raw[name]
            if i < rounds:
                r["help_s"].append(_cli(tree, data[name], "--help", cpu=r["help_cpu_s"])[0])
                r["models_s"].append(_cli(tree, data[name], "models", cpu=r["models_cpu_s"])[0])
                _, proc = _cli(tree, data[name], "--help", importtime=True)
                total, heavy[name] = _imports(proc.stderr)
                r["help_import_ms"].append(total)
            if i <= votes:
                wall, proc = _cli(tree, data[name], "vote", TEXT, "--labels", "positive,negative,neutral", "--json")
                run_json = json.loads(_checked(proc, f"{name}: chorus vote").stdout)
                point = {"wall_s": wall, "overhead_s": run_json["wall_s"] - run_json["slowest_worker_s"]}
                (r["vote_first"] if i == 0 else r["vote"]).append(point)
            if i < demos:
                demo_data = Path(tempfile.mkdtemp(prefix=f"chorus-startup-demo-{name}-"))
                wall, proc = _cli(tree, demo_data, "demo", "--json")
                r["demo_elapsed_s"].append(json.loads(_checked(proc, f"{name}: chorus demo").stdout)["elapsed_s"])
                r["demo_wall_s"].append(wall)
    figures = {}
    for name, r in raw.items():
        figures[name] = {
            "help_s": _summary(r["help_s"]),
            "help_cpu_s": _summary(r["help_cpu_s"]),
            "models_s": _summary(r["models_s"]),
            "models_cpu_s": _summary(r["models_cpu_s"]),
            "help_import_ms_p50": statistics.median(r["help_import_ms"]),
            "help_imports_heavy": heavy[name],
            "vote_overhead_s": _summary([p["overhead_s"] for p in r["vote"]]),
            "vote_wall_s": _summary([p["wall_s"] for p in r["vote"]]),
            "first_vote": {k: round(v, 3) for k, v in r["vote_first"][0].items()},
            "demo_elapsed_s": _summary(r["demo_elapsed_s"]),
            "demo_wall_s": _summary(r["demo_wall_s"]),
        }
    after = figures["after"]
    return {
        "benchmark": "startup",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": f"python -m bench.startup{' --quick' if quick else ''}{f' --before {before}' if before else ''}",
        "before_ref": before,
        "before_commit": _commit(before) if before else None,
        "load_average_1_5_15": {"start": load_before, "end": _load()},
        "params": {"rounds": rounds, "votes_after_the_first": votes, "demos": demos, "text": TEXT},
        "figures": figures,
        "goals": {
            f"`chorus --help` p50 ≤ {GOAL_HELP_S} s": after["help_s"]["p50_s"] <= GOAL_HELP_S,
            f"`chorus models` p50 ≤ {GOAL_MODELS_S} s": after["models_s"]["p50_s"] <= GOAL_MODELS_S,
            f"embedded vote overhead p50 ≤ {GOAL_OVERHEAD_S} s": after["vote_overhead_s"]["p50_s"] <= GOAL_OVERHEAD_S,
        },
    }


def _commit(ref: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def render(result: dict[str, Any]) -> str:
    names = list(result["figures"])
    label = {"before": f"before ({result.get('before_commit') or result.get('before_ref')})", "after": "after"}
    load = result["load_average_1_5_15"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}; load average {load['start'][0]} at the "
        f"start, {load['end'][0]} at the end (a shared machine: read the two columns against each other).",
        f"Medians (min–max) of {result['params']['rounds']} runs of each command"
        + (", the two trees interleaved round by round" if len(names) > 1 else "")
        + f"; {result['params']['votes_after_the_first']} votes after the first in one data directory; "
        f"{result['params']['demos']} demos, each in a fresh one.",
        "",
        "| measure | " + " | ".join(label.get(n, n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def cell(s: dict[str, float]) -> str:
        return f"{s['p50_s']:.2f} s ({s['min_s']:.2f}–{s['max_s']:.2f})" if s.get("n") else "-"

    rows = [
        ("`chorus --help`, wall", lambda f: cell(f["help_s"])),
        ("`chorus --help`, CPU (user + system)", lambda f: cell(f["help_cpu_s"])),
        ("`--help`: import time (`-X importtime`, sum)", lambda f: f"{f['help_import_ms_p50']:.0f} ms"),
        ("`--help`: heavy packages imported", lambda f: ", ".join(f["help_imports_heavy"]) or "none"),
        ("`chorus models`, wall", lambda f: cell(f["models_s"])),
        ("`chorus models`, CPU (user + system)", lambda f: cell(f["models_cpu_s"])),
        ("`chorus vote` overhead (wall − slowest voter)", lambda f: cell(f["vote_overhead_s"])),
        ("`chorus vote`, process wall", lambda f: cell(f["vote_wall_s"])),
        ("first vote (creates the store): overhead / wall",
         lambda f: f"{f['first_vote']['overhead_s']:.2f} s / {f['first_vote']['wall_s']:.2f} s"),
        ("`chorus demo`: its `elapsed_s`", lambda f: cell(f["demo_elapsed_s"])),
        ("`chorus demo`, process wall", lambda f: cell(f["demo_wall_s"])),
    ]
    for title, get in rows:
        lines.append(f"| {title} | " + " | ".join(get(result["figures"][n]) for n in names) + " |")
    lines.append("")
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--before", help="a git ref to measure as well (e.g. HEAD), interleaved with the working tree")
    args = ap.parse_args(argv)
    result = run(quick=args.quick, before=args.before)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
