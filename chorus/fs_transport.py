"""kombu's filesystem transport, with a short blocking poll so the embedded worker stops at once.

Celery's fallback event loop (`synloop`, used by transports without async I/O) waits up to 2 s in
each `drain_events` call before it looks at its shutdown flag; a warm shutdown of the embedded
worker took about 4 s of doing nothing. Capping each blocking poll keeps the loop responsive; the
folder is still polled at `polling_interval`, so the cost is a few extra loop turns per second.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import filesystem

MAX_BLOCK_S = 0.1


class Transport(filesystem.Transport):
    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        capped = MAX_BLOCK_S if timeout is None else min(timeout, MAX_BLOCK_S)
        return super().drain_events(connection, timeout=capped)
