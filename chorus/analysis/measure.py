"""Run one pattern (a single call, or a vote on a panel) over a set of documents and measure it.

Every pattern gets a Batch row of its own, so `chorus report BATCH_ID` can show it afterwards.
Cost is computed from the stored usage; latency from the stored timestamps: a run's wall time is
submit to tally, and its overhead is that minus its slowest worker (wall = max(workers) + overhead).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chorus.analysis.labelled import LabelledDoc
from chorus.costing import minimum_cost, minimum_counted_with, run_cost, run_cost_without_cache
from chorus.runs import prepare, wait_for_run
from chorus.vote import plan_vote, submit_plan
from models import Pattern, Session, repo
from settings import Settings
from workflows.cost import Cost, total
from workflows.registry import effort_levels
from workflows.taskfile import VoteTask


@dataclass(frozen=True)
class PatternSpec:
    """A pattern to measure: `voters` calls on `model`, or, with `task_panel`, the task's own panel as
    the task file writes it (its voters' models, prompts and efforts; `model` and `voters` describe it)."""

    name: str
    model: str
    voters: int
    cache_aware: bool = True
    task_panel: bool = False

    @property
    def label(self) -> str:
        if self.task_panel:
            return f"task panel ({self.voters} voters: {self.model})" + (
                "" if self.cache_aware else ", no cache-aware dispatch")
        if self.voters == 1:
            return f"1 x {self.model}"
        return f"{self.voters} x {self.model} vote" + ("" if self.cache_aware else ", no cache-aware dispatch")


@dataclass
class PatternResult:
    spec: PatternSpec
    batch_id: str
    runs: list[Any]
    elapsed_s: float
    # The minimum under the cache rules, counted independently of what the runs cached (chorus.costing).
    minimum_cost: Cost = field(default_factory=Cost)
    minimum_counted_with: str = "local estimate"

    @property
    def cost(self) -> Cost:
        return total(run_cost(r) for r in self.runs)

    @property
    def cost_without_cache(self) -> Cost:
        return total(run_cost_without_cache(r) for r in self.runs)

    @property
    def labelled(self) -> list[Any]:
        return [r for r in self.runs if r.gold_label is not None]

    @property
    def correct(self) -> int:
        return sum(1 for r in self.labelled if r.answer == r.gold_label)

    @property
    def accuracy(self) -> float | None:
        return self.correct / len(self.labelled) if self.labelled else None

    def _mean(self, values: Sequence[float | None]) -> float:
        present = [v for v in values if v is not None]
        return statistics.fmean(present) if present else float("nan")

    @property
    def mean_wall_s(self) -> float:
        return self._mean([r.wall_s for r in self.runs])

    @property
    def mean_slowest_worker_s(self) -> float:
        return self._mean([r.slowest_worker_s for r in self.runs])

    @property
    def mean_overhead_s(self) -> float:
        return self._mean([r.wall_s - r.slowest_worker_s for r in self.runs
                           if r.wall_s is not None and r.slowest_worker_s is not None])

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.spec.label, "model": self.spec.model, "voters": self.spec.voters,
            "cache_aware": self.spec.cache_aware, "batch_id": self.batch_id, "documents": len(self.runs),
            "statuses": {s: sum(1 for r in self.runs if r.status == s) for s in {r.status for r in self.runs}},
            "cost": self.cost.to_json(), "cost_without_cache": self.cost_without_cache.to_json(),
            "minimum_cost": self.minimum_cost.to_json(), "minimum_counted_with": self.minimum_counted_with,
            "cost_over_minimum": (round(self.cost.total_usd / self.minimum_cost.total_usd, 4)
                                  if self.minimum_cost.total_usd > 0 else None),
            **{kind: sum(getattr(o, kind) for r in self.runs for o in r.outcomes)
               for kind in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")},
            "accuracy": self.accuracy, "correct": self.correct, "labelled": len(self.labelled),
            "mean_wall_s": round(self.mean_wall_s, 4), "mean_slowest_worker_s": round(self.mean_slowest_worker_s, 4),
            "mean_overhead_s": round(self.mean_overhead_s, 4), "elapsed_s": round(self.elapsed_s, 3),
        }


def pattern_task(spec: PatternSpec, task: VoteTask | None) -> VoteTask | None:
    """The task one pattern runs (`plan_vote` then applies `spec.voters` and `spec.model` over it).

    A single call is a one-voter task of its own: the task's first voter (its prompt; its effort where
    `spec.model` offers it), decided by its one answer: no quorum and no stop rule of the panel's (a
    quorum of 2 cannot be met by one voter), the tie policy and the agreement threshold kept. A panel
    keeps the task's rules; when `spec.model` replaces its voters' models, an effort that model does
    not offer is dropped rather than refused."""
    if task is None or spec.task_panel:
        return task
    levels = effort_levels(spec.model)
    voters = tuple(replace(v, effort=v.effort if v.effort in levels else None) for v in task.voters)
    if spec.voters == 1:
        return replace(task, voters=(replace(voters[0], count=1),),
                       vote=replace(task.vote, quorum=None, stop=None, stop_when_agree=None))
    return replace(task, voters=voters)


def new_batch(name: str, source: str, spec: PatternSpec, settings: Settings) -> str:
    prepare(settings)
    with Session.begin() as s:
        batch = repo.create_batch(
            s, name=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", pattern=Pattern.VOTE,
            config={"source": source, "pattern": spec.label, "model": spec.model, "voters": spec.voters,
                    "cache_aware": spec.cache_aware})
        return batch.id


def run_pattern(
    spec: PatternSpec,
    docs: Sequence[LabelledDoc],
    labels: str | Sequence[str] | None,
    *,
    task: VoteTask | None = None,
    source: str,
    settings: Settings,
    check: Callable[[], None] | None = None,
    on_run: Callable[[Any], None] | None = None,
    timeout: float | None = None,
    in_flight: int = 2,
) -> PatternResult:
    """Plan every document first (bad input stops here, before anything is sent), then send them with
    at most `in_flight` runs unfinished at a time, so a run's wall time measures the pattern and not
    the queue of documents behind it."""
    panel: dict[str, Any] = {} if spec.task_panel else {"voters": spec.voters, "models": [spec.model]}
    task = pattern_task(spec, task)
    plans = [plan_vote(d.text, None if task else labels, task=task, external_id=d.id, gold_label=d.label,
                       cache_aware=spec.cache_aware, settings=settings, **panel) for d in docs]
    batch_id = new_batch(spec.name, source, spec, settings)
    started = time.perf_counter()
    pending: deque[str] = deque()
    runs = []
    for plan in plans:
        if len(pending) >= max(1, in_flight):
            runs.append(_seen(wait_for_run(pending.popleft(), timeout=timeout, settings=settings, check=check),
                              on_run))
        pending.append(submit_plan(_in_batch(plan, batch_id), settings=settings))
    runs += [_seen(wait_for_run(r, timeout=timeout, settings=settings, check=check), on_run) for r in pending]
    elapsed = time.perf_counter() - started
    return PatternResult(spec, batch_id, runs, elapsed, minimum_cost(runs, settings), minimum_counted_with(settings))


def _seen(run: Any, on_run: Callable[[Any], None] | None) -> Any:
    """Tell the caller (a progress bar) that one run finished."""
    if on_run is not None:
        on_run(run)
    return run


def _in_batch(plan: Any, batch_id: str) -> Any:
    return replace(plan, batch_id=batch_id)
