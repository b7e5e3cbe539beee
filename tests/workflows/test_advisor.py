"""The advisor's decision table and its Wilson interval."""

from __future__ import annotations

import pytest

from workflows.advisor import AdviceInputs, ErrorOverlap, Measured, Verdict, advise, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "lo", "hi"),
    [
        # Wilson (1927) / Newcombe (1998) style values, z = 1.96
        (81, 263, 0.2553, 0.3662),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (45, 50, 0.7864, 0.9565),
    ],
)
def test_the_wilson_interval_matches_published_values(successes, n, lo, hi):
    got_lo, got_hi = wilson_interval(successes, n)
    assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=5e-4)


def test_the_wilson_interval_of_nothing_is_everything_and_bad_counts_are_refused():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def single(correct: int, total: int = 100) -> Measured:
    return Measured("1 x sonnet", correct, total, cost_usd=1.0, wall_s=1.0)


def vote(correct: int, total: int = 100) -> Measured:
    return Measured("3 x haiku", correct, total, cost_usd=0.8, wall_s=1.3)


@pytest.mark.parametrize(
    ("s", "v", "discrete", "low", "verdict", "phrase"),
    [
        (single(95), vote(97), True, 0.05, Verdict.SINGLE, "meets the target"),
        (single(90), vote(97), True, 0.05, Verdict.SINGLE, "meets the target"),  # exactly on target
        (single(80), vote(93), True, 0.05, Verdict.VOTE, "meeting it"),
        (single(80), vote(85), True, 0.05, Verdict.FIX_PROMPT, "both miss the target"),
        (single(80), vote(93), True, 0.40, Verdict.FIX_PROMPT, "disagree on 40%"),
        (single(80), vote(80), True, 0.05, Verdict.FIX_PROMPT, "no better"),
        (single(80), vote(75), True, 0.05, Verdict.FIX_PROMPT, "no better"),
        (single(80), vote(93), False, 0.05, Verdict.FIX_PROMPT, "discrete"),
    ],
)
def test_the_verdict_follows_the_measurements(s, v, discrete, low, verdict, phrase):
    advice = advise(AdviceInputs(target=0.9, single=s, vote=v, discrete=discrete, low_agreement_share=low))
    assert advice.verdict is verdict
    assert phrase in advice.reason
    assert advice.recommendation.startswith(verdict.value)


def test_a_single_call_on_target_with_a_wide_interval_asks_for_more_labels():
    advice = advise(AdviceInputs(0.9, single(19, 20), vote(20, 20), True, 0.0))
    assert advice.verdict is Verdict.SINGLE
    assert any("label more documents" in n for n in advice.notes)


@pytest.mark.parametrize(("tokens", "splittable", "suggest"),
                         [(9000, 0.8, True), (9000, 0.2, False), (500, 1.0, False)])
def test_sectioning_is_suggested_for_long_splittable_documents(tokens, splittable, suggest):
    advice = advise(AdviceInputs(0.9, single(95), vote(95), True, 0.0, tokens, splittable))
    assert advice.suggest_sectioning is suggest


def test_a_target_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="target"):
        advise(AdviceInputs(90, single(95), vote(95), True, 0.0))


def test_a_reason_names_how_many_independent_voters_the_panel_is_worth():
    advice = advise(AdviceInputs(0.9, single(48), vote(50), True, 0.03, effective_voters=1.13,
                                 error_overlap=ErrorOverlap("`a` (m) & `b` (m)", 30, 100, 25.0)))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert "worth 1.1 independent ones" in advice.reason


TOGETHER = ErrorOverlap("`direct` (haiku) & `lead` (haiku)", 12, 100, 4.0)  # 3x what independence gives
APART = ErrorOverlap("`direct` (haiku) & `lead` (haiku)", 5, 100, 4.0)  # about what independence gives


@pytest.mark.parametrize(
    ("overlap", "says", "never"),
    [
        (TOGETHER, "the voters' errors are correlated (`direct` (haiku) & `lead` (haiku) were wrong together on "
                   "12 of 100 documents, where independent errors would give 4.0)", "not correlated"),
        (APART, "the voters' errors are not correlated", "errors are correlated"),
        (ErrorOverlap("x & y", 1, 100, 0.1), "not correlated", "errors are correlated"),  # one shared error only
        (ErrorOverlap("x & y", 0, 100, 0.0), "not correlated", "errors are correlated"),
        (None, "was not measured", "correlated"),
    ],
)
def test_a_vote_no_better_than_one_call_blames_correlated_errors_only_when_the_double_fault_says_so(
        overlap, says, never):
    advice = advise(AdviceInputs(0.9, single(80), vote(80), True, 0.05, effective_voters=1.4, error_overlap=overlap))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert says in advice.reason
    assert never not in advice.reason
    if overlap is not None and not overlap.correlated:
        assert "weaker than the single call" in advice.reason


@pytest.mark.parametrize(("double_faults", "expected", "correlated"),
                         [(2, 1.0, True), (2, 1.01, False), (1, 0.1, False), (8, 4.0, True), (7, 4.0, False)])
def test_errors_are_correlated_from_two_double_faults_at_twice_the_independent_rate(double_faults, expected,
                                                                                      correlated):
    assert ErrorOverlap("x & y", double_faults, 50, expected).correlated is correlated
