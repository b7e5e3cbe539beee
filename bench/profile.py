"""Where a worker process spends its CPU: `py-spy record` around a piece of a benchmark, the samples
sorted into the steps of a call.

    with PySpy([pid], "chorus") as spy:
        ...                       # the load to profile
    spy.breakdown(CALL_STEPS)     # {"claim the slot (SQL)": 0.13, ...}: shares of the active samples

py-spy samples every thread's Python stack `RATE` times a second and, by default, keeps only the
samples of threads that were running (not blocked in a socket read or a lock), so the shares are
shares of the CPU the process used. Each sample goes to the first step whose marker occurs in its
stack (frames are `function (path:line)`); samples matching none are "other". A benchmark reports the
shares times its measured CPU seconds per outcome: CPU milliseconds per outcome, per step.

py-spy is in the `bench` extra. Where it is missing or may not attach (no ptrace permission), the
profile says so and the benchmark carries on without it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 200  # samples per second and thread

# The steps of one call in a worker, most specific first. A marker is a substring of a frame.
CALL_STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("the tally (callback task)", ("tally_votes (", "tally (")),
    ("claim the slot (SQL statement)", ("claim_slot (",)),
    ("store the outcome (SQL statement)", ("update_slot (",)),
    ("read the run's inputs (SQL statement)", ("_inputs (",)),
    ("rate-limit token (Redis)", ("take_token (", "settle_call (")),
    ("SQL sessions: begin, commit, pool, other statements", ("in_session (", "sqlalchemy/", "psycopg")),
    ("provider call (SDK + HTTP)", ("anthropic/", "httpx/", "httpcore/")),
    ("the lease: its renewal thread, started and stopped per call", ("holding (", "renew (")),
    ("other chorus code in the task", ("tasks/", "providers/", "workflows/", "models/")),
    ("the task's result (Celery backend)", ("celery/backends/",)),
    ("messages (kombu, Redis)", ("kombu/", "redis/")),
    ("Celery's worker and task machinery", ("celery/", "billiard/")),
    # Last: every task runs inside it, so only a thread of the pool that is between tasks is left here.
    ("the thread pool between tasks", ("concurrent/futures/thread.py",)),
]


def available() -> bool:
    return shutil.which("py-spy") is not None


class PySpy:
    """Record the given processes (one py-spy each) while the block runs."""

    def __init__(self, pids: list[int], name: str) -> None:
        self.pids, self.name = pids, name
        self.folder = Path(tempfile.mkdtemp(prefix=f"chorus-bench-pyspy-{name}-"))
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.problem: str | None = None if available() else "py-spy is not installed (pip install -e '.[bench]')"
        self.stacks: Counter[str] = Counter()

    def __enter__(self) -> PySpy:
        if self.problem:
            return self
        for pid in self.pids:
            out = self.folder / f"{pid}.txt"
            cmd = ["py-spy", "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--output",
                   str(out), "--nonblocking"]
            self.procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
        return self

    def __exit__(self, *_: object) -> None:
        for proc, out in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                err = proc.communicate(timeout=30)[1]
            except subprocess.TimeoutExpired:
                proc.kill()
                err = proc.communicate()[1]
            if not out.exists():
                self.problem = f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-300:]}"
                continue
            for line in out.read_text().splitlines():
                stack, count = line.rsplit(" ", 1) if " " in line else (line, "")
                with contextlib.suppress(ValueError):
                    self.stacks[stack] += int(count)
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def breakdown(self, steps: list[tuple[str, tuple[str, ...]]] = CALL_STEPS) -> dict[str, float]:
        """Each step's share of the active samples (the shares add up to 1)."""
        counts: Counter[str] = Counter()
        for stack, n in self.stacks.items():
            label = next((label for label, markers in steps if any(m in stack for m in markers)), "other")
            counts[label] += n
        total = sum(counts.values())
        order = [label for label, _ in steps] + ["other"]
        return {label: round(counts[label] / total, 4) for label in order if total}

    def summary(self, cpu_s_per_1000: float) -> dict[str, Any]:
        """The breakdown as shares and as CPU milliseconds per outcome (share × CPU s per 1,000 outcomes)."""
        if self.problem or not self.samples:
            return {"problem": self.problem or "no active samples"}
        shares = self.breakdown()
        return {"samples": self.samples, "share": shares,
                "cpu_ms_per_outcome": {k: round(v * cpu_s_per_1000, 2) for k, v in shares.items()},
                "other_top_frames": self.top_unsorted()}

    def top_unsorted(self, n: int = 8) -> list[tuple[str, int]]:
        """The innermost frames of the samples no step took, most frequent first (what "other" is)."""
        leaves: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if not any(m in stack for _, markers in CALL_STEPS for m in markers):
                leaves[stack.rsplit(";", 1)[-1]] += count
        return leaves.most_common(n)


def render_profiles(profiles: dict[str, dict[str, Any]], what: str) -> list[str]:
    """A markdown table: one column per profiled system, CPU ms per outcome by step (share in brackets)."""
    shown = {name: p for name, p in profiles.items() if "share" in p}
    lines = []
    for name, p in profiles.items():
        if "problem" in p:
            lines.append(f"No profile of {name}: {p['problem']}.")
    if not shown:
        return lines
    steps = list(next(iter(shown.values()))["share"])
    lines += ["", f"Where the worker CPU goes ({what}; `py-spy record --nonblocking` at {RATE} Hz, active samples "
              "only, each sorted into the first step found in its stack; CPU ms per outcome = share × the measured "
              "CPU s per 1,000 outcomes):", "",
              "| step | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for step in steps:
        cells = []
        for p in shown.values():
            share = p["share"].get(step, 0.0)
            cells.append(f"{p['cpu_ms_per_outcome'].get(step, 0.0):.2f} ms ({share:.0%})" if share else "–")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    totals = [f"{sum(p['cpu_ms_per_outcome'].values()):.2f} ms ({p['samples']} samples)" for p in shown.values()]
    lines.append("| **all** | " + " | ".join(totals) + " |")
    return lines
