"""Cache-aware dispatch with a panel of two models: one leader per model, both sent first as a group,
and the rest of the panel only after both have answered, each follower reading its own model's cache."""

from __future__ import annotations

import pytest

from chorus.costing import minimum_cost, run_cost
from chorus.runs import wait_for_run
from chorus.vote import plan_vote, submit_plan
from settings import get_settings
from tests.integration.test_cache_dispatch import LABELS, LONG

pytestmark = pytest.mark.integration

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"  # the prefix (~6,000 tokens) is over both minimums


def test_two_models_each_send_a_leader_first_and_their_followers_only_after_both(workers, stub):
    stub.reset()
    # Answers take 0.6 s: a follower sent before a leader had answered would show in the timestamps.
    stub.set_latency(600)
    try:
        run = wait_for_run(submit_plan(plan_vote(LONG, LABELS, voters=5, models=[HAIKU, SONNET], cache_aware=True)),
                           timeout=60)
    finally:
        stub.set_latency(0)
    assert run.status == "succeeded" and run.answer == "positive"
    by_slot = {o.slot: o for o in run.outcomes}
    model_of = {slot: o.model for slot, o in by_slot.items()}
    assert model_of == {0: HAIKU, 1: SONNET, 2: HAIKU, 3: SONNET, 4: HAIKU}
    assert run.config["dispatch"]["leaders"] == [0, 1]  # the first voter of each model
    assert run.config["dispatch"]["followers"] == [2, 3, 4]

    # Stored timestamps: every follower started after BOTH leaders had finished, not only its own.
    finished = [by_slot[s].finished_at for s in (0, 1)]
    started = [by_slot[s].started_at for s in (2, 3, 4)]
    assert all(t is not None for t in finished + started)
    leaders_done = max(t for t in finished if t is not None)
    assert all(t is not None and t >= leaders_done for t in started)
    # The API's side: no follower's request arrived before both leaders' responses had been sent.
    log = {int(r["slot"]): r for r in stub.requests() if r["run"] == run.id and r["status"] == 200}
    assert sorted(log) == [0, 1, 2, 3, 4]
    answered = max(log[s]["time"] + log[s]["latency_ms"] / 1000 for s in (0, 1))
    assert min(log[s]["time"] for s in (2, 3, 4)) >= answered
    # The two leaders were sent together (a group), not one after the other.
    assert abs(log[0]["time"] - log[1]["time"]) < log[0]["latency_ms"] / 1000

    # Each leader wrote its model's prefix; each follower read its own model's entry, never the other's.
    for leader, followers in ((0, (2, 4)), (1, (3,))):
        written = by_slot[leader].cache_write_tokens
        assert written > 4096 and by_slot[leader].cache_read_tokens == 0
        for slot in followers:
            assert (by_slot[slot].cache_read_tokens, by_slot[slot].cache_write_tokens) == (written, 0)
    # One write per model and reads for the rest is the cheapest legal schedule, counted independently.
    assert run_cost(run).total_usd == pytest.approx(minimum_cost([run], get_settings()).total_usd, rel=1e-6)
