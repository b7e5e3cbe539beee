"""The floor: N concurrent calls with `asyncio.gather` on the async SDK client, tallied in place."""

from __future__ import annotations

import asyncio

import anthropic

from bench.peers import answer_of, plurality, request_params


async def vote(client: anthropic.AsyncAnthropic, text: str, voters: int) -> str | None:
    responses = await asyncio.gather(*(client.messages.create(**request_params(i, text)) for i in range(voters)))
    return plurality([answer_of(r) for r in responses])
