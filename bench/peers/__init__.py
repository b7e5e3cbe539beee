"""The tools chorus is compared with, each making the same Messages-API calls to the same stub.

- `bare_celery`: a plain Celery chord (header tasks call the SDK, a callback tallies), no database.
- `langgraph_fanout`: LangGraph's `Send` fan-out to N voter nodes, then a tally node.
- `gather`: `asyncio.gather` over the async SDK client: the floor, no queue at all.

All voters send `workflows.voting.vote_request` bodies through the real anthropic SDK, so the work
per call is the same and only the orchestration differs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from workflows.voting import build_panel, parse_answer, vote_request

LABELS = ("positive", "negative", "neutral")
MODEL = "claude-haiku-4-5"


def request_params(slot: int, text: str) -> dict[str, Any]:
    from providers.anthropic_provider import build_params

    voter = build_panel(slot + 1, [MODEL])[slot]
    return build_params(vote_request(voter, LABELS, text, tags=(("run", "peer"), ("slot", str(slot)))))


def answer_of(response: Any) -> str | None:
    text = "".join(block.text for block in response.content if getattr(block, "type", "") == "text")
    return parse_answer(text, LABELS)


def plurality(answers: list[str | None]) -> str | None:
    counts = Counter(a for a in answers if a)
    return counts.most_common(1)[0][0] if counts else None
