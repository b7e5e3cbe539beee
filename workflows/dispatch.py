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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workflows.calls import CallRequest
from workflows.tokens import attachment_tokens, estimate_tokens, min_cacheable_tokens
from workflows.voting import Voter


def cacheable_prefix_tokens(request: CallRequest) -> int:
    """Estimated tokens of the prefix a request marks for caching (system + its cache blocks)."""
    if request.prefix_blocks == 0:
        return 0
    prefix = request.prefix_request()
    return (estimate_tokens(request.system) + sum(estimate_tokens(b) for b in prefix.user_blocks)
            + sum(attachment_tokens(a, request.model) for a in prefix.attachments))


def shares_prefix(models: Sequence[str], model: str) -> bool:
    """A prefix is worth marking only when another voter of the same model can read it."""
    return sum(1 for m in models if m == model) > 1


@dataclass(frozen=True)
class Dispatch:
    leaders: tuple[int, ...]  # slots sent first
    followers: tuple[int, ...]  # slots sent once every leader has answered (or failed)
    reason: str
    # model -> the shared prefix's tokens as counted (count_tokens) where chorus's estimate was too close
    # to the model's cache minimum to decide; the worker marks the prefix by this count, not its estimate.
    prefix_tokens: dict[str, int] = field(default_factory=dict)
    # (slot, model) of each `max_tokens: 0` pre-warm call (warm="prewarm"): it writes the model's prefix
    # and every voter follows; its slot comes after the panel's.
    prewarm: tuple[tuple[int, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"leaders": list(self.leaders), "followers": list(self.followers), "reason": self.reason,
                **({"prefix_tokens": dict(self.prefix_tokens)} if self.prefix_tokens else {}),
                **({"prewarm": [list(p) for p in self.prewarm]} if self.prewarm else {})}


def expects_cache_read(config: Mapping[str, Any], slot: int, model: str) -> bool:
    """Whether a voter should have read the shared prefix from the cache: it was not a leader, and a
    leader of its model wrote the prefix before it was sent (a stored run's config: voters, dispatch).
    Anthropic makes an entry readable once the writing response begins, yet users measured misses right
    after the writer finished (anthropic-sdk-python #1451): each follower's read is checked."""
    dispatch = config.get("dispatch") or {}
    if any(model == warmed for _, warmed in dispatch.get("prewarm") or ()):
        return True  # every voter of a pre-warmed model follows the pre-warm
    leaders = dispatch.get("leaders") or ()
    if slot in leaders:
        return False
    models = {v["slot"]: v["model"] for v in config.get("voters", ())}
    return any(models.get(leader) == model for leader in leaders)


# Chorus's estimate (~4 characters a token) and the API's count of the same text differ by up to about
# 1.5x for English prose and more for short words, code or other scripts; only far from the minimum is
# the estimate alone sure to fall on the right side of it.
UNSURE_BELOW, UNSURE_ABOVE = 1 / 3, 2.0


def needs_count(estimate: int, model: str) -> bool:
    """Whether an estimated prefix is too close to the model's cache minimum to decide without counting."""
    minimum = min_cacheable_tokens(model)
    return minimum * UNSURE_BELOW <= estimate < minimum * UNSURE_ABOVE


WARM_MODES = ("leader", "prewarm")


def plan_dispatch(panel: Sequence[Voter], prefix_tokens: int | Mapping[str, int], *, cache_aware: bool = True,
                  counted: Mapping[str, int] | None = None, warm: str = "leader") -> Dispatch:
    """Leaders (one per model with two voters or more, when its shared prefix reaches the model's cache
    minimum) and followers. `prefix_tokens` is the prefix's size, one figure or per model; `counted`
    (model -> tokens by count_tokens) overrides it and is kept for the workers. `warm="prewarm"`: instead
    of a leader, a `max_tokens: 0` call writes each such model's prefix and every voter follows it: the
    voters wait for a prefill rather than a whole answer, for one more read of the prefix (and the call's
    uncached tail) than a leader costs."""
    if warm not in WARM_MODES:
        raise ValueError(f"unknown cache warm-up {warm!r}; use one of: {', '.join(WARM_MODES)}")
    sizes = dict(prefix_tokens) if isinstance(prefix_tokens, Mapping) else {}
    sizes.update(counted or {})

    def size_of(model: str) -> int:
        return sizes.get(model, prefix_tokens if isinstance(prefix_tokens, int) else 0)

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
        if size_of(model) < minimum:
            skipped.append(f"{model} needs {minimum}")
            continue
        leaders.append(next(v.slot for v in panel if v.model == model))
    kept = dict(counted or {})
    shown = ", ".join(f"{'' if m in kept else '~'}{size_of(m)} for {m}" for m in dict.fromkeys(v.model for v in panel)
                      if counts[m] > 1) or f"~{size_of(panel[0].model)}"
    if not leaders:
        why = (f"the shared prefix ({shown} tokens) is under the cache minimum ({'; '.join(skipped)})"
               if skipped else "no two voters share a model, so no prefix can be read from the cache")
        return Dispatch((), everyone, f"{why}: every voter is sent at once", kept)
    if warm == "prewarm":
        first = len(panel)
        warmed = tuple((first + i, panel[next(j for j, v in enumerate(panel) if v.slot == slot)].model)
                       for i, slot in enumerate(leaders))
        return Dispatch((), everyone,
                        f"a max_tokens: 0 pre-warm writes the cache ({shown} tokens) for "
                        f"{', '.join(m for _, m in warmed)}; all {len(everyone)} voters follow and read it",
                        kept, warmed)
    followers = tuple(s for s in everyone if s not in leaders)
    return Dispatch(tuple(leaders), followers,
                    f"slot(s) {', '.join(map(str, leaders))} go first and write the cache "
                    f"({shown} tokens); {len(followers)} voter(s) follow and read it", kept)
