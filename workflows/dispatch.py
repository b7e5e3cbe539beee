"""Cache-aware dispatch (pure): which voters go first so the others can read the shared prefix.

Anthropic makes a cache entry readable only once the first response that wrote it begins, so N
voters sent at once all miss and each pays a cache write. Sending one voter per model first (the
"leader") and the rest once it has answered turns N writes into one write and N-1 reads. The
leader is a real voter rather than a `max_tokens: 0` pre-warm: the pre-warm would pay the prefix
once more as a read for the voter it replaces, which puts the vote above the minimum cost.
Below the model's minimum cacheable length nothing is cached, so nothing waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workflows.calls import CallRequest
from workflows.tokens import estimate_tokens, min_cacheable_tokens
from workflows.voting import Voter


def cacheable_prefix_tokens(request: CallRequest) -> int:
    """Estimated tokens of the prefix a request marks for caching (system + its cache blocks)."""
    blocks = request.user_blocks[: request.cache_blocks]
    if not blocks:
        return 0
    return estimate_tokens(request.system) + sum(estimate_tokens(b) for b in blocks)


def shares_prefix(models: Sequence[str], model: str) -> bool:
    """A prefix is worth marking only when another voter of the same model can read it."""
    return sum(1 for m in models if m == model) > 1


@dataclass(frozen=True)
class Dispatch:
    leaders: tuple[int, ...]  # slots sent first
    followers: tuple[int, ...]  # slots sent once every leader has answered (or failed)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"leaders": list(self.leaders), "followers": list(self.followers), "reason": self.reason}


def plan_dispatch(panel: Sequence[Voter], prefix_tokens: int, *, cache_aware: bool = True) -> Dispatch:
    everyone = tuple(v.slot for v in panel)
    if not cache_aware:
        return Dispatch((), everyone, "cache-aware dispatch is off: every voter is sent at once")
    counts = Counter(v.model for v in panel)
    leaders: list[int] = []
    skipped: list[str] = []
    for model in dict.fromkeys(v.model for v in panel):
        if counts[model] < 2:
            continue
        minimum = min_cacheable_tokens(model)
        if prefix_tokens < minimum:
            skipped.append(f"{model} needs {minimum}")
            continue
        leaders.append(next(v.slot for v in panel if v.model == model))
    if not leaders:
        why = (f"the shared prefix (~{prefix_tokens} tokens) is under the cache minimum ({'; '.join(skipped)})"
               if skipped else "no two voters share a model, so no prefix can be read from the cache")
        return Dispatch((), everyone, f"{why}: every voter is sent at once")
    followers = tuple(s for s in everyone if s not in leaders)
    return Dispatch(tuple(leaders), followers,
                    f"slot(s) {', '.join(map(str, leaders))} go first and write the cache "
                    f"(~{prefix_tokens} tokens); {len(followers)} voter(s) follow and read it")
