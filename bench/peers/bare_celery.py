"""A bare Celery chord: `celery -A bench.peers.bare_celery worker`. JSON, results in Redis, no DB.

Configured from BARE_BROKER_URL; the SDK client from ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import anthropic
from celery import Celery, signals

from bench.peers import answer_of, plurality, request_params

app = Celery("bare", broker=os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/13"),
             backend=os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/13"))
app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json",
                task_default_queue="bare", worker_hijack_root_logger=False)


@functools.cache
def client() -> anthropic.Anthropic:
    return anthropic.Anthropic(max_retries=0)


@app.task(name="bare.call")
def call(slot: int, text: str) -> str | None:
    return answer_of(client().messages.create(**request_params(slot, text)))


@app.task(name="bare.tally")
def tally(answers: list[str | None]) -> dict[str, Any]:
    return {"winner": plurality(answers), "answers": answers}


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    # The same readiness file chorus's own workers write, so the harness can start both alike.
    path = os.environ.get("CHORUS_READY_FILE")
    if path:
        with open(path, "w") as f:
            f.write("ready")
