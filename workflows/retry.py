"""How long a slot waits before its next attempt. Pure: the caller passes the random draw."""

from __future__ import annotations


def compute_backoff(
    attempt: int,
    *,
    base_s: float = 1.0,
    cap_s: float = 60.0,
    retry_after_s: float | None = None,
    jitter: float = 0.0,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (base · 2^(attempt-1)) with "full jitter" scaled by `jitter` in [0, 1), capped at
    `cap_s`. A provider's `retry-after` is a floor: waiting less would only earn another 429.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter is a draw from [0, 1)")
    exp = min(cap_s, base_s * 2 ** (attempt - 1))
    delay = (exp / 2) * (1 + jitter)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def cap_countdown(delay_s: float, visibility_timeout_s: float) -> float:
    """A countdown the broker will not redeliver early.

    Redis holds an ETA task unacked in the worker for its whole countdown; a countdown past the
    visibility timeout would have the same task delivered a second time. Half the timeout leaves
    room for the call itself.
    """
    if visibility_timeout_s <= 0:
        raise ValueError("the visibility timeout is positive")
    return max(0.0, min(delay_s, visibility_timeout_s / 2))
