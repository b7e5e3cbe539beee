"""The Celery app: `celery -A worker worker -Q llm.claude-haiku-4-5,callbacks`.

`make_app(settings)` configures everything from one settings object: broker and backend, JSON only,
late acks, one queue per model plus `callbacks`, task events for Flower. The task modules are
registered by name (`include`), never imported here: they are shared tasks, so every app made here
(the worker's, or one the Python API makes for the settings it is given) knows them. Worker signals
carry the cross-cutting parts (engine disposal after fork, timing logs, the embedded ready file).

`worker.app` (what `celery -A worker` loads) is made on first use from the environment's settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals
from celery.schedules import schedstate, schedule
from kombu import Queue

from models import get_engine, in_session, repo
from models.db import dispose_engine
from providers import preload
from settings import Settings, get_settings
from workflows.queues import CALLBACK_QUEUE, all_queues

log = logging.getLogger("chorus.worker")
TASK_MODULES = ["tasks.vote", "tasks.section", "tasks.orchestrate", "tasks.batch", "tasks.maintenance", "tasks.lane",
                "chorus.schedule"]


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded:
        folder = settings.data_path / "broker"
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            # The filesystem transport polls its folder; the default 1 s would be the latency floor.
            "polling_interval": 0.02,
        }
    # A task that is not acked within this window is redelivered; retry countdowns stay below it
    # (workflows.retry.cap_countdown). A short window is swept often enough to matter.
    vt = settings.visibility_timeout_s
    # The restore sweep holds a mutex; a worker killed while holding it would block every sweep for
    # kombu's default 300 s, far longer than a short visibility timeout.
    return {"visibility_timeout": vt, "unacked_restore_interval": max(1, min(10, int(vt // 10))),
            "unacked_restore_throttle": 1 if vt < 600 else 10, "unacked_mutex_expire": int(min(300, max(2, vt)))}


def make_app(settings: Settings | None = None, *, set_as_current: bool = True) -> Celery:
    settings = settings or get_settings()
    # LabelledTask: Flower shows each task's arguments by name (run_id=… slot=… model=…), never cut off.
    celery_app = Celery("chorus", broker=settings.effective_broker_url, backend=settings.effective_result_backend,
                        task_cls="tasks.labels:LabelledTask", include=TASK_MODULES, set_as_current=set_as_current)
    celery_app.conf.update(
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # No STARTED state in the result backend: nothing reads it (the slot row says what runs, and
        # Flower hears of a started task from its task-started event), and it cost a write per task.
        task_track_started=False,
        task_queues=[Queue(q) for q in all_queues(settings.model_list)],
        task_default_queue=CALLBACK_QUEUE,
        task_routes={"chorus.vote.tally": {"queue": CALLBACK_QUEUE}},
        worker_prefetch_multiplier=1,
        worker_send_task_events=not settings.embedded,
        task_send_sent_event=not settings.embedded,
        worker_enable_remote_control=not settings.embedded,
        worker_hijack_root_logger=False,
        broker_transport_options=_transport_options(settings),
        broker_transport="chorus.embedded.transport:Transport" if settings.embedded else None,
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        result_chord_retry_interval=0.05,
        timezone="UTC",
    )
    celery_app.conf.task_routes["chorus.maintenance.*"] = {"queue": CALLBACK_QUEUE}
    celery_app.conf.task_routes["chorus.lane.*"] = {"queue": CALLBACK_QUEUE}
    # The batch lane's collector and poller (tasks/lane.py), sent only while the lane has work of their kind
    # (`WhileLaneWork`). A tick that waited longer than its interval in the queue is dropped (`expires`):
    # the next one does the same work, so none pile up.
    celery_app.conf.beat_schedule = {**celery_app.conf.beat_schedule, "chorus-reaper": {
        "task": "chorus.maintenance.reap", "schedule": settings.reap_interval_s,
    }, "chorus-lane-collect": {
        "task": "chorus.lane.collect", "schedule": WhileLaneWork(settings.lane_collect_s, work="collect"),
        "options": {"queue": CALLBACK_QUEUE, "expires": max(1.0, settings.lane_collect_s)},
    }, "chorus-lane-poll": {
        "task": "chorus.lane.poll", "schedule": WhileLaneWork(settings.lane_poll_s, work="poll"),
        "options": {"queue": CALLBACK_QUEUE, "expires": max(1.0, settings.lane_poll_s)},
    }}
    return celery_app


class WhileLaneWork(schedule):
    """Beat's interval for a lane task that sends it only while the lane has work of its kind (a released
    call waiting for a collector; a provider batch not collected yet): with no lane run, beat sends
    nothing, and Flower's task list is not filled with empty `chorus.lane.collect` ticks every 10 s.

    Beat asks `is_due` every interval; the check is one small query on the database, in the beat process.
    A check that fails sends the task as a plain interval would (the lane's tasks are safe to run for
    nothing). The submitter still sends a collect at once when it starts lane runs (`tasks.lane.start_runs`)."""

    def __init__(self, run_every: Any = None, relative: bool = False, nowfun: Any = None, app: Any = None,
                 work: str = "collect") -> None:
        super().__init__(run_every, relative, nowfun, app)
        if work not in ("collect", "poll"):
            raise ValueError(f"work must be collect or poll, got {work!r}")
        self.work = work

    def is_due(self, last_run_at: Any) -> schedstate:
        due, next_check = super().is_due(last_run_at)
        if due and not self.has_work():
            return schedstate(is_due=False, next=next_check)  # asked again one interval later
        return schedstate(is_due=due, next=next_check)

    def has_work(self) -> bool:
        try:
            get_engine(get_settings().effective_database_url)  # beat's database: the workers' (the one sessionmaker)
            found = in_session(repo.lane_work, write=False, attempts=1)
        except Exception as exc:  # noqa: BLE001 - beat must keep ticking: send as a plain interval would
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("could not tell whether the batch lane has work (%s); sending %s anyway", why, self.work)
            return True
        return bool(getattr(found, self.work))

    def __reduce__(self) -> Any:  # beat keeps its entries in a shelve (pickle): the kind of work goes with it
        return self.__class__, (self.run_every, self.relative, self.nowfun, None, self.work)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WhileLaneWork) and self.work == other.work and super().__eq__(other)

    def __hash__(self) -> int:
        return hash((self.run_every, self.work))


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # `worker.app` is made on first use, so importing this module reads no settings.
    global _app
    if name == "app":
        if _app is None:
            _app = make_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def timeout_warning(settings: Settings) -> str | None:
    """A call that can outlive the broker's visibility timeout has its task redelivered mid-call. The
    slot's lease keeps the copy from calling the provider again, but the copy still waits in line;
    say so at start-up rather than let it pass silently."""
    if settings.embedded or settings.call_timeout_s < settings.visibility_timeout_s / 2:
        return None
    return (f"CHORUS_CALL_TIMEOUT_S ({settings.call_timeout_s:g} s) is not below half of "
            f"CHORUS_VISIBILITY_TIMEOUT_S ({settings.visibility_timeout_s:g} s): Redis will redeliver the task of a "
            "slow call while it runs (its lease stops a second call, at the cost of a wasted delivery); raise "
            "CHORUS_VISIBILITY_TIMEOUT_S or lower CHORUS_CALL_TIMEOUT_S")


@signals.worker_init.connect
def _check_timeouts(**_: Any) -> None:
    warning = timeout_warning(get_settings())
    if warning:
        log.warning(warning)


@signals.worker_init.connect
def _preload_provider(**_: Any) -> None:
    # Prefork children inherit what the parent imported. Importing the SDK (~1.7 s of CPU) in every
    # child at once made each child's first call take ~46 s with 24 children on 2 cores.
    preload(get_settings())


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    dispose_engine()


@signals.worker_ready.connect
def _announce_ready(**_: Any) -> None:
    ready = get_settings().ready_file
    if ready is not None:
        ready.write_text(str(time.time()))


_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    began = _started.pop(task_id or "", None)
    if began is not None:
        log.info("%s %s %s in %.1f ms", getattr(task, "name", "?"), task_id, state,
                 (time.perf_counter() - began) * 1000)

