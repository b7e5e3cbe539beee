"""Cache-aware dispatch checks itself: each follower's read of the shared prefix is confirmed from the
usage the API reports, a miss is recorded on the outcome, and the report shows the hit rate. Through
real workers, Redis, PostgreSQL and the stub's prompt cache."""

from __future__ import annotations

import pytest

from chorus.analysis.report import cost_summary
from chorus.runs import wait_for_run
from chorus.vote import plan_vote, submit_plan
from settings import get_settings

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
MODEL = "claude-haiku-4-5"
# ~6,000 tokens of shared prefix: above Haiku 4.5's 4,096-token cache minimum.
LONG = ("I love this kettle. It is excellent, fast and quiet. The lid is a little stiff. " * 300).strip()


def vote(*, adaptive: bool = False):
    return wait_for_run(submit_plan(plan_vote(LONG, LABELS, voters=3, models=[MODEL], adaptive=adaptive)),
                        timeout=60)


def test_followers_that_read_the_prefix_are_recorded_as_hits(workers, stub):
    stub.reset()
    run = vote()
    assert run.config["dispatch"]["leaders"] == [0]
    assert [o.cache_miss for o in run.outcomes] == [None, False, False]
    assert cost_summary([run], get_settings())["cache_followers"] == {"followers": 2, "misses": 0, "hit_rate": 1.0}


def test_followers_whose_leader_wrote_nothing_are_recorded_as_misses(workers, stub):
    """The leader's call fails for good (a 400 before the stub reads or writes the cache), so nothing is
    cached when the followers go: they read nothing, and the run says so. Each answer is held 2 s, so
    both followers are in flight before either response begins (when an entry becomes readable)."""
    stub.reset()
    stub.set_rules([{"slot": "0", "status": 400}])
    stub.set_latency(2000)
    try:
        run = vote()
    finally:
        stub.set_rules([])
        stub.set_latency(0)
    by_slot = {o.slot: o for o in run.outcomes}
    assert by_slot[0].status == "failed" and by_slot[0].cache_miss is None
    assert [by_slot[s].cache_read_tokens for s in (1, 2)] == [0, 0]
    assert [by_slot[s].cache_miss for s in (1, 2)] == [True, True]
    summary = cost_summary([run], get_settings())["cache_followers"]
    assert summary == {"followers": 2, "misses": 2, "hit_rate": 0.0}


def test_an_adaptive_vote_sends_its_cache_leader_alone_first_and_the_next_wave_reads_its_prefix(workers, stub):
    stub.reset()
    run = vote(adaptive=True)
    assert run.config["adaptive"]["first_wave"] == [0]
    by_slot = {o.slot: o for o in run.outcomes}
    assert by_slot[0].cache_write_tokens > 4096
    # One answer could be outvoted by the two left, so one more is asked; two agreeing then decide it.
    assert [by_slot[s].status for s in (1, 2)] == ["succeeded", "skipped"]
    assert by_slot[1].started_at >= by_slot[0].finished_at
    assert by_slot[1].cache_miss is False and by_slot[1].cache_read_tokens == by_slot[0].cache_write_tokens


def test_a_prewarm_writes_the_prefix_with_max_tokens_0_and_every_voter_reads_it(workers, stub):
    stub.reset()
    run = wait_for_run(submit_plan(plan_vote(LONG, LABELS, voters=3, models=[MODEL], cache_warm="prewarm")),
                       timeout=60)
    assert run.status == "succeeded" and run.answer == "positive"
    assert run.config["dispatch"]["leaders"] == [] and run.config["dispatch"]["prewarm"] == [[3, MODEL]]
    warm = next(o for o in run.outcomes if o.role == "prewarm")
    voters = [o for o in run.outcomes if o.role == "voter"]
    assert warm.slot == 3 and warm.status == "succeeded" and warm.output_tokens == 0
    assert warm.cache_write_tokens > 4096 and warm.answer is None
    sent = [r["body"] for r in stub.requests() if r["run"] == run.id and r["slot"] == "3"]
    assert len(sent) == 1 and sent[0]["max_tokens"] == 0
    for o in voters:
        assert o.cache_read_tokens == warm.cache_write_tokens and o.cache_write_tokens == 0
        assert o.started_at is not None and warm.finished_at is not None and o.started_at >= warm.finished_at
        assert o.cache_miss is False
    # The tally counts the three voters only; the pre-warm's usage is in the cost.
    assert run.result is not None and run.result["voters"] == 3 and run.result["answered"] == 3
    cost = run.to_json()["cost"]["total_usd"]
    assert cost == pytest.approx(sum(o["cost"]["total_usd"] for o in run.to_json()["outcomes"]))
    assert cost > sum(o["cost"]["total_usd"] for o in run.to_json()["outcomes"] if o["role"] == "voter")
