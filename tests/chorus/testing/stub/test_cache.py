"""The stub's prompt cache follows Anthropic's rules: readable only once the writing response
begins, a TTL refreshed by hits, a per-model minimum, and usage reported the way Anthropic does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from chorus.testing.stub.cache import CacheRequestError, PromptCache, find_prefix
from chorus.testing.stub.testing import StubHandle, running_stub

# Sizes by the stub's own tokenizer (8 tokens a sentence; see test_tokenizer.py):
LONG_DOC = "The kettle is excellent and quiet. " * 600  # 4,800 tokens: above every model's minimum
SHORT_DOC = "The kettle is excellent and quiet. " * 50  # 400 tokens: below every model's minimum


def body(document: str, *, model: str = "claude-haiku-4-5", focus: str = "whole", ttl: str | None = None,
         max_tokens: int = 64) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": "You classify documents.",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": f"<labels>\npositive\nnegative\n</labels>\n<document>\n{document}\n</document>\n",
             "cache_control": control},
            {"type": "text", "text": f"<focus>{focus}</focus>\nReply with one line: Answer: <label>"},
        ]}],
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_request_whose_prefix_is_being_written_misses_until_the_first_response_begins(clock):
    cache = PromptCache(clock)
    first = cache.lookup(body(LONG_DOC))
    second = cache.lookup(body(LONG_DOC, focus="opening"))  # arrives before the first response began
    assert first.write_tokens > 0 and second.write_tokens == first.write_tokens
    assert first.read_tokens == second.read_tokens == 0
    cache.response_started(first)
    clock.now += 0.01
    third = cache.lookup(body(LONG_DOC, focus="closing"))
    assert (third.write_tokens, third.read_tokens) == (0, first.write_tokens)


@pytest.mark.parametrize(
    ("ttl", "idle_s", "hit"),
    [(None, 299.0, True), (None, 301.0, False), ("5m", 301.0, False), ("1h", 301.0, True), ("1h", 3601.0, False)],
)
def test_an_entry_lives_for_its_ttl_after_its_last_use(clock, ttl, idle_s, hit):
    cache = PromptCache(clock)
    cache.response_started(cache.lookup(body(LONG_DOC, ttl=ttl)))
    clock.now += idle_s
    usage = cache.lookup(body(LONG_DOC, ttl=ttl))
    assert (usage.read_tokens > 0) is hit
    assert (usage.write_tokens > 0) is not hit


def test_a_hit_refreshes_the_entry(clock):
    cache = PromptCache(clock)
    cache.response_started(cache.lookup(body(LONG_DOC)))
    clock.now += 200
    assert cache.lookup(body(LONG_DOC)).read_tokens > 0
    clock.now += 200  # 400 s after the write, 200 s after the hit
    assert cache.lookup(body(LONG_DOC)).read_tokens > 0


@pytest.mark.parametrize(
    ("model", "document", "cached"),
    [
        ("claude-haiku-4-5", SHORT_DOC, False),
        ("claude-haiku-4-5", "x " * 3500, False),  # 3,500 (+ framing) tokens: under Haiku 4.5's 4,096
        ("claude-sonnet-4-5", "x " * 3500, True),  # the same prefix is above Sonnet 4.5's 1,024
        # Anthropic's table lists Sonnet 4.6 at 1,024 (chorus's registry takes 2,048 to be safe)
        ("claude-sonnet-4-6", "word " * 1500, True),
        ("claude-haiku-4-5-20251001", "x " * 3500, False),  # a dated snapshot is its model
        # chorus's ~4 characters a token would call this 4,725 tokens; the stub counts 3,600
        ("claude-haiku-4-5", "internationalization " * 900, False),
        ("claude-haiku-4-5", LONG_DOC, True),
    ],
)
def test_a_prefix_under_the_models_minimum_is_never_cached(clock, model, document, cached):
    cache = PromptCache(clock)
    for _ in range(2):
        usage = cache.lookup(body(document, model=model))
        cache.response_started(usage)
        clock.now += 1
    assert (usage.read_tokens > 0) is cached
    if not cached:
        assert usage.write_tokens == 0


def test_the_key_is_the_exact_prefix_and_the_model(clock):
    cache = PromptCache(clock)
    cache.response_started(cache.lookup(body(LONG_DOC)))
    clock.now += 1
    assert cache.lookup(body(LONG_DOC + "!")).read_tokens == 0
    assert cache.lookup(body(LONG_DOC, model="claude-sonnet-4-6")).read_tokens == 0


def test_usage_counts_only_tokens_after_the_breakpoint_as_input(clock):
    usage = PromptCache(clock).lookup(body(LONG_DOC, ttl="1h"))
    fields = usage.usage_fields(prompt_tokens=usage.write_tokens + 30)
    assert fields["input_tokens"] == 30
    assert fields["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": usage.write_tokens}


def test_nothing_marked_means_nothing_cached_and_a_bad_ttl_is_refused():
    unmarked = body(LONG_DOC)
    del unmarked["messages"][0]["content"][0]["cache_control"]
    assert find_prefix(unmarked) is None
    with pytest.raises(CacheRequestError, match="ttl"):
        find_prefix(body(LONG_DOC, ttl="10m"))


# ----- through HTTP and the real SDK ---------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_stub() -> Iterator[StubHandle]:
    with running_stub(latency_ms=150) as handle:
        yield handle


def client(stub: StubHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=stub.base_url, max_retries=0)


def send(stub: StubHandle, focus: str, results: dict[str, Any], document: str = LONG_DOC) -> None:
    results[focus] = client(stub).messages.create(**body(document, focus=focus)).usage


@pytest.mark.integration  # the stub server, a process (slow_stub)
def test_three_calls_sent_at_once_all_miss_and_all_pay_a_cache_write(slow_stub):
    slow_stub.reset()
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=send, args=(slow_stub, f, results)) for f in ("whole", "opening", "closing")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [results[f].cache_read_input_tokens for f in ("whole", "opening", "closing")] == [0, 0, 0]
    assert all(results[f].cache_creation_input_tokens > 4096 for f in results)


@pytest.mark.integration  # the stub server, a process (slow_stub)
def test_one_call_first_then_the_rest_at_once_read_the_prefix_from_the_cache(slow_stub):
    slow_stub.reset()
    results: dict[str, Any] = {}
    send(slow_stub, "whole", results)
    threads = [threading.Thread(target=send, args=(slow_stub, f, results)) for f in ("opening", "closing")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    written = results["whole"].cache_creation_input_tokens
    assert written > 4096 and results["whole"].cache_read_input_tokens == 0
    for f in ("opening", "closing"):
        assert results[f].cache_read_input_tokens == written
        assert results[f].cache_creation_input_tokens == 0
        assert 0 < results[f].input_tokens < 100  # only the voter's own instruction is uncached
    logged = [(r["cache_write_tokens"], r["cache_read_tokens"]) for r in slow_stub.requests()]
    assert logged == [(written, 0), (0, written), (0, written)]


@pytest.mark.integration  # the stub server, a process (slow_stub)
def test_under_the_minimum_nothing_is_written_or_read_over_http(slow_stub):
    slow_stub.reset()
    results: dict[str, Any] = {}
    send(slow_stub, "whole", results, SHORT_DOC)
    send(slow_stub, "opening", results, SHORT_DOC)
    for f in ("whole", "opening"):
        assert results[f].cache_creation_input_tokens == 0 and results[f].cache_read_input_tokens == 0
        assert results[f].input_tokens > 400


@pytest.mark.integration  # the stub server, a process (slow_stub)
def test_count_tokens_through_the_sdk_matches_what_a_call_bills(slow_stub):
    params = body(SHORT_DOC)
    counted = client(slow_stub).messages.count_tokens(model=params["model"], system=params["system"],
                                                      messages=params["messages"])
    billed = client(slow_stub).messages.create(**params).usage
    assert counted.input_tokens == billed.input_tokens > 400


@pytest.mark.integration  # the stub server, a process (slow_stub)
@pytest.mark.parametrize("bad", [{"latency_ms": -1}, {"latency_ms": "fast"}, {"latency_ms": True}, {}])
def test_the_latency_admin_route_refuses_a_bad_value(slow_stub, bad):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as caught:
        slow_stub._admin("POST", "/_stub/latency", bad)
    assert caught.value.code == 400
    slow_stub.set_latency(150)  # a good value is taken (the module's own)
