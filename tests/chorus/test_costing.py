"""Run costs computed on read from stored usage, and the minimum under the cache rules, counted
independently of what the run cached."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chorus.costing import breakdown, run_cost, run_cost_without_cache, run_minimum_cost, shared_prefixes
from workflows.voting import build_panel, vote_request

M = 1_000_000
HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"


def outcome(slot, inp, out, write=0, read=0, model=HAIKU, status="succeeded", estimated=False):
    return SimpleNamespace(slot=slot, model=model, input_tokens=inp, output_tokens=out, cache_write_tokens=write,
                           cache_read_tokens=read, usage_estimated=estimated, status=status)


def run(*outcomes, pattern="vote"):
    return SimpleNamespace(outcomes=list(outcomes), pattern=pattern)


# The same three Haiku 4.5 calls (a 5,000-token shared prefix, a 20-token tail, 10 output tokens each)
# scheduled three ways. $1/MTok input, 1.25x write, 0.1x read, $5/MTok output.
CACHE_AWARE = run(outcome(0, 20, 10, write=5000), outcome(1, 20, 10, read=5000), outcome(2, 20, 10, read=5000))
ALL_AT_ONCE = run(outcome(0, 20, 10, write=5000), outcome(1, 20, 10, write=5000), outcome(2, 20, 10, write=5000))
NOTHING_CACHED = run(outcome(0, 5020, 10), outcome(1, 5020, 10), outcome(2, 5020, 10))
MINIMUM = (60 + 150 + 6250 + 1000) / M  # one write, two reads, the tails and the output
PREFIX = {HAIKU: (5000, False)}  # as count_tokens measured it


@pytest.mark.parametrize(
    ("subject", "cost", "ratio"),
    [
        (CACHE_AWARE, MINIMUM, 1.0),
        (ALL_AT_ONCE, (60 + 150 + 3 * 6250) / M, (60 + 150 + 3 * 6250) / (60 + 150 + 6250 + 1000)),
        (NOTHING_CACHED, (3 * 5020 + 150) / M, (3 * 5020 + 150) / (60 + 150 + 6250 + 1000)),
    ],
)
def test_the_minimum_does_not_depend_on_what_the_run_cached(subject, cost, ratio):
    assert run_cost(subject).total_usd == pytest.approx(cost)
    minimum = run_minimum_cost(subject, PREFIX)
    assert minimum.total_usd == pytest.approx(MINIMUM)
    assert run_cost(subject).total_usd / minimum.total_usd == pytest.approx(ratio)


def test_three_voters_that_cached_nothing_cost_about_twice_the_minimum():
    ratio = run_cost(NOTHING_CACHED).total_usd / run_minimum_cost(NOTHING_CACHED, PREFIX).total_usd
    assert ratio == pytest.approx(2.04, abs=0.01)


@pytest.mark.parametrize(
    ("subject", "prefixes", "minimum"),
    [
        # under Haiku 4.5's 4,096 nothing can be cached: the minimum is every prompt as plain input
        (run(outcome(0, 3020, 10), outcome(1, 3020, 10)), {HAIKU: (3000, False)}, (2 * 3020 + 100) / M),
        # one call has nobody to share a prefix with
        (run(outcome(0, 5020, 10)), {}, (5020 + 50) / M),
        # a failed voter is billed nothing and left out
        (run(outcome(0, 5020, 10), outcome(1, 0, 0, status="failed")), PREFIX, (5020 + 50) / M),
        # per model: Sonnet 4.6 ($3/$15) caches its own 3,000-token prefix (over its 2,048), Haiku cannot
        (run(outcome(0, 3020, 10, model=SONNET), outcome(1, 3020, 10, model=SONNET), outcome(2, 3020, 10)),
         {SONNET: (3000, False), HAIKU: (3000, False)},
         (3 * (40 + 3000 * 1.25 + 300) + 15 * 20 + 3020 + 50) / M),
        # sections share nothing: the minimum is what they billed, uncached
        (run(outcome(0, 900, 80, write=0), outcome(1, 1200, 90), pattern="section"), {}, (2100 + 5 * 170) / M),
    ],
)
def test_the_minimum_is_the_cheapest_legal_schedule(subject, prefixes, minimum):
    assert run_minimum_cost(subject, prefixes).total_usd == pytest.approx(minimum)


def test_a_prefix_counted_offline_marks_the_minimum_as_an_estimate():
    assert run_minimum_cost(CACHE_AWARE, {HAIKU: (5000, True)}).estimated is True
    assert run_minimum_cost(CACHE_AWARE, PREFIX).estimated is False


def test_the_shared_prefix_is_counted_from_the_request_itself():
    labels = ["positive", "negative"]
    panel = build_panel(3, [HAIKU])
    config = {"labels": labels, "voters": [{"slot": v.slot, "model": v.model, "variant": v.variant,
                                            "temperature": v.temperature} for v in panel]}
    seen = []

    def count(request):
        seen.append(request)
        return 4242, False

    subject = run(outcome(0, 1, 1), outcome(1, 1, 1), outcome(2, 1, 1), outcome(3, 1, 1, model=SONNET))
    assert shared_prefixes(subject, config, "The document.", count) == {HAIKU: (4242, False)}
    (request,) = seen  # once per model with two calls or more; the lone Sonnet call shares nothing
    full = vote_request(panel[0], labels, "The document.", structured=True)  # what a Haiku voter sends
    assert request.system == full.system and '<label name="negative">' in request.system
    assert request.user_blocks == full.user_blocks[:1] and "The document." in request.user_blocks[0]
    assert shared_prefixes(run(outcome(0, 1, 1), outcome(1, 1, 1), pattern="section"), {}, "x", count) == {}


def test_without_cache_every_prompt_token_is_plain_input():
    assert run_cost_without_cache(CACHE_AWARE).total_usd == pytest.approx((3 * 5020 + 150) / M)


def test_a_breakdown_splits_by_model_and_keeps_the_estimate_mark():
    mixed = run(outcome(0, 100, 10, estimated=True), outcome(1, 100, 10, model=SONNET))
    data = breakdown([mixed])
    assert set(data["models"]) == {HAIKU, SONNET}
    assert data["models"][HAIKU]["cost"]["estimated"] is True
    assert data["models"][SONNET]["tokens"]["input_tokens"] == 100
    assert data["total"]["estimated"] is True


def test_the_minimums_cache_floor_is_what_the_responses_showed_when_they_cached_below_the_registrys():
    def voter(write: int, read: int) -> SimpleNamespace:
        return SimpleNamespace(status="succeeded", role="voter", model="claude-haiku-5-5", input_tokens=50,
                               output_tokens=10, cache_write_tokens=write, cache_read_tokens=read,
                               usage_estimated=False, provider_batch=None)

    prefix = 2_000  # below the registry's 4,096 for claude-haiku-5-5, above what the provider showed it caches
    shown = SimpleNamespace(outcomes=[voter(prefix, 0), voter(0, prefix), voter(0, prefix)])
    never = SimpleNamespace(outcomes=[voter(0, 0) for _ in range(3)])
    for o in never.outcomes:
        o.input_tokens += prefix
    with_cache = run_minimum_cost(shown, {"claude-haiku-5-5": (prefix, False)})
    without = run_minimum_cost(never, {"claude-haiku-5-5": (prefix, False)})
    assert with_cache.cache_write_usd > 0 and with_cache.total_usd < without.total_usd
    assert without.cache_write_usd == 0  # nothing shown cached: the registry's floor holds
