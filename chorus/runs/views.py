"""Stored runs as the client sees them: `RunView` and `OutcomeView`, with their costs and JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from chorus.costing import outcome_cost, run_cost
from chorus.runs.app import forget, not_found, prepare, store_exists
from models import Run, RunStatus, WorkerOutcome, in_session, repo
from settings import Settings, get_settings
from tasks import patterns
from workflows.errors import NotFoundError, RunFailed


@dataclass(frozen=True)
class OutcomeView:
    slot: int
    role: str
    model: str
    prompt_variant: str | None
    status: str
    answer: str | None
    error: str | None
    attempts: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    usage_estimated: bool
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    latency_s: float | None
    hostname: str | None
    task_id: str | None
    raw_output: str | None = field(default=None, repr=False)
    title: str | None = None  # sectioning: the section's title, or the span a synthesis step covers
    inputs: list[int] | None = None
    level: int | None = None
    cache_miss: bool | None = None  # a follower that should have read the shared prefix: did it miss?
    provider_batch: str | None = None  # the batch lane: the provider batch that carried the call

    @classmethod
    def of(cls, o: WorkerOutcome) -> OutcomeView:
        return cls(
            slot=o.slot, role=o.role.value, model=o.model, prompt_variant=o.prompt_variant, status=o.status.value,
            answer=o.answer, error=o.error, attempts=o.attempts, input_tokens=o.input_tokens,
            output_tokens=o.output_tokens, cache_write_tokens=o.cache_write_tokens,
            cache_read_tokens=o.cache_read_tokens, usage_estimated=o.usage_estimated,
            queued_at=repo.as_utc(o.queued_at), started_at=repo.as_utc(o.started_at),
            finished_at=repo.as_utc(o.finished_at), latency_s=o.latency_s, hostname=o.hostname,
            task_id=o.task_id, raw_output=o.raw_output, title=o.title, inputs=o.inputs, level=o.level,
            cache_miss=o.cache_miss, provider_batch=o.provider_batch,
        )


@dataclass(frozen=True)
class RunView:
    id: str
    pattern: str
    status: str
    provider: str
    document_id: str
    external_id: str
    gold_label: str | None
    answer: str | None
    confidence: float | None
    low_agreement: bool | None
    error: str | None
    result: dict[str, Any] | None
    config: dict[str, Any]
    created_at: dt.datetime | None
    submitted_at: dt.datetime | None
    finished_at: dt.datetime | None
    outcomes: list[OutcomeView]

    @property
    def terminal(self) -> bool:
        return RunStatus(self.status).terminal

    @property
    def wall_s(self) -> float | None:
        """Submit to tally."""
        if self.submitted_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.submitted_at).total_seconds()

    @property
    def task(self) -> dict[str, str] | None:
        """The task the run ran ({name, hash}); None for a run stored before task files."""
        if "task_hash" not in self.config:
            return None
        return {"name": self.config.get("task_name", ""), "hash": self.config["task_hash"]}

    @property
    def slowest_worker_s(self) -> float | None:
        latencies = [o.latency_s for o in self.outcomes if o.latency_s is not None]
        return max(latencies) if latencies else None

    @classmethod
    def of(cls, run: Run) -> RunView:
        return cls(
            id=run.id, pattern=run.pattern.value, status=run.status.value, provider=run.provider,
            document_id=run.document_id, external_id=run.document.external_id, gold_label=run.document.gold_label,
            answer=run.answer, confidence=run.confidence, low_agreement=run.low_agreement, error=run.error,
            result=run.result, config=run.config, created_at=repo.as_utc(run.created_at),
            submitted_at=repo.as_utc(run.submitted_at), finished_at=repo.as_utc(run.finished_at),
            outcomes=[OutcomeView.of(o) for o in run.outcomes],
        )

    @property
    def reason(self) -> str | None:
        """Why the run did not succeed (None when it did, or is still open): the run's own error, then
        each failed or cancelled call's reason, the calls with the same reason named together."""
        if self.status == "succeeded" or not self.terminal:
            return None
        by_reason: dict[str, list[OutcomeView]] = {}
        for o in self.outcomes:
            if o.status in ("failed", "cancelled") and o.error:
                by_reason.setdefault(o.error, []).append(o)
        parts = [self.error] if self.error else []
        noun = patterns.entry(self.pattern).call_noun
        for why, calls in by_reason.items():
            slots = ", ".join(str(o.slot) for o in calls)
            parts.append(f"{noun}{'s' if len(calls) > 1 else ''} {slots} {calls[0].status}: {why}")
        if not parts:
            parts.append(f"the run ended {self.status} with no reason recorded")
        return "; ".join(parts)

    def raise_for_status(self) -> RunView:
        """The run itself when it succeeded; else RunFailed, whose message is `reason` (a partial run
        raises too: check `status` first to use a partial result)."""
        if self.status == "succeeded":
            return self
        if not self.terminal:
            raise RunFailed(f"run {self.id} is still {self.status}", run=self)
        raise RunFailed(f"run {self.id} ended {self.status}: {self.reason}", run=self)

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        data = asdict(self)
        for o in data["outcomes"]:
            if not raw:
                o.pop("raw_output", None)
        data["task"] = self.task
        data["reason"] = self.reason
        data["wall_s"] = self.wall_s
        data["slowest_worker_s"] = self.slowest_worker_s
        data["cost"] = _cost_json(self, data["outcomes"])
        return _jsonable(data)


def _cost_json(run: RunView, outcomes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Cost computed on read from the stored usage (prices change, usage does not); None when a
    model has no price in workflows/prices.py."""
    try:
        for view, data in zip(run.outcomes, outcomes, strict=True):
            data["cost"] = outcome_cost(view, run).to_json()
        cost = run_cost(run).to_json()
        skipped = [o for o in run.outcomes if o.status == "skipped"]
        asked = [data["cost"]["total_usd"] for view, data in zip(run.outcomes, outcomes, strict=True)
                 if view.role == "voter" and view.status in ("succeeded", "failed") and view.attempts]
        if skipped:
            # Adaptive voting: the calls not made, and what they would have cost at the mean of those made.
            cost["calls_saved"] = len(skipped)
            cost["saved_usd_estimate"] = round(len(skipped) * sum(asked) / len(asked), 8) if asked else 0.0
        return cost
    except ValueError:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def get_run(run_id: str, *, settings: Settings | None = None) -> RunView:
    """A run and its outcomes; `run_id` may be a unique prefix of the id. A run that did not succeed
    says why in `reason` (`raise_for_status()` raises RunFailed with it)."""
    settings = settings or get_settings()
    accepts = "give a run id, or a unique prefix of one (`chorus runs` lists them)"
    if not run_id:
        raise NotFoundError(accepts)
    if not store_exists(settings):  # nothing stored yet: look without creating the database
        raise not_found("run", run_id, accepts, settings)
    prepare(settings)
    found = in_session(lambda s: [RunView.of(r) for r in repo.find_run(s, run_id)], write=False)
    if not found:
        raise not_found("run", run_id, accepts, settings)
    if len(found) > 1:
        raise NotFoundError(f"run id prefix {run_id!r} is ambiguous; give more characters")
    view = found[0]
    if view.terminal:
        forget(view.id)
    return view
