"""The advisor's decision table and its Wilson interval."""

from __future__ import annotations

import pytest

from workflows.advisor import AdviceInputs, ErrorOverlap, Measured, Verdict, advise, percent, wilson_interval


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
                   "12 of 100 documents, where independent errors would give 4.0: 3.0x as often)", "not "),
        (APART, "wrong together more often than independent errors would be (`direct` (haiku) & `lead` (haiku) "
                "were wrong together on 5 of 100 documents, where independent errors would give 4.0), though not 2x "
                "as often: not enough to call their errors correlated", "errors are correlated ("),
        (ErrorOverlap("x & y", 1, 100, 0.1), "more often than independent errors would be (x & y were wrong together "
         "on 1 of 100 documents, where independent errors would give 0.1), but on fewer than 2 documents: too few "
         "to call their errors correlated", "errors are correlated ("),
        (ErrorOverlap("x & y", 0, 100, 0.0), "wrong together as often as independent errors would be",
         "errors are correlated ("),
        (ErrorOverlap("x & y", 1, 100, 3.0), "wrong together less often than independent errors would be",
         "errors are correlated ("),
        (None, "was not measured", "correlated"),
    ],
)
def test_a_vote_no_better_than_one_call_blames_correlated_errors_only_when_the_double_fault_says_so(
        overlap, says, never):
    advice = advise(AdviceInputs(0.9, single(80), vote(80), True, 0.05, effective_voters=1.4, error_overlap=overlap))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert says in advice.reason
    assert never not in advice.reason


def test_ten_double_faults_where_chance_gives_five_point_six_are_never_called_uncorrelated():
    # The issue's run: "the voters' errors are not correlated (... wrong together on 10 of 18 documents;
    # independent errors would give 5.6)": 10 is more than 5.6, so the text must say more, not "not".
    advice = advise(AdviceInputs(0.9, single(4, 15), vote(4, 15), True, 0.0,
                                 error_overlap=ErrorOverlap("`a` (m) & `b` (m)", 10, 18, 5.6)))
    assert "not correlated" not in advice.reason
    assert "wrong together more often than independent errors would be" in advice.reason
    assert "10 of 18 documents, where independent errors would give 5.6" in advice.reason


@pytest.mark.parametrize(
    ("voters", "says", "never"),
    [
        # The run: both the voters and the single call score 26.7 %; "each weaker" was false.
        ((("`a` (m)", 4 / 15), ("`b` (m)", 4 / 15)), "the voters score 26.7%, the same as the single call",
         "weaker"),
        ((("`a` (m)", 2 / 15), ("`b` (m)", 3 / 15)), "the voters score 13.3%-20%, below the single call's 26.7%",
         "the same as"),
        ((("`a` (m)", 2 / 15), ("`b` (m)", 6 / 15)), "the voters score 13.3%-40% against the single call's 26.7%",
         "below"),
        ((("`a` (m)", 6 / 15),), "the voter scores 40%, above the single call's 26.7%, yet their vote is no better",
         "below"),
        ((), "improve the voters' prompts", "score"),  # not measured: claims nothing about them
    ],
)
def test_what_the_reason_says_of_the_voters_against_the_single_call_is_what_their_scores_show(voters, says, never):
    advice = advise(AdviceInputs(0.9, single(4, 15), vote(4, 15), True, 0.0, voter_accuracy=voters,
                                 error_overlap=ErrorOverlap("x & y", 3, 15, 4.0)))
    assert says in advice.reason
    assert never not in advice.reason.split("no better:", 1)[1]


@pytest.mark.parametrize(("k", "n"), [(k, n) for n in (3, 5, 9, 15, 18, 30) for k in range(n + 1)])
def test_the_reason_prints_the_accuracy_and_its_interval_exactly_as_percent_does(k, n):
    # The table prints `percent` of the same figures (chorus.analysis.advise.shown); rounding a figure
    # to 4 digits first printed 44.5 % in the table beside 44.4 % in the text.
    m = single(k, n)
    lo, hi = m.interval
    advice = advise(AdviceInputs(0.95, m, vote(k, n), True, 0.0))
    assert f"scores {percent(m.accuracy)} (95 % CI {percent(lo)}-{percent(hi)})" in advice.reason


@pytest.mark.parametrize(("x", "shown"), [(0.4444, "44.4%"), (0.44449, "44.4%"), (0.9, "90%"), (0.29, "29%"),
                                          (0.0, "0%"), (1.0, "100%"), (4 / 15, "26.7%"), (None, "-"),
                                          (float("nan"), "-")])
def test_percent_prints_one_decimal_and_drops_a_zero_one(x, shown):
    assert percent(x) == shown


def test_nothing_answered_is_a_verdict_that_says_so_and_not_a_comparison():
    none = Measured("1 x m", 0, 12, 0.1, 0.5, answered=0)
    advice = advise(AdviceInputs(0.9, none, Measured("3 x m vote", 0, 12, 0.3, 0.5, answered=0), True, 0.0))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert "no call named an allowed label" in advice.reason
    assert "answered none of the 12 documents" in advice.reason
    assert "labels and their descriptions" in advice.reason


def test_nothing_answered_because_every_call_failed_points_at_the_failures():
    failed = Measured("1 x m", 0, 5, 0.0, 0.5, answered=0, failed=5)
    advice = advise(AdviceInputs(0.9, failed, Measured("3 x m vote", 0, 5, 0.0, 0.5, answered=0, failed=5),
                                 True, 0.0))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert "every call failed on 5" in advice.reason and "`chorus report` shows why" in advice.reason


def test_a_vote_that_answers_too_few_documents_is_told_to_fix_the_prompt():
    advice = advise(AdviceInputs(0.9, single(60), Measured("3 x m vote", 60, 100, 0.8, 1.3, answered=60), True,
                                 0.0))
    assert advice.verdict is Verdict.FIX_PROMPT
    assert "gave no answer on 40 of 100 documents" in advice.reason


@pytest.mark.parametrize(("double_faults", "expected", "correlated"),
                         [(2, 1.0, True), (2, 1.01, False), (1, 0.1, False), (8, 4.0, True), (7, 4.0, False)])
def test_errors_are_correlated_from_two_double_faults_at_twice_the_independent_rate(double_faults, expected,
                                                                                      correlated):
    assert ErrorOverlap("x & y", double_faults, 50, expected).correlated is correlated


def test_voters_scored_on_what_they_answered_are_not_called_above_a_single_call_scored_on_every_document():
    # Seen on the README's task offline: the voters' 88.5 % (23 of the 26 they answered) was called "above
    # the single call's 76.7 %" (23 of all 30): one figure counts abstentions as wrong, the other leaves them out.
    one = Measured("1 x m", 23, 30, 0.1, 0.5, answered=26)
    panel = Measured("3 x m vote", 23, 30, 0.3, 0.5, answered=26)
    advice = advise(AdviceInputs(0.9, one, panel, True, 0.0, voter_accuracy=(("a", 23 / 26), ("b", 23 / 26)),
                                 error_overlap=ErrorOverlap("a & b", 3, 26, 0.35)))
    assert "above the single call" not in advice.reason
    assert "88.5% on the documents each answered, the single call 76.7% on all 30" in advice.reason
