"""Runs as the client sees them: the Celery app for the settings given, views of stored runs, and
waiting for a run to finish.

Every function takes `settings=` (default: the environment's). The database, the broker and the
result backend all follow it: `celery_app(settings)` makes (once) an app from those settings, and
every message chorus sends goes through it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

# The task modules define shared tasks: imported here, every app this client makes knows them, so
# what it sends carries the labels Flower shows (tasks.labels), as the worker's own sends do;
# tasks.all_patterns imports every pattern's module, which registers its entry (tasks.patterns).
import tasks.all_patterns  # noqa: F401
import tasks.batch  # noqa: F401
import worker
from chorus.costing import outcome_cost, run_cost
from chorus.embedded import WorkerProcess, embedded_worker, take_early
from chorus.embedded import commands as embedded_commands
from models import Pattern, Run, RunStatus, WorkerOutcome, ensure_schema, get_engine, in_session, repo
from settings import Settings, get_settings, user_data_dir
from tasks import dispatch, patterns
from tasks.files import release_files
from tasks.maintenance import StallWatch
from workflows.errors import ConfigError, NotFoundError, RunFailed, RunTimeout

log = logging.getLogger("chorus.runs")

_schema_ready: set[str] = set()
_apps: dict[str, Celery] = {}

# The callback's AsyncResult of runs this process sent, so `wait_for_run` hears of the tally at once
# (with Redis it is already subscribed to the result). Bounded: a caller that never waits (it only
# polls `get_run`, or submits and leaves) evicts the oldest; a run without an entry is waited on by
# polling the database, which is the truth anyway.
MAX_PENDING = 1024
_pending: OrderedDict[str, AsyncResult] = OrderedDict()


def store_exists(settings: Settings) -> bool:
    """False while the settings' default SQLite database was never created: a command that only reads
    (`chorus runs`, `chorus status`) then finds nothing and creates nothing."""
    url = settings.effective_database_url
    if not url.startswith("sqlite") or ":///" not in url:
        return True
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return not path or path.startswith(":memory:") or Path(path).exists()


def searched(settings: Settings) -> str:
    """The store a lookup searched, for a "not found" message."""
    return settings.store_name if store_exists(settings) else f"{settings.store_name}, empty so far"


def not_found(what: str, ref: str, accepts: str, settings: Settings) -> NotFoundError:
    """"No <what> <ref> in <the store searched>; <what the command accepts>", and in embedded mode where
    else it may be: a cluster's database, which the environment does not name (its URLs unset)."""
    message = f"no {what} {ref!r} in {searched(settings)}; {accepts}"
    if settings.database_url is None:
        message += ("; the runs of a cluster are in its own database: set CHORUS_DATABASE_URL and "
                    "CHORUS_BROKER_URL to look there")
    return NotFoundError(message)


def folder_store_note(settings: Settings) -> str | None:
    """A line saying that this command uses the ./.chorus of the current folder (where embedded mode kept
    its data before the per-user directory), and where the other folders' commands store; None otherwise."""
    if settings.data_origin != "folder" or settings.database_url is not None:
        return None
    return (f"chorus: using the store in ./.chorus of this folder ({settings.data_path}); commands run elsewhere "
            f"use {user_data_dir()}. Set CHORUS_DATA_DIR to use one store from every folder (or move this .chorus "
            f"there)")


def prepare(settings: Settings) -> None:
    """Bind the database of `settings` and bring its schema up to date (once per URL per process)."""
    # Whoever reads or writes work in embedded mode owns it while it lives: a new command leaves it alone.
    embedded_commands.register(settings)
    url = settings.effective_database_url
    if url not in _schema_ready:
        ensure_schema(url)
        _schema_ready.add(url)
    else:
        get_engine(url)  # the one sessionmaker follows the settings of this call


def celery_app(settings: Settings) -> Celery:
    """The Celery app for `settings`: the worker module's own for the environment's settings, else
    one made (once per distinct settings) from the broker and backend they name."""
    # Whoever sends work in embedded mode owns it while it lives: a new command leaves it alone.
    embedded_commands.register(settings)
    if settings == _environment_settings():
        return worker.app  # type: ignore[no-any-return]
    key = settings.model_dump_json()
    app = _apps.get(key)
    if app is None:
        app = _apps[key] = worker.make_app(settings, set_as_current=False)
    return app


def _environment_settings() -> Settings | None:
    """The environment's settings, or None when the environment is not valid (a caller that passes
    its own settings must not fail for a bad variable it does not use)."""
    try:
        return get_settings()
    except ConfigError:
        return None


def remember(run_id: str, pending: AsyncResult) -> None:
    _pending[run_id] = pending
    while len(_pending) > MAX_PENDING:
        _pending.popitem(last=False)


@atexit.register
def _release_results() -> None:
    """Celery's AsyncResult unsubscribes from the Redis result backend when it is collected. A result
    in a reference cycle (a chord's, with its parents) is otherwise collected during interpreter
    shutdown, after imports are gone, and printed "Exception ignored in AsyncResult.__del__ ...
    sys.meta_path is None" after every `chorus section`. Unsubscribe them while Python still runs,
    and leave their late `__del__` nothing to do."""
    _pending.clear()
    gc.collect()
    for result in [o for o in gc.get_objects() if isinstance(o, AsyncResult)]:
        if result.backend is not None:
            with contextlib.suppress(Exception):  # best effort on the way out: the process is ending
                result.backend.remove_pending_result(result)
            result.backend = None


def forget(run_id: str) -> AsyncResult | None:
    return _pending.pop(run_id, None)


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


# ----- cancelling ---------------------------------------------------------------------------------
CANCEL_CHUNK = 500


def cancel_runs(run_ids: Sequence[str], reason: str, settings: Settings) -> repo.Cancelled:
    """Cancel the open runs among `run_ids` (`repo.cancel_runs`: slots not yet taken are never called,
    calls in flight finish and are recorded), tally at once the votes whose voters had all finished
    (they keep their real result), and take the cancelled runs' messages out of the broker."""
    prepare(settings)
    cancelled: list[str] = []
    settled: list[str] = []
    kinds: dict[str, Pattern] = {}
    for i in range(0, len(run_ids), CANCEL_CHUNK):
        done = _cancel_chunk(list(run_ids[i:i + CANCEL_CHUNK]), reason)
        cancelled += done.cancelled
        settled += done.settled
        kinds.update(done.patterns)
    for run_id in settled:
        settle = patterns.entry(kinds[run_id]).settle
        if settle is not None:
            settle(run_id)
    for run_id in cancelled:
        forget(run_id)
    if cancelled:
        if settings.embedded:
            embedded_commands.purge_runs(settings, cancelled)
        else:
            with contextlib.suppress(Exception):  # best effort: a message left in the queue skips its call
                dispatch.purge_queued(celery_app(settings), cancelled)
    if cancelled or settled:
        try:
            release_files([*cancelled, *settled], settings)  # their Files API uploads end with them
        except Exception:  # noqa: BLE001 - the reaper's sweep deletes what is left; the cancel stands
            log.exception("deleting the uploads of cancelled runs failed")
    return repo.Cancelled(cancelled, settled, kinds)


def _cancel_chunk(run_ids: list[str], reason: str) -> repo.Cancelled:
    settles = patterns.settling()
    return in_session(lambda s: repo.cancel_runs(s, run_ids, reason, settles=settles))


# ----- the embedded worker -------------------------------------------------------------------------
# The embedded worker running this process's work, per data directory: the CLI command's own, or one
# the Python API started (stopped when the process exits).
_workers: dict[Path, WorkerProcess] = {}


def start_embedded(settings: Settings) -> tuple[WorkerProcess, embedded_commands.Swept]:
    """Clear the stale work left in the embedded queue by commands that ended (cancelling their open
    runs, see `chorus.embedded.commands`), then let this process's worker take work. The worker boots (a
    second or more) while the schema is checked and the queue swept, gated until then; one the command
    launched earlier (`chorus.embedded.start_early`) is taken over."""
    process = take_early(settings) or embedded_worker(settings, gated=True).start()
    try:
        prepare(settings)
        embedded_commands.register(settings)
        since = embedded_commands.registered_at(settings)
        own_database = settings.database_url is None
        swept = embedded_commands.sweep(
            settings,
            since=since,
            terminal=lambda ids: {r for r, st in in_session(lambda s: repo.run_statuses(s, ids), write=False).items()
                                  if st.terminal},
            open_runs=(lambda: in_session(lambda s: repo.open_runs_before(s, dt.datetime.fromtimestamp(since, dt.UTC)),
                                          write=False)) if own_database else None,
            cancel=lambda ids, reason: cancel_runs(ids, reason, settings).cancelled,
        )
    except BaseException:
        process.stop()
        raise
    process.open_gate()
    _workers[settings.data_path] = process
    return process, swept


def stop_embedded(settings: Settings) -> None:
    process = _workers.pop(settings.data_path, None)
    if process is not None:
        process.stop()


def ensure_workers(settings: Settings) -> WorkerProcess | None:
    """In embedded mode, the worker that runs this process's work, started now (and ready) when none
    runs yet; the Python API's waits call it, so `submit_vote` then `wait_for_run` works with no broker.
    A worker started here is stopped when the process exits. None with a broker (your workers run it)."""
    if not settings.embedded:
        return None
    process = _workers.get(settings.data_path)
    if process is None:
        process, _ = start_embedded(settings)
        atexit.register(stop_embedded, settings)
        process.wait_ready()
    return process


@contextlib.contextmanager
def embedded_workers(settings: Settings) -> Iterator[tuple[WorkerProcess, embedded_commands.Swept] | None]:
    """For one command: in embedded mode, sweep, start the worker, and stop it at the end, however it ends."""
    if not settings.embedded:
        yield None
        return
    process, swept = start_embedded(settings)
    try:
        yield process, swept
    finally:
        stop_embedded(settings)


def wait_for_run(
    run_id: str,
    *,
    timeout: float | None = None,
    settings: Settings | None = None,
    check: Callable[[], None] | None = None,
) -> RunView:
    """Wait until the run is terminal and return it. `check` is called while waiting (the embedded
    workers use it to fail fast when their process died). Raises RunTimeout (a TimeoutError) after
    `timeout` seconds (default CHORUS_RUN_TIMEOUT_S); the run goes on. A run that failed is returned
    with its `reason`; `wait_for_run(...).raise_for_status()` raises RunFailed instead.

    The database is the truth. With a broker, the tally's result message wakes us first; with no
    result to wait on (embedded mode, or a run submitted by another process) we poll the run row.
    """
    settings = settings or get_settings()
    accepts = "give the id that `submit_vote` or `submit_section` returned"
    if not store_exists(settings):
        raise not_found("run", run_id, accepts, settings)
    prepare(settings)
    limit = timeout if timeout is not None else settings.run_timeout_s
    deadline = time.monotonic() + limit
    pending = forget(run_id)
    if pending is not None and not settings.embedded:
        with contextlib.suppress(CeleryTimeout):
            pending.get(timeout=limit, interval=0.02, propagate=False)
    started = False
    delay = 0.005
    # No beat runs the reaper in embedded mode: the waiting process checks its run itself.
    stall = StallWatch(celery_app(settings), run_id, settings) if settings.embedded else None
    while True:
        status = in_session(lambda s: repo.run_status(s, run_id), write=False)
        if status is None:
            raise not_found("run", run_id, accepts, settings)
        if status.terminal:
            return get_run(run_id, settings=settings)
        if not started:
            started = True
            own = ensure_workers(settings)
            if check is None and own is not None:
                check = own.check
        if check is not None:
            check()
        if stall is not None:
            stall()
        if time.monotonic() > deadline:
            raise RunTimeout(f"run {run_id} is still {status.value} after {limit:.0f} s; "
                             f"`chorus status {run_id}` shows it later")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.025)
