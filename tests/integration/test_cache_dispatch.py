"""Cache-aware dispatch through real workers, Redis, PostgreSQL and the stub's prompt cache."""

from __future__ import annotations

import pytest

from chorus.costing import minimum_cost, run_cost
from chorus.runs import get_run, wait_for_run
from chorus.vote import plan_vote, submit_plan
from settings import get_settings

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
MODEL = "claude-haiku-4-5"  # the model whose cache minimum and prices these tests are written for
# ~6,000 tokens of shared prefix: above Haiku 4.5's 4,096-token cache minimum.
LONG = ("I love this kettle. It is excellent, fast and quiet. The lid is a little stiff. " * 300).strip()
# Short words: chorus's ~4 characters a token puts this prefix at ~3,600 tokens, under Haiku 4.5's
# 4,096, while the API (the stub's tokenizer, as count_tokens reports it) counts ~5,100.
SHORT_WORDS = ("It is ok. I do not mind it. " * 500).strip()


def vote(text: str, *, cache_aware: bool, voters: int = 3):
    run_id = submit_plan(plan_vote(text, LABELS, voters=voters, models=[MODEL], cache_aware=cache_aware))
    return wait_for_run(run_id, timeout=60)


def test_with_cache_aware_dispatch_voters_two_and_three_read_the_shared_prefix_from_the_cache(workers, stub):
    stub.reset()
    run = vote(LONG, cache_aware=True)
    assert run.status == "succeeded" and run.answer == "positive"
    assert run.config["dispatch"]["leaders"] == [0]
    by_slot = {o.slot: o for o in run.outcomes}
    written = by_slot[0].cache_write_tokens
    assert written > 4096 and by_slot[0].cache_read_tokens == 0
    for slot in (1, 2):
        assert by_slot[slot].cache_read_tokens == written
        assert by_slot[slot].cache_write_tokens == 0
        # the followers were sent once the leader had answered
        assert by_slot[slot].started_at >= by_slot[0].finished_at
    # The cost is computed on read from that usage: Haiku 4.5 at $1/MTok in, 1.25x write, 0.1x read, $5/MTok out.
    data = run.to_json()
    expected = sum(o.input_tokens + 1.25 * o.cache_write_tokens + 0.1 * o.cache_read_tokens + 5 * o.output_tokens
                   for o in run.outcomes) / 1e6
    assert data["cost"]["total_usd"] == pytest.approx(expected) and data["cost"]["estimated"] is False
    assert sum(o["cost"]["total_usd"] for o in data["outcomes"]) == pytest.approx(expected)


def test_without_cache_aware_dispatch_voters_sent_at_once_each_pay_a_cache_write(workers, stub):
    stub.reset()
    # Each answer is held 2 s, so three voters sent at once are all in flight before any response
    # begins (the moment the stub, like Anthropic, makes a cache entry readable).
    stub.set_latency(2000)
    try:
        run = vote(LONG, cache_aware=False)
    finally:
        stub.set_latency(0)
    assert run.status == "succeeded"
    assert run.config["dispatch"]["leaders"] == []
    calls = [r for r in stub.requests() if r["run"] == run.id and r["status"] == 200]
    assert sorted(int(r["slot"]) for r in calls) == [0, 1, 2]
    # Proven from the stub's own log: every request arrived before the first response was sent.
    first_response = min(r["time"] + r["latency_ms"] / 1000 for r in calls)
    last_arrival = max(r["time"] for r in calls)
    assert last_arrival < first_response - 0.1, [(r["slot"], r["time"], r["latency_ms"]) for r in calls]
    assert all(r["cache_read_tokens"] == 0 and r["cache_write_tokens"] > 4096 for r in calls)
    stored = {o.slot: (o.cache_write_tokens, o.cache_read_tokens) for o in run.outcomes}
    assert stored == {int(r["slot"]): (r["cache_write_tokens"], 0) for r in calls}


def test_a_short_document_is_neither_marked_nor_made_to_wait(workers, stub):
    stub.reset()
    run = vote("I love this kettle. It is excellent.", cache_aware=True)
    assert run.status == "succeeded"
    assert run.config["dispatch"]["leaders"] == []
    assert "under the cache minimum" in run.config["dispatch"]["reason"]
    assert all(o.cache_write_tokens == 0 and o.cache_read_tokens == 0 for o in run.outcomes)


def test_a_failed_leader_does_not_stop_the_vote(workers, stub):
    stub.reset()
    stub.set_rules([{"slot": "0", "status": 400}])
    try:
        run = vote(LONG, cache_aware=True)
    finally:
        stub.reset()
    assert run.status == "succeeded"  # two of three voters still answer: quorum met
    by_slot = {o.slot: o for o in run.outcomes}
    assert by_slot[0].status == "failed"
    assert by_slot[1].status == by_slot[2].status == "succeeded"
    stored = get_run(run.id).result
    assert stored is not None and stored["failed"] == 1


def test_a_single_voter_marks_no_cache_prefix(workers, stub):
    stub.reset()
    run = vote(LONG, cache_aware=True, voters=1)
    assert run.status == "succeeded"
    assert run.outcomes[0].cache_write_tokens == 0 and run.outcomes[0].input_tokens > 4096


def test_a_prefix_the_api_counts_over_the_minimum_is_cached_whatever_chorus_estimated(workers, stub):
    stub.reset()
    run = vote(SHORT_WORDS, cache_aware=True)
    assert run.status == "succeeded"
    # chorus's own estimate was under the minimum; the API's count, asked because it was close, is over it
    dispatch = run.config["dispatch"]
    assert dispatch["prefix_tokens"]["claude-haiku-4-5"] >= 4096 and dispatch["leaders"] == [0]
    # The minimum, counted with count_tokens, says one write and two reads were possible ...
    minimum = minimum_cost([run], get_settings())
    assert not minimum.estimated
    # ... and the run pays it only if chorus marked the prefix and sent a leader first.
    assert run_cost(run).total_usd == pytest.approx(minimum.total_usd, rel=1e-6)
