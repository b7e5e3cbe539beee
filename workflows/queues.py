"""Queue names: one queue per model (so a model's workers and rate limit are its own), plus one for
callbacks. The worker, the dispatcher and the limiter all name queues the same way."""

from __future__ import annotations

CALLBACK_QUEUE = "callbacks"


def queue_for_model(model: str) -> str:
    return f"llm.{model}"


def all_queues(models: list[str]) -> list[str]:
    return [queue_for_model(m) for m in models] + [CALLBACK_QUEUE]
