"""Cache-aware dispatch: who goes first, and when nobody should wait."""

from __future__ import annotations

import pytest

from workflows.dispatch import cacheable_prefix_tokens, plan_dispatch, shares_prefix
from workflows.tokens import estimate_tokens
from workflows.voting import Voter, build_panel, vote_request

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"


@pytest.mark.parametrize(
    ("panel", "prefix", "cache_aware", "leaders", "followers"),
    [
        (build_panel(3, [HAIKU]), 5000, True, (0,), (1, 2)),
        (build_panel(3, [HAIKU]), 5000, False, (), (0, 1, 2)),
        (build_panel(3, [HAIKU]), 4095, True, (), (0, 1, 2)),  # under Haiku 4.5's 4,096: no wait
        (build_panel(4, [HAIKU, SONNET]), 3000, True, (1,), (0, 2, 3)),  # only Sonnet's 2,048 is met
        (build_panel(4, [HAIKU, SONNET]), 5000, True, (0, 1), (2, 3)),
        (build_panel(2, [HAIKU, SONNET]), 9000, True, (), (0, 1)),  # nobody shares a model
        ([Voter(0, HAIKU, "direct")], 9000, True, (), (0,)),
    ],
)
def test_one_voter_per_model_goes_first_when_the_prefix_can_be_cached(panel, prefix, cache_aware, leaders, followers):
    plan = plan_dispatch(panel, prefix, cache_aware=cache_aware)
    assert (plan.leaders, plan.followers) == (leaders, followers)
    assert plan.reason


def test_the_reason_says_why_nobody_waits_under_the_minimum():
    assert "under the cache minimum" in plan_dispatch(build_panel(3, [HAIKU]), 100).reason


def test_the_prefix_is_the_system_prompt_and_the_document_block():
    request = vote_request(Voter(0, HAIKU, "direct"), ["a", "b"], "word " * 4000)
    # the document block (~5,000 tokens) and the system prompt, not the voter's own last block
    assert cacheable_prefix_tokens(request) == pytest.approx(5000 + estimate_tokens(request.system), abs=10)
    assert estimate_tokens(request.user_blocks[1]) > 5
    assert cacheable_prefix_tokens(vote_request(Voter(0, HAIKU, "lead"), ["a", "b"], "word " * 4000)) == (
        cacheable_prefix_tokens(request))


@pytest.mark.parametrize(("models", "model", "expected"),
                         [([HAIKU, HAIKU], HAIKU, True), ([HAIKU, SONNET], HAIKU, False), ([SONNET], SONNET, False)])
def test_a_prefix_is_shared_only_when_another_voter_uses_the_same_model(models, model, expected):
    assert shares_prefix(models, model) is expected


@pytest.mark.parametrize(("estimate", "unsure"), [(1000, False), (1400, True), (4095, True), (8191, True),
                                                  (8192, False)])
def test_only_an_estimate_near_the_cache_minimum_is_counted_by_the_api(estimate, unsure):
    from workflows.dispatch import needs_count

    assert needs_count(estimate, HAIKU) is unsure  # Haiku 4.5's minimum: 4,096


def test_a_count_from_the_api_decides_over_the_estimate_and_is_kept_for_the_workers():
    panel = build_panel(4, [HAIKU, SONNET])
    plan = plan_dispatch(panel, {HAIKU: 3600, SONNET: 3600}, counted={HAIKU: 5100})
    assert plan.leaders == (0, 1)  # Haiku by its count (5,100 >= 4,096), Sonnet by its estimate (>= 2,048)
    assert plan.to_json()["prefix_tokens"] == {HAIKU: 5100}
    assert plan_dispatch(panel, {HAIKU: 3600, SONNET: 3600}).leaders == (1,)
