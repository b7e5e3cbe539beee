"""Accuracy of the offline scorer on the README's task, the new scorer beside the old one (issue 25).

    python -m bench.offline_scorer [--old-ref e41752a] [--json]

The data (bench/data/): the README's task, `examples/ticket-urgency.toml`, on 30 English support
tickets (`tickets-en.jsonl`, 15 urgent, 15 normal), and the same task translated, with its labels, into
German (`ticket-urgency-de.toml`, labels `dringend` / `gewöhnlich`, 20 tickets) and Japanese
(`ticket-urgency-ja.toml`, labels `緊急` / `通常`, 20 tickets). The README's `tickets.jsonl` is not in
the repository, so these tickets were written for this benchmark and labelled by hand from the label
descriptions, before the new scorer existed; they were never labelled by a scorer. The new scorer was
developed while looking at these 70, so a fourth set, `tickets-en-heldout.jsonl` (20 English tickets
for the README's task, 10 urgent, 10 normal), was written and labelled after it was done and measured
once, with no change made after: its figure is the one to expect on tickets nobody tuned for.

Each scorer answers every ticket the way a run asks it (the same requests, `workflows.voting`):
- the single call: one voter, the built-in `direct` prompt, claude-sonnet-5-5 (`chorus advise`'s
  default single model);
- the task's own panel (3 voters, their own prompts and models), tallied with the task's vote rules
  (quorum 2, ties undecided).
A ticket is right when the answer is its gold label; an abstention or an undecided vote is not right.

The old scorer is `providers/offline.py` as it was at `--old-ref` (the commit before issue 25; read
with `git show` and loaded from a temporary file), so both scorers are measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness import machine
from workflows.registry import supports_structured_outputs
from workflows.taskfile import VoteTask, parse_task
from workflows.voting import TiePolicy, Voter, read_answer, resolve_panel, tally, vote_request

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
RESULT = Path(__file__).resolve().parent / "results" / "offline_scorer.json"
OLD_REF = "e41752a"  # the last commit before issue 25's scorer
SINGLE_MODEL = "claude-sonnet-5-5"
# (name, task file, tickets)
SETS: tuple[tuple[str, Path, Path], ...] = (
    ("English (the README's task)", ROOT / "examples" / "ticket-urgency.toml", DATA / "tickets-en.jsonl"),
    ("English, held out (the README's task)", ROOT / "examples" / "ticket-urgency.toml",
     DATA / "tickets-en-heldout.jsonl"),
    ("German (labels dringend / gewöhnlich)", DATA / "ticket-urgency-de.toml", DATA / "tickets-de.jsonl"),
    ("Japanese (labels 緊急 / 通常)", DATA / "ticket-urgency-ja.toml", DATA / "tickets-ja.jsonl"),
)


def load_task(path: Path) -> VoteTask:
    task = parse_task(tomllib.loads(path.read_text(encoding="utf-8")), source=str(path))
    assert isinstance(task, VoteTask)
    return task


def load_tickets(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextmanager
def old_scorer(ref: str) -> Iterator[ModuleType]:
    """`providers/offline.py` as it was at `ref`, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{ref}:providers/offline.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "offline_old.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("offline_old", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["offline_old"] = module  # dataclasses look their module up while the class is built
        try:
            spec.loader.exec_module(module)
            yield module
        finally:
            sys.modules.pop("offline_old", None)


def ask(scorer: ModuleType, voter: Voter, task: VoteTask, text: str) -> tuple[str | None, str | None]:
    """One voter's answer as a run reads it (structured where the model has structured outputs)."""
    structured = supports_structured_outputs(voter.model)
    result = scorer.OfflineProvider().call(vote_request(voter, task, text, structured=structured))
    return read_answer(result.text, task.label_names, structured=structured, stop_reason=result.stop_reason,
                       no_answer=getattr(result, "no_answer", None))


def measure(scorer: ModuleType, task: VoteTask, tickets: list[dict[str, str]]) -> dict[str, Any]:
    single = Voter(0, SINGLE_MODEL, "direct")
    panel = resolve_panel(task, SINGLE_MODEL)
    rules = task.vote
    out: dict[str, Any] = {"single": {"right": 0, "abstained": 0}, "panel": {"right": 0, "undecided": 0},
                           "voters": {v.label: 0 for v in panel}, "tickets": len(tickets), "answers": []}
    for ticket in tickets:
        gold = ticket["label"]
        label, _ = ask(scorer, single, task, ticket["text"])
        out["single"]["right"] += label == gold
        out["single"]["abstained"] += label is None
        answers = []
        for voter in panel:
            answer, _ = ask(scorer, voter, task, ticket["text"])
            answers.append(answer)
            out["voters"][voter.label] += answer == gold
        t = tally(answers, task.label_names, quorum=rules.quorum, tie_policy=TiePolicy(rules.tie_policy),
                  low_agreement_below=rules.low_agreement_below)
        out["panel"]["right"] += t.winner == gold
        out["panel"]["undecided"] += t.winner is None
        out["answers"].append({"id": ticket["id"], "gold": gold, "single": label, "panel": t.winner})
    n = len(tickets)
    out["single"]["accuracy"] = round(out["single"]["right"] / n, 4)
    out["panel"]["accuracy"] = round(out["panel"]["right"] / n, 4)
    return out


def run(quick: bool = True, old_ref: str = OLD_REF) -> dict[str, Any]:
    import providers.offline as new

    sets = []
    with old_scorer(old_ref) as old:
        for name, task_path, tickets_path in SETS:
            task, tickets = load_task(task_path), load_tickets(tickets_path)
            sets.append({"name": name, "task": str(task_path.relative_to(ROOT)),
                         "tickets": str(tickets_path.relative_to(ROOT)),
                         "old": measure(old, task, tickets), "new": measure(new, task, tickets)})
    return {
        "benchmark": "offline_scorer",
        "command": f"python -m bench.offline_scorer --old-ref {old_ref}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "old_ref": old_ref,
        "sets": sets,
    }


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})"


def render(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}. Deterministic: the figures do not "
        "depend on the machine.",
        "",
        "| tickets | scorer | single call right | single call abstained | panel vote right | panel undecided |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["sets"]:
        for key, name in (("old", f"old (`{result['old_ref']}`)"), ("new", "new")):
            m, n = s[key], s[key]["tickets"]
            lines.append(f"| {s['name']} | {name} | {_pct(m['single']['right'], n)} | {m['single']['abstained']} | "
                         f"{_pct(m['panel']['right'], n)} | {m['panel']['undecided']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-ref", default=OLD_REF, help="the commit whose providers/offline.py is the old scorer")
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    result = run(old_ref=args.old_ref)
    if not args.no_write:
        RESULT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
