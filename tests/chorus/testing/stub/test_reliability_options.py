"""The stub's seeded fault mix and its Anthropic-style token-bucket rate limits."""

from __future__ import annotations

import time
from collections import Counter

import anthropic
import pytest

from chorus.testing.stub.faults import FaultMix, parse_mix
from chorus.testing.stub.ratelimit import StubLimiter, StubLimits, pool_of
from chorus.testing.stub.testing import running_stub
from tests.chorus.testing.stub.test_server import message_body, post


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("429=0.2,529=0.05,500=0.05,hang=0.02", [("429", 0.2), ("529", 0.05), ("500", 0.05), ("hang", 0.02)]),
        ("", []),
        (" 500=1 ", [("500", 1.0)]),
    ],
)
def test_a_fault_mix_parses_into_shares(spec, expected):
    assert parse_mix(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("429", "expected KIND=SHARE"), ("418=0.1", "kind is one of"), ("500=lots", "not a number"),
     ("500=1.5", "between 0 and 1"), ("500=0.6,429=0.6", "more than 1")],
)
def test_a_bad_fault_mix_is_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(spec)


def test_the_same_seed_draws_the_same_faults_in_the_same_order():
    draws = [[FaultMix.parse("429=0.3,500=0.2", seed=seed).draw() for _ in range(1)] for seed in (7, 7)]
    assert draws[0] == draws[1]
    a, b = FaultMix.parse("429=0.3,500=0.2", seed=3), FaultMix.parse("429=0.3,500=0.2", seed=3)
    seq_a, seq_b = [a.draw() for _ in range(500)], [b.draw() for _ in range(500)]
    assert seq_a == seq_b
    counts = Counter(f.kind if f else "ok" for f in seq_a)
    assert 0.25 < counts["429"] / 500 < 0.35 and 0.15 < counts["500"] / 500 < 0.25


def test_a_hang_is_bounded():
    with pytest.raises(ValueError, match="bounded"):
        FaultMix.parse("hang=0.1", hang_s=0)


HAIKU = "claude-haiku-4-5"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_stub_limiter_admits_a_full_minute_then_refills_continuously():
    clock = FakeClock()
    limiter = StubLimiter(StubLimits(rpm=60), clock=clock)
    assert all(limiter.admit(HAIKU, 10, 16).allowed for _ in range(60))
    refused = limiter.admit(HAIKU, 10, 16)
    assert not refused.allowed and refused.limited == "requests"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    clock.now = 2.0  # two seconds later, two requests' worth has come back
    assert limiter.admit(HAIKU, 10, 16).allowed and limiter.admit(HAIKU, 10, 16).allowed
    assert not limiter.admit(HAIKU, 10, 16).allowed


def test_output_tokens_are_charged_max_tokens_up_front_and_the_rest_given_back():
    clock = FakeClock()
    limiter = StubLimiter(StubLimits(otpm=100), clock=clock)
    assert limiter.admit(HAIKU, 5, 80).allowed
    verdict = limiter.admit(HAIKU, 5, 80)
    assert not verdict.allowed and verdict.limited == "output_tokens"
    limiter.finish(HAIKU, output_tokens=10, max_tokens=80)  # 70 unused come back
    assert limiter.admit(HAIKU, 5, 80).allowed
    # The `tokens` headers show the most restrictive of the input and output limits.
    assert verdict.headers["anthropic-ratelimit-tokens-limit"] == "100"


@pytest.mark.integration  # the stub server, a process
def test_the_stub_answers_anthropic_rate_limit_headers_and_429s_over_http():
    with running_stub(extra_args=("--rpm", "3", "--itpm", "100000", "--otpm", "20000")) as stub:
        results = [post(stub, message_body()) for _ in range(4)]
        log = stub.requests()
    statuses = [status for status, _, _ in results]
    assert statuses == [200, 200, 200, 429]
    ok_headers = results[0][1]
    for dim in ("requests", "input-tokens", "output-tokens", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{dim}-{part}" in ok_headers
    assert ok_headers["anthropic-ratelimit-requests-limit"] == "3"
    assert ok_headers["anthropic-ratelimit-requests-remaining"] == "2"
    assert ok_headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    _, headers, body = results[3]
    assert body["error"]["type"] == "rate_limit_error"
    assert "3 requests per minute" in body["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    assert [e.get("limited") for e in log] == [None, None, None, "requests"]


@pytest.mark.integration  # the stub server, a process
def test_a_seeded_fault_mix_answers_429_with_retry_after_and_a_hang_outlasts_the_client():
    args = ("--fault", "429=0.5,hang=0.5", "--seed", "11", "--hang-s", "1.5", "--retry-after", "2")
    with running_stub(extra_args=args) as stub:
        client = anthropic.Anthropic(api_key="k", base_url=stub.base_url, timeout=0.5, max_retries=0)
        outcomes: list[tuple[str, object]] = []
        for _ in range(6):
            started = time.monotonic()
            try:
                client.messages.create(model="claude-haiku-4-5", max_tokens=16,
                                       messages=[{"role": "user", "content": "hi"}])
                outcomes.append(("ok", None))
            except anthropic.RateLimitError as exc:
                outcomes.append(("429", exc.response.headers.get("retry-after")))
            except anthropic.APITimeoutError:
                outcomes.append(("timeout", round(time.monotonic() - started, 1)))
        time.sleep(1.6)  # let the hung handlers finish and log
        log = stub.requests()
    kinds = [k for k, _ in outcomes]
    assert set(kinds) == {"429", "timeout"}
    assert all(v == "2" for k, v in outcomes if k == "429")
    log.sort(key=lambda e: e["time"])  # logged when answered; a hang answers late
    assert [e.get("fault") for e in log] == ["429" if k == "429" else "hang" for k in kinds]
    assert all(e["status"] == 504 for e in log if e.get("fault") == "hang")
    # The same seed gives the same sequence again.
    again = FaultMix.parse("429=0.5,hang=0.5", seed=11)
    assert [f.kind if f else "ok" for f in (again.draw() for _ in range(6))] == [
        "hang" if k == "timeout" else k for k in kinds]


def test_models_of_one_family_share_their_buckets_and_other_families_do_not():
    assert pool_of("claude-sonnet-4-6") == pool_of("claude-sonnet-4-5-20250929") == "claude-sonnet-4"
    assert pool_of("claude-opus-4-6") == pool_of("claude-opus-4-1") != pool_of("claude-haiku-4-5")
    limiter = StubLimiter(StubLimits(rpm=2), clock=FakeClock())
    assert limiter.admit("claude-sonnet-4-6", 10, 16).allowed and limiter.admit("claude-sonnet-4-5", 10, 16).allowed
    assert not limiter.admit("claude-sonnet-4-6", 10, 16).allowed  # the Sonnet 4.x pool is empty
    assert limiter.admit(HAIKU, 10, 16).allowed  # Haiku has its own


def test_an_input_token_limit_refuses_with_the_wait_until_the_tokens_are_back():
    clock = FakeClock()
    limiter = StubLimiter(StubLimits(itpm=6000), clock=clock)  # 100 tokens a second
    assert limiter.admit(HAIKU, 5000, 16).allowed
    refused = limiter.admit(HAIKU, 3000, 16)
    assert not refused.allowed and refused.limited == "input_tokens"
    assert refused.headers["retry-after"] == "20"  # 2,000 tokens missing at 100 a second
    assert refused.headers["anthropic-ratelimit-input-tokens-remaining"] == "1000"
    assert "6000 input tokens per minute" in refused.message
    clock.now = 20.0
    assert limiter.admit(HAIKU, 3000, 16).allowed


LONG = "The kettle is excellent and quiet. " * 600  # 4,800 tokens by the stub's count


def cached_body(document: str = LONG) -> dict[str, object]:
    return {"model": HAIKU, "max_tokens": 16, "system": "You classify documents.", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": f"<labels>\npositive\nnegative\n</labels>\n<document>\n{document}\n</document>\n",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "<focus>whole</focus>\nReply with one line: Answer: <label>"}]}]}


@pytest.mark.integration  # the stub server, a process
def test_cache_reads_do_not_count_towards_input_tokens_per_minute_but_writes_do():
    # Anthropic's cache-aware ITPM: input_tokens + cache_creation_input_tokens count, cache reads do not.
    with running_stub(extra_args=("--itpm", "6000")) as stub:
        results = [post(stub, cached_body()) for _ in range(5)]
        other = post(stub, cached_body(LONG.replace("kettle", "teapot")))  # another prefix: a write
        log = stub.requests()
    assert [status for status, _, _ in results] == [200] * 5
    first, reads = results[0][2]["usage"], [r[2]["usage"] for r in results[1:]]
    assert first["cache_creation_input_tokens"] > 4096
    assert all(u["cache_read_input_tokens"] == first["cache_creation_input_tokens"] for u in reads)
    remaining = [int(headers["anthropic-ratelimit-input-tokens-remaining"]) for _, headers, _ in results]
    charged = first["cache_creation_input_tokens"] + first["input_tokens"]
    assert remaining[0] == pytest.approx(6000 - charged, abs=5)
    # each read took only its own uncached tail (a few tokens; the bucket also refills meanwhile)
    assert all(remaining[i + 1] >= remaining[i] - reads[i]["input_tokens"] for i in range(4))
    status, headers, body = other
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert int(headers["retry-after"]) >= 30  # ~3,700 missing tokens at 100 a second
    assert log[-1]["limited"] == "input_tokens"
