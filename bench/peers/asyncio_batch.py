"""The one-machine alternative to `chorus batch` under a rate limit: one asyncio process, the SDK's
async client, an `asyncio.Semaphore` for the calls in flight and a token bucket for the RPM.

    python -m bench.peers.asyncio_batch DOCS.jsonl --base-url URL --rpm 3000 --concurrency 128 --voters 3

Every document of the JSONL (`id`, `text`) gets `--voters` calls, the same request bodies chorus's
voters send (`bench.peers.request_params`, no temperature: API 2026-10-21 refuses it); the answers
are tallied in memory and nothing is stored, so a crash loses the whole batch. The SDK keeps its
default retries (2, honouring `retry-after`). The bucket starts with `--tokens` (default 0: empty,
as after a busy minute) and refills at rpm/60 per second. Prints one JSON line: calls, successes,
failures by kind, documents with an answer, wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic

from bench.peers import answer_of, plurality, request_params


class TokenBucket:
    """`per_minute` tokens at most, refilled continuously; waiters are served in turn."""

    def __init__(self, per_minute: float, tokens: float = 0.0) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60
        self.tokens = min(tokens, per_minute)
        self.at = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + self.rate * (now - self.at))
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


async def run_batch(docs: list[dict[str, Any]], *, base_url: str, rpm: float, concurrency: int, voters: int,
                    tokens: float = 0.0) -> dict[str, Any]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="bench-key")  # SDK default retries
    gate = asyncio.Semaphore(concurrency)
    bucket = TokenBucket(rpm, tokens)
    failures: Counter[str] = Counter()

    async def call(slot: int, text: str) -> str | None:
        async with gate:
            await bucket.take()
            try:
                return answer_of(await client.messages.create(**request_params(slot, text)))
            except anthropic.APIError as exc:
                failures[type(exc).__name__] += 1
                return None

    async def vote(text: str) -> str | None:
        return plurality(list(await asyncio.gather(*(call(slot, text) for slot in range(voters)))))

    started = time.monotonic()
    try:
        answers = await asyncio.gather(*(vote(d["text"]) for d in docs))
    finally:
        await client.close()
    calls = len(docs) * voters
    return {"docs": len(docs), "calls": calls, "succeeded": calls - sum(failures.values()),
            "failed": sum(failures.values()), "failures": dict(failures),
            "docs_with_answer": sum(1 for a in answers if a is not None),
            "wall_s": round(time.monotonic() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="JSONL, one {\"id\", \"text\"} per line")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--rpm", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--tokens", type=float, default=0.0, help="tokens in the bucket at the start")
    args = parser.parse_args(argv)
    docs = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    result = asyncio.run(run_batch(docs, base_url=args.base_url, rpm=args.rpm, concurrency=args.concurrency,
                                   voters=args.voters, tokens=args.tokens))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
