"""Rate-limit buckets are pooled per model family on the real Redis: two Opus 4.x models draw from
one set of buckets (Anthropic's rate-limits page: "Opus 4.8, 4.7, 4.6, 4.5 combined"), and a limit
configured for one model is its family's."""

from __future__ import annotations

import pytest
import redis

from settings import load_settings
from tasks.limiter import limits_view, pool_key, take_token
from workflows.calls import CallRequest

pytestmark = pytest.mark.integration


def request(model: str) -> CallRequest:
    return CallRequest(model=model, system="Classify.", user_blocks=("A short text.",), max_tokens=16)


def test_two_opus_models_share_one_family_bucket_on_redis(redis_db):
    # rpm=3: our bucket holds 2.7 (the 10 % reserve) and refills 1 every 20 s. `*` gives every other
    # family a pool of its own with the same limit.
    client = redis.Redis.from_url(redis_db)
    for key in client.scan_iter("chorus:ratelimit:*opus*"):
        client.delete(key)
    settings = load_settings(broker_url=redis_db, rate_limits="claude-opus-4-6:rpm=3;*:rpm=3")
    assert take_token(settings, "claude-opus-4-6", "run:0", request("claude-opus-4-6")) is None
    assert take_token(settings, "claude-opus-4-7", "run:1", request("claude-opus-4-7")) is None
    # The third Opus 4.x call finds the shared pool short of a token, whatever its model.
    wait = take_token(settings, "claude-opus-4-5-20251101", "run:2", request("claude-opus-4-5-20251101"))
    assert wait == pytest.approx((1 - 0.7) * 20, abs=0.5)
    # Opus 5.5 is another family (its own table on the page), with its own full bucket.
    assert take_token(settings, "claude-opus-5-5", "run:3", request("claude-opus-5-5")) is None

    keys = {k.decode() for k in client.scan_iter("chorus:ratelimit:*opus*") if b":held:" not in k}
    assert keys == {f"chorus:ratelimit:{pool_key(m)}" for m in ("claude-opus-4-6", "claude-opus-5-5")}
    assert pool_key("claude-opus-4-7") == pool_key("claude-opus-4-5") == "family:claude-opus-4"

    rows = {r["queue"]: r for r in limits_view(load_settings(broker_url=redis_db, rate_limits="claude-opus-4-6:rpm=3",
                                                             models="claude-opus-4-6,claude-opus-4-7,claude-opus-5-5"))}
    assert rows["llm.claude-opus-4-7"]["pool"] == rows["llm.claude-opus-4-6"]["pool"] == "claude-opus-4"
    assert rows["llm.claude-opus-4-7"]["limits"] == "rpm=3"  # the limit given for opus-4-6 is the pool's
    assert rows["llm.claude-opus-4-7"]["available"] == rows["llm.claude-opus-4-6"]["available"]
    assert rows["llm.claude-opus-5-5"]["limits"] == "unlimited"
