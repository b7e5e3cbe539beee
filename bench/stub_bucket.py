"""The stub's request bucket, seen from outside: spend it before a measurement, and replay its level
over the stub's request log from the level the last 429 reported. `bench.ratelimit` and
`bench.batch_limit` both measure the share of a limit used this way.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any


def drain_stub(stub: Any, rpm: float, model: str) -> tuple[float, float]:
    """Spend the stub's request bucket with direct calls (as a long busy period would have); (time,
    level) at the end, the level read from the refusing 429's `anthropic-ratelimit-requests-remaining`
    header. The log is then cleared: the drain is not part of the measurement (reset keeps the buckets)."""
    body = json.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "drain"}]})
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=10)
    try:
        for _ in range(int(10 * rpm)):
            sent = time.time()
            conn.request("POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                                  "x-api-key": "bench-key"})
            response = conn.getresponse()
            response.read()
            if response.status == 429:
                remaining = response.getheader("anthropic-ratelimit-requests-remaining")
                if remaining is None:
                    raise SystemExit("the stub's 429 carries no anthropic-ratelimit-requests-remaining header")
                return sent, float(remaining)
            if response.status != 200:
                raise SystemExit(f"draining the stub: HTTP {response.status}")
    finally:
        conn.close()
        stub.reset()
    raise SystemExit(f"the stub took {int(10 * rpm)} calls without a 429: is it limited to {rpm:g} RPM?")


def admitted_at(entry: dict[str, Any]) -> float:
    """When the stub's bucket decided on a logged call: `time` is its arrival; a 429 is answered right
    after the decision, a 200 after the decision and the delay the stub drew for it (`delay_ms`)."""
    spent_ms = entry["latency_ms"] - (entry.get("delay_ms", 0.0) if entry["status"] == 200 else 0.0)
    return float(entry["time"]) + max(0.0, spent_ms) / 1000


def replay_levels(start: tuple[float, float], log: list[dict[str, Any]], at: list[float],
                  rpm: float) -> dict[str, Any]:
    """The provider's request bucket (`rpm`, refilled continuously) replayed from a measured (time,
    level) over the stub's log: its level at each time of `at`, and how many of the stub's decisions
    the replay disagrees with by more than half a token (an acceptance without a token, a 429 with one
    to spare)."""
    rate = rpm / 60
    t_last, level = start
    marks = sorted(at)
    levels: dict[float, float] = {}
    disagreements = 0
    for when, status in sorted((admitted_at(e), e["status"]) for e in log if e["status"] in (200, 429)):
        while marks and marks[0] <= when:
            levels[marks[0]] = min(rpm, level + rate * max(0.0, marks[0] - t_last))
            marks.pop(0)
        level = min(rpm, level + rate * max(0.0, when - t_last))
        t_last = max(t_last, when)
        # Half a token of slack: a decision's time is estimated from the log to a few milliseconds.
        if status == 200:
            disagreements += level < 0.5
            level -= 1
        else:
            disagreements += level >= 1.5
    for mark in marks:
        levels[mark] = min(rpm, level + rate * max(0.0, mark - t_last))
    return {"levels": [levels[t] for t in at], "disagreements": int(disagreements)}
