"""The embedded broker: messages are never seen half-written, and the worker loop stays prompt."""

from __future__ import annotations

import threading
from queue import Empty

from kombu import Connection, Queue

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


def test_each_blocking_poll_is_capped():
    assert MAX_BLOCK_S <= 0.1
