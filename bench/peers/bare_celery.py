"""A bare Celery chord: header tasks call the SDK, a callback tallies; JSON, results in Redis, no DB.

Two configurations of the same app, so the comparison with chorus can be made both ways:

- `app` (`celery -A bench.peers.bare_celery`): Celery's defaults (early ack, prefetch ×4, no events);
- `reliable` (`celery -A bench.peers.bare_celery:reliable`): the reliability settings chorus's own app
  sets, copied from `worker.make_app` (`CHORUS_SETTINGS`) rather than restated, so they cannot drift.

Configured from BARE_BROKER_URL (broker and results); the SDK client from ANTHROPIC_API_KEY /
ANTHROPIC_BASE_URL, with the SDK's own retries off. `bare.call` retries a 429 the way a Celery user
would write it (`autoretry_for` the SDK's `RateLimitError`, `retry_backoff`, `retry_jitter`, Celery's
default `max_retries` of 3); BARE_RATE_LIMIT (e.g. `150/m`) sets its per-worker `rate_limit`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import anthropic
from celery import Celery, signals

from bench.peers import answer_of, plurality, request_params

# What chorus's app sets for delivery and visibility (worker.make_app), by name.
CHORUS_SETTINGS = (
    "task_acks_late", "task_reject_on_worker_lost", "task_track_started", "worker_prefetch_multiplier",
    "worker_send_task_events", "task_send_sent_event", "broker_transport_options", "result_expires",
    "result_chord_retry_interval",
)
QUEUES = {"defaults": "bare", "reliable": "bare.reliable"}


@functools.cache
def client() -> anthropic.Anthropic:
    return anthropic.Anthropic(max_retries=0)


def chorus_settings(broker_url: str) -> dict[str, Any]:
    """What chorus's app sets for a worker on the Redis broker `broker_url` (a settings object without a
    broker would be embedded mode, which turns events off)."""
    from settings import load_settings
    from worker import make_app

    conf = make_app(load_settings(broker_url=broker_url, result_backend=broker_url), set_as_current=False).conf
    return {name: conf[name] for name in CHORUS_SETTINGS}


def build(profile: str, broker_url: str | None = None) -> Celery:
    """The bare app with `profile` "defaults" or "reliable" (chorus's settings), on its own queue."""
    if profile not in QUEUES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(QUEUES)}")
    url = broker_url or os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/13")
    app = Celery(f"bare-{profile}", broker=url, backend=url, set_as_current=False)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json",
                    task_default_queue=QUEUES[profile], worker_hijack_root_logger=False)
    if profile == "reliable":
        app.conf.update(chorus_settings(url))

    # shared=False: each app keeps its own tasks (a shared task would be added to every app made here).
    @app.task(name="bare.call", shared=False, autoretry_for=(anthropic.RateLimitError,), retry_backoff=True,
              retry_jitter=True, rate_limit=os.environ.get("BARE_RATE_LIMIT") or None)
    def call(slot: int, text: str) -> str | None:
        return answer_of(client().messages.create(**request_params(slot, text)))

    @app.task(name="bare.tally", shared=False)
    def tally(answers: list[str | None]) -> dict[str, Any]:
        return {"winner": plurality(answers), "answers": answers}

    return app


def chord_of(app: Celery, text: str, voters: int) -> Any:
    """Send one vote as a chord on `app`; its AsyncResult (the tally's)."""
    from celery import chord

    call, tally = app.tasks["bare.call"], app.tasks["bare.tally"]
    return chord([call.s(i, text) for i in range(voters)], app=app)(tally.s())


def __getattr__(name: str) -> Any:
    # Made on first use: the reliable profile reads chorus's settings from the environment.
    if name in ("app", "reliable"):
        made = build("defaults" if name == "app" else "reliable")
        globals()[name] = made
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    # The same readiness file chorus's own workers write, so the harness can start both alike.
    path = os.environ.get("CHORUS_READY_FILE")
    if path:
        with open(path, "w") as f:
            f.write("ready")
