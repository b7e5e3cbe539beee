"""Run costs computed on read from stored usage, and the minimum under the cache rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chorus.costing import breakdown, run_cost, run_cost_without_cache, run_minimum_cost

M = 1_000_000


def outcome(slot, inp, out, write=0, read=0, model="claude-haiku-4-5", status="succeeded", estimated=False):
    return SimpleNamespace(slot=slot, model=model, input_tokens=inp, output_tokens=out, cache_write_tokens=write,
                           cache_read_tokens=read, usage_estimated=estimated, status=status)


def run(*outcomes):
    return SimpleNamespace(outcomes=list(outcomes))


CACHE_AWARE = run(outcome(0, 20, 10, write=5000), outcome(1, 20, 10, read=5000), outcome(2, 20, 10, read=5000))
ALL_AT_ONCE = run(outcome(0, 20, 10, write=5000), outcome(1, 20, 10, write=5000), outcome(2, 20, 10, write=5000))


@pytest.mark.parametrize(
    ("subject", "cost", "minimum"),
    [
        (CACHE_AWARE, (60 + 150 + 6250 + 1000) / M, (60 + 150 + 6250 + 1000) / M),
        (ALL_AT_ONCE, (60 + 150 + 3 * 6250) / M, (60 + 150 + 6250 + 1000) / M),
        # a failed voter costs nothing here and is left out of the minimum
        (run(outcome(0, 5020, 10), outcome(1, 0, 0, status="failed")), (5020 + 50) / M, (5020 + 50) / M),
    ],
)
def test_a_runs_cost_and_its_minimum_come_from_the_stored_usage(subject, cost, minimum):
    assert run_cost(subject).total_usd == pytest.approx(cost)
    assert run_minimum_cost(subject).total_usd == pytest.approx(minimum)


def test_without_cache_every_prompt_token_is_plain_input():
    assert run_cost_without_cache(CACHE_AWARE).total_usd == pytest.approx((3 * 5020 + 150) / M)


def test_a_breakdown_splits_by_model_and_keeps_the_estimate_mark():
    mixed = run(outcome(0, 100, 10, estimated=True), outcome(1, 100, 10, model="claude-sonnet-4-6"))
    data = breakdown([mixed])
    assert set(data["models"]) == {"claude-haiku-4-5", "claude-sonnet-4-6"}
    assert data["models"]["claude-haiku-4-5"]["cost"]["estimated"] is True
    assert data["models"]["claude-sonnet-4-6"]["tokens"]["input_tokens"] == 100
    assert data["total"]["estimated"] is True
