"""The stub knows the current models from Anthropic's pages, on its own: their cache minimums, the
newer tokenizer (Opus 4.7 and every 5.x model count ~1.3x the tokens), and their rate-limit pools."""

from __future__ import annotations

import pytest

from chorus.testing.stub.cache import PromptCache, min_cacheable
from chorus.testing.stub.ratelimit import StubLimiter, StubLimits, pool_of
from chorus.testing.stub.tokenizer import MESSAGE_FRAMING, SYSTEM_FRAMING, count_request, count_text
from tests.chorus.testing.stub.test_cache import body


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("model", "minimum"),
    [("claude-haiku-5-5", 4096), ("claude-sonnet-5-5", 1024), ("claude-opus-5-5", 512), ("claude-fable-5-2", 512),
     ("claude-opus-4-7", 2048), ("claude-opus-4-6", 4096), ("claude-haiku-5-5-20261007", 4096)],
)
def test_the_new_models_have_their_own_cache_minimums(model, minimum):
    assert min_cacheable(model) == minimum


def test_the_newer_tokenizer_counts_about_thirty_percent_more_for_the_same_text():
    text = "The kettle is excellent and quiet. " * 100  # 800 pieces
    assert count_text(text) == count_text(text, "claude-haiku-4-5") == count_text(text, "claude-opus-4-6") == 800
    for model in ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-opus-4-7", "claude-fable-5-2"):
        assert count_text(text, model) == 1040, model
    request = {"model": "claude-haiku-5-5", "system": "Classify.",
               "messages": [{"role": "user", "content": text}]}
    older = dict(request, model="claude-haiku-4-5")
    framing = SYSTEM_FRAMING + MESSAGE_FRAMING
    assert count_request(request) - framing == pytest.approx(1.3 * (count_request(older) - framing), abs=2)


def test_a_cached_prefix_is_counted_in_the_models_tokenizer():
    doc = "The kettle is excellent and quiet. " * 600
    old = PromptCache(clock=FakeClock()).lookup(body(doc, model="claude-haiku-4-5"))
    new = PromptCache(clock=FakeClock()).lookup(body(doc, model="claude-haiku-5-5"))
    assert old.write_tokens > 4096 and new.write_tokens > 1.25 * old.write_tokens


def test_rate_limit_pools_follow_the_pages_tables():
    assert pool_of("claude-opus-4-7") == pool_of("claude-opus-4-5-20251101") == pool_of("claude-opus-4-6")
    assert pool_of("claude-fable-5-1") == pool_of("claude-fable-5-2")
    assert pool_of("claude-opus-5-5") == "claude-opus-5-5" != pool_of("claude-opus-4-6")  # a table of its own
    assert pool_of("claude-haiku-5-5") != pool_of("claude-haiku-4-5")
    limiter = StubLimiter(StubLimits(rpm=2), clock=FakeClock())
    assert limiter.admit("claude-opus-4-6", 10, 16).allowed and limiter.admit("claude-opus-4-7", 10, 16).allowed
    assert not limiter.admit("claude-opus-4-5", 10, 16).allowed  # the Opus 4.x pool is empty
    assert limiter.admit("claude-opus-5-5", 10, 16).allowed
