"""The Python API. The CLI is built on it; Python users call it the same way.

    from chorus import submit_vote, wait_for_run
    run_id = submit_vote("The battery died in a day.", labels="positive,negative,neutral", voters=5)
    run = wait_for_run(run_id, timeout=60)
    print(run.status, run.answer, run.confidence)

Submitting needs workers consuming the queues: `celery -A worker worker` against your broker, or
`chorus.embedded.EmbeddedWorkers` when no broker is configured (the CLI does that for you).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from celery import chain, chord, group
from sqlalchemy import select

from models import Pattern, Run, RunStatus, Session, WorkerOutcome, ensure_schema, repo
from models.tables import OutcomeRole, utcnow
from providers.errors import ChorusError, ConfigError, NotFoundError
from settings import Settings, get_settings
from workflows.dispatch import Dispatch, cacheable_prefix_tokens, plan_dispatch
from workflows.voting import TiePolicy, Voter, build_panel, default_quorum, normalize_labels, vote_request

_schema_ready: set[str] = set()
_inflight: dict[str, Any] = {}


def _prepare(settings: Settings) -> None:
    url = settings.effective_database_url
    if url not in _schema_ready:
        ensure_schema(url)
        _schema_ready.add(url)


@dataclass(frozen=True)
class VotePlan:
    """A validated vote, ready to store and send. Building one writes nothing."""

    text: str
    labels: tuple[str, ...]
    panel: tuple[Voter, ...]
    quorum: int
    tie_policy: TiePolicy
    low_agreement_below: float
    external_id: str | None = None
    batch_id: str | None = None
    gold_label: str | None = None
    dispatch: Dispatch | None = None  # None: every voter at once

    def config(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "voters": [asdict(v) for v in self.panel],
            "quorum": self.quorum,
            "tie_policy": self.tie_policy.value,
            "low_agreement_below": self.low_agreement_below,
            **({"dispatch": self.dispatch.to_json()} if self.dispatch else {}),
        }


def plan_vote(
    text: str,
    labels: str | Sequence[str],
    *,
    voters: int = 5,
    models: Sequence[str] | None = None,
    quorum: int | None = None,
    tie_policy: str = TiePolicy.NONE.value,
    low_agreement_below: float = 0.6,
    external_id: str | None = None,
    batch_id: str | None = None,
    gold_label: str | None = None,
    cache_aware: bool = True,
    settings: Settings | None = None,
) -> VotePlan:
    """Check a vote's inputs; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    try:
        label_set = normalize_labels(labels)
        panel = build_panel(voters, list(models or [settings.default_model]))
        policy = TiePolicy(tie_policy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not text or not text.strip():
        raise ConfigError("the document is empty (nothing but whitespace); give some text to vote on")
    unknown = sorted({v.model for v in panel} - set(settings.model_list))
    if unknown:
        raise ConfigError(
            f"model(s) {', '.join(unknown)} have no queue; add them to CHORUS_MODELS (now: {settings.models})"
        )
    if quorum is not None and not 1 <= quorum <= voters:
        raise ConfigError(f"quorum must be between 1 and {voters} (the number of voters), got {quorum}")
    gold = gold_label.strip().lower() if gold_label else None
    if gold is not None and gold not in label_set:
        raise ConfigError(f"gold label {gold_label!r} is not one of the labels {', '.join(label_set)}")
    # The offline provider has no prompt cache: making voters wait for a leader would only cost time.
    prefix = cacheable_prefix_tokens(vote_request(panel[0], label_set, text))
    dispatch = plan_dispatch(panel, prefix, cache_aware=cache_aware and settings.provider_name == "anthropic")
    return VotePlan(text, label_set, tuple(panel), quorum or default_quorum(voters), policy, low_agreement_below,
                    external_id, batch_id, gold, dispatch)


def submit_vote(text: str, labels: str | Sequence[str], *, settings: Settings | None = None, **options: Any) -> str:
    """Validate, store and send a vote; returns the run id at once (`wait_for_run` waits).

    Options are those of `plan_vote`: voters, models, quorum, tie_policy, low_agreement_below,
    external_id, batch_id, gold_label.
    """
    settings = settings or get_settings()
    return submit_plan(plan_vote(text, labels, settings=settings, **options), settings=settings)


def submit_plan(plan: VotePlan, *, settings: Settings | None = None) -> str:
    """Store the run (document, run, one pending outcome per voter) and send its chord."""
    settings = settings or get_settings()
    _prepare(settings)
    callback_id = uuid.uuid4().hex
    with Session.begin() as s:
        run = repo.create_run(
            s,
            text=plan.text,
            external_id=plan.external_id or f"inline-{callback_id[:8]}",
            pattern=Pattern.VOTE,
            provider=settings.provider_name,
            config=plan.config(),
            slots=[repo.SlotSpec(v.slot, OutcomeRole.VOTER, v.model, v.variant, v.temperature) for v in plan.panel],
            batch_id=plan.batch_id,
            gold_label=plan.gold_label,
        )
        run.status = RunStatus.RUNNING
        run.submitted_at = utcnow()
        run.chord_id = callback_id
        run_id = run.id

    send_vote(run_id, plan.config(), callback_id, settings=settings)
    return run_id


def send_vote(run_id: str, config: dict[str, Any], callback_id: str, *, settings: Settings, keep: bool = True
              ) -> None:
    """Send a stored vote's chord from its stored config (batches store many runs, then send each)."""
    from tasks.vote import call, tally_votes
    from worker import queue_for_model

    calls = {v["slot"]: call.si(run_id, v["slot"], v["model"]).set(queue=queue_for_model(v["model"]))
             for v in config["voters"]}
    leaders = tuple((config.get("dispatch") or {}).get("leaders") or ())
    header = [sig for slot, sig in calls.items() if slot not in leaders]
    send_chord(run_id, header, tally_votes.s(run_id).set(task_id=callback_id), settings=settings,
               first=[calls[slot] for slot in leaders], keep=keep)


def send_chord(run_id: str, header: list[Any], callback: Any, *, settings: Settings, keep: bool = True,
               first: Sequence[Any] = ()) -> None:
    """Send a stored run's chord; if the broker refuses it, the run is marked failed (never half sent).

    `first` (cache-aware dispatch) run before the header is sent; they return failures, never raise,
    so a failed leader still lets the rest of the vote go out."""
    try:
        # Keep the callback's AsyncResult: with Redis it is already subscribed to the result channel,
        # so `wait_for_run` hears about the tally at once instead of polling the database.
        if first:
            lead = group(list(first)) if len(first) > 1 else first[0]
            pending = chain(lead, chord(header, callback)).apply_async()
        else:
            pending = chord(header)(callback)
        if keep:
            _inflight[run_id] = pending
    except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; none may leave a half run
        reason = f"could not enqueue the run: {exc}. Is the broker at {settings.effective_broker_url} up?"
        with Session.begin() as s:
            stored = repo.load_run(s, run_id)
            if stored is not None:
                repo.finish_run(s, stored, status=RunStatus.FAILED, result={}, error=reason)
        raise ChorusError(reason) from exc


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

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        data = asdict(self)
        for o in data["outcomes"]:
            if not raw:
                o.pop("raw_output", None)
        data["wall_s"] = self.wall_s
        data["slowest_worker_s"] = self.slowest_worker_s
        data["cost"] = _cost_json(self, data["outcomes"])
        return _jsonable(data)


def _cost_json(run: RunView, outcomes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Cost computed on read from the stored usage (prices change, usage does not); None when a
    model has no price in providers/prices.py."""
    from chorus.costing import outcome_cost, run_cost

    try:
        for view, data in zip(run.outcomes, outcomes, strict=True):
            data["cost"] = outcome_cost(view).to_json()
        return run_cost(run).to_json()
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
    """A run and its outcomes; `run_id` may be a unique prefix of the id."""
    _prepare(settings or get_settings())
    if not run_id:
        raise NotFoundError("give a run id")
    with Session() as s:
        found = repo.find_run(s, run_id)
        if not found:
            raise NotFoundError(f"no run {run_id!r}; `chorus status` takes an id printed by `chorus vote`")
        if len(found) > 1:
            raise NotFoundError(f"run id prefix {run_id!r} is ambiguous; give more characters")
        return RunView.of(found[0])


def wait_for_run(
    run_id: str,
    *,
    timeout: float | None = None,
    settings: Settings | None = None,
    check: Callable[[], None] | None = None,
) -> RunView:
    """Wait until the run is terminal and return it. `check` is called while waiting (the embedded
    workers use it to fail fast when their process died). Raises TimeoutError after `timeout`.

    The database is the truth. With a broker, the tally's result message wakes us first; with no
    result to wait on (embedded mode, or a run submitted by another process) we poll the run row.
    """
    settings = settings or get_settings()
    _prepare(settings)
    limit = timeout if timeout is not None else settings.run_timeout_s
    deadline = time.monotonic() + limit
    pending = _inflight.pop(run_id, None)
    if pending is not None and not settings.embedded:
        from celery.exceptions import TimeoutError as CeleryTimeout

        with contextlib.suppress(CeleryTimeout):
            pending.get(timeout=limit, interval=0.02, propagate=False)
    delay = 0.005
    stall = None
    if settings.embedded:  # no beat runs the reaper here; the waiting process checks its run itself
        from tasks.maintenance import StallWatch

        stall = StallWatch(run_id, settings)
    while True:
        with Session() as s:
            status = s.execute(select(Run.status).where(Run.id == run_id)).scalar_one_or_none()
        if status is None:
            raise NotFoundError(f"no run {run_id!r}")
        if status.terminal:
            return get_run(run_id, settings=settings)
        if check is not None:
            check()
        if stall is not None:
            stall()
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {status.value} after {limit:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.025)
