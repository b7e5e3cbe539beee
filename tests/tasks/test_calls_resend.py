"""A slot's re-send (a wait, a retry) that the broker refuses is tried again, then handed back to the
broker (requeued) rather than dropped, which would leave the slot waiting with no task behind it.
Celery's `Task.retry` turns a failed publish into `Reject(requeue=False)`; these tasks stand in for
it, raising what it raises."""

from __future__ import annotations

from types import SimpleNamespace

from celery.exceptions import Reject, Retry

from tasks import calls, dispatch


class RefusingTask:
    def __init__(self, refusals: int) -> None:
        self.request = SimpleNamespace(id="task-1")
        self.refusals = refusals
        self.tries = 0

    def retry(self, countdown: float) -> Retry:
        self.tries += 1
        if self.tries <= self.refusals:
            raise Reject(ConnectionError("Error 111 connecting to 127.0.0.1:6379"), requeue=False)
        raise Retry(when=countdown)


def test_a_re_send_refused_for_a_moment_is_sent_once_the_broker_is_back(monkeypatch):
    monkeypatch.setattr(dispatch.time, "sleep", lambda s: None)
    task = RefusingTask(refusals=2)
    outcome = calls.retry_later(task, 5.0)
    assert isinstance(outcome, Retry) and task.tries == 3


def test_a_re_send_refused_for_too_long_hands_the_message_back_to_the_broker(monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every look at the clock: ten more seconds gone
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(dispatch.time, "sleep", lambda s: None)
    task = RefusingTask(refusals=10**6)
    outcome = calls.retry_later(task, 5.0)
    assert isinstance(outcome, Reject) and outcome.requeue is True
    assert 1 <= task.tries <= 1 + dispatch.BROKER_RETRY_S / 10
