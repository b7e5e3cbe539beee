"""Cost maths: base prices, cache write/read multipliers, the Batches API discount."""

from __future__ import annotations

import pytest

from workflows.cost import Cost, TokenUsage, cost_of, cost_without_cache, minimum_vote_cost, price_for, total

M = 1_000_000


@pytest.mark.parametrize(
    ("model", "usage", "kwargs", "expected_usd"),
    [
        ("claude-haiku-4-5", TokenUsage(input_tokens=M), {}, 1.0),
        ("claude-haiku-4-5", TokenUsage(output_tokens=M), {}, 5.0),
        ("claude-sonnet-4-6", TokenUsage(input_tokens=M, output_tokens=M), {}, 18.0),
        ("claude-sonnet-4-5-20250929", TokenUsage(input_tokens=M), {}, 3.0),  # a dated snapshot
        ("claude-opus-4-6", TokenUsage(input_tokens=M, output_tokens=M), {}, 30.0),
        ("claude-opus-4-5", TokenUsage(output_tokens=2 * M), {}, 50.0),
        ("claude-haiku-4-5", TokenUsage(cache_write_tokens=M), {}, 1.25),
        ("claude-haiku-4-5", TokenUsage(cache_write_tokens=M), {"cache_ttl": "1h"}, 2.0),
        ("claude-sonnet-4-6", TokenUsage(cache_write_tokens=M), {}, 3.75),
        ("claude-haiku-4-5", TokenUsage(cache_read_tokens=M), {}, 0.1),
        ("claude-opus-4-6", TokenUsage(cache_read_tokens=M), {}, 0.5),
        ("claude-haiku-4-5", TokenUsage(input_tokens=M, output_tokens=M), {"batch_api": True}, 3.0),
        ("claude-sonnet-4-6", TokenUsage(cache_read_tokens=M), {"batch_api": True}, 0.15),
        ("claude-haiku-4-5", TokenUsage(1000, 20, 5000, 10_000), {}, (1000 + 100 + 6250 + 1000) / M),
    ],
)
def test_cost_of_usage_follows_the_price_table(model, usage, kwargs, expected_usd):
    assert cost_of(model, usage, **kwargs).total_usd == pytest.approx(expected_usd)


def test_an_unknown_model_names_the_table_to_update():
    with pytest.raises(ValueError, match="workflows/models.toml"):
        price_for("gpt-4")


def test_estimated_usage_makes_an_estimated_cost_and_survives_sums():
    measured = cost_of("claude-haiku-4-5", TokenUsage(10, 1))
    guessed = cost_of("claude-haiku-4-5", TokenUsage(10, 1, estimated=True))
    assert not measured.estimated and guessed.estimated
    assert total([measured, guessed]).estimated
    assert total([measured, measured]).total_usd == pytest.approx(2 * measured.total_usd)
    assert total([]) == Cost()


def test_cost_without_cache_bills_every_prompt_token_as_input():
    usage = TokenUsage(100, 10, 5000, 0)
    assert cost_without_cache("claude-haiku-4-5", usage).total_usd == pytest.approx((5100 + 50) / M)


@pytest.mark.parametrize(
    ("prefix", "tails", "outputs", "expected_usd"),
    [
        # one write (1.25x) and two reads (0.1x) of 5,000 tokens, plus three tails and outputs
        (5000, [20, 20, 20], [10, 10, 10], (5000 * 1.25 + 2 * 500 + 60 + 150) / M),
        # under the minimum: every voter pays the prefix as input
        (3000, [20, 20, 20], [10, 10, 10], (3 * 3000 + 60 + 150) / M),
        # a single call gains nothing from a write
        (5000, [20], [10], (5020 + 50) / M),
    ],
)
def test_the_minimum_vote_cost_writes_the_prefix_once_and_reads_it_for_every_other_voter(
    prefix, tails, outputs, expected_usd
):
    cost = minimum_vote_cost("claude-haiku-4-5", prefix, tails, outputs, min_cacheable=4096)
    assert cost.total_usd == pytest.approx(expected_usd)


@pytest.mark.parametrize(("voters", "lane", "cached_is_cheaper"), [
    (2, False, True),   # 5-minute write 1.25x + one read 0.1x < 2x plain input
    (2, True, False),   # the lane's 1-hour write at 2x + a read > 2x plain input: caching is not the minimum
    (3, True, True),    # 2x + 2 x 0.1x < 3x
])
def test_the_minimum_is_the_cheaper_of_the_cached_and_the_uncached_schedules(voters, lane, cached_is_cheaper):
    prefix, tails, outputs = 20_000, [50] * voters, [10] * voters
    minimum = minimum_vote_cost("claude-haiku-4-5", prefix, tails, outputs, min_cacheable=4096, lane=lane)
    uncached = minimum_vote_cost("claude-haiku-4-5", prefix, tails, outputs, min_cacheable=10**9, lane=lane)
    assert minimum.total_usd <= uncached.total_usd
    assert (minimum.total_usd < uncached.total_usd) is cached_is_cheaper
    assert (minimum.cache_write_usd > 0) is cached_is_cheaper
