"""The embedded broker: messages are never seen half-written, and the worker loop stays prompt."""

from __future__ import annotations

import threading
import time
from queue import Empty

import pytest
from kombu import Connection, Consumer, Queue

from chorus.embedded.transport import MAX_BLOCK_S, Transport


def connection(folder) -> Connection:
    return Connection(
        transport=Transport,
        transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder),
                           "control_folder": str(folder / "control"), "polling_interval": 0.001},
    )


def test_a_consumer_racing_a_producer_only_ever_reads_whole_messages(tmp_path):
    total = 800
    payload = {"body": "x" * 20_000}  # large enough that a non-atomic write is caught half-way
    received: list[dict] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def consume() -> None:
        try:
            with connection(tmp_path) as conn:
                inbox = conn.SimpleQueue(Queue("llm.model-1", routing_key="llm.model-1"))
                while len(received) < total and not done.is_set():
                    try:
                        msg = inbox.get(block=True, timeout=0.05)
                    except Empty:
                        continue
                    received.append(msg.payload)
                    msg.ack()
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever broke the consumer
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with connection(tmp_path) as conn:
        outbox = conn.SimpleQueue(Queue("llm.model-1", routing_key="llm.model-1"))
        for i in range(total):
            outbox.put({**payload, "i": i})
    consumer.join(30)
    done.set()
    assert errors == []
    assert sorted(m["i"] for m in received) == list(range(total))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("asked", [2.0, None])
def test_a_poll_of_an_empty_queue_returns_within_the_cap_whatever_timeout_it_was_given(tmp_path, asked):
    # Celery's synloop polls with a long (or no) timeout and looks at its shutdown flag only in between.
    outcome: list[BaseException | float] = []

    def poll() -> None:
        with connection(tmp_path) as conn:
            Consumer(conn.channel(), [Queue("llm.model-1", routing_key="llm.model-1")],
                     callbacks=[lambda body, message: None]).consume()
            started = time.monotonic()
            try:
                conn.drain_events(timeout=asked)
            except TimeoutError:  # kombu's socket.timeout: nothing arrived
                outcome.append(time.monotonic() - started)
            except BaseException as exc:  # noqa: BLE001 - the test reports whatever else happened
                outcome.append(exc)

    poller = threading.Thread(target=poll, daemon=True)  # uncapped, timeout=None would block for ever
    poller.start()
    poller.join(5)
    assert not poller.is_alive(), f"drain_events(timeout={asked}) was still blocking after 5 s"
    assert len(outcome) == 1 and isinstance(outcome[0], float), outcome
    assert outcome[0] < MAX_BLOCK_S + 0.3, f"an empty poll took {outcome[0]:.2f} s (cap {MAX_BLOCK_S} s)"
