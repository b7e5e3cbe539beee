"""Agreement statistics, checked against a published worked example and small hand-made tables."""

from __future__ import annotations

import math

import pytest

from workflows.agreement import Item, analyse, effective_voters, fleiss_kappa, pairwise_agreement

# Wikipedia, "Fleiss' kappa", worked example: 14 raters put 10 subjects into 5 categories;
# the article gives P-bar = 0.378, P_e = 0.213 and kappa = 0.210.
WIKIPEDIA_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_the_published_worked_example():
    assert fleiss_kappa(WIKIPEDIA_TABLE) == pytest.approx(0.210, abs=0.0005)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ([[3, 0], [0, 3], [3, 0], [0, 3]], 1.0),  # perfect agreement
        ([[2, 1], [1, 2], [2, 1], [1, 2]], -1 / 3),  # less agreement than chance
        ([[3, 0], [3, 0]], math.nan),  # one category only: chance agreement is already perfect
        ([[1, 0], [0, 1]], math.nan),  # no subject has two ratings
    ],
)
def test_fleiss_kappa_edge_tables(table, expected):
    got = fleiss_kappa(table)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [(("a", "a", "a"), 1.0), (("a", "a", "b"), 1 / 3), (("a", "b", "c"), 0.0), (("a", None, "a"), 1.0),
     (("a", None, None), None)],
)
def test_pairwise_agreement_is_the_share_of_agreeing_pairs(answers, expected):
    assert pairwise_agreement(Item("x", answers)) == expected


@pytest.mark.parametrize(
    ("n", "rho", "expected"),
    [(3, 0.0, 3.0), (3, 1.0, 1.0), (3, 0.5, 1.5), (5, 0.25, 2.5), (3, -0.4, 3.0), (1, 0.7, 1.0)],
)
def test_effective_voters_shrink_as_errors_correlate(n, rho, expected):
    assert effective_voters(n, rho) == pytest.approx(expected)


def test_agreement_without_gold_reports_rates_shares_kappa_and_low_agreement_items():
    items = [Item("1", ("a", "a", "a")), Item("2", ("a", "a", "b")), Item("3", ("a", "b", "c")),
             Item("4", ("b", "b", "b"))]
    report = analyse(items, ["a", "b", "c"])
    assert report.unanimous_rate == 0.5
    assert report.mean_pairwise_agreement == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert report.winning_share == {"1/3": 1, "2/3": 1, "3/3": 2}
    assert report.low_agreement == ["3"]
    assert report.vote_accuracy is None and report.pairs == []
    # Fleiss' kappa by hand (3 raters, 4 items; counts of a/b/c per item: 3/0/0, 2/1/0, 1/1/1, 0/3/0).
    # Per-item agreement P_i = (sum n_ij^2 - 3) / (3 * 2): 1, 1/3, 0, 1, so P-bar = 7/12.
    # Category shares p_j = 6/12, 5/12, 1/12, so P_e = (36 + 25 + 1) / 144 = 31/72.
    # kappa = (7/12 - 31/72) / (1 - 31/72) = (11/72) / (41/72) = 11/41.
    assert report.fleiss_kappa == pytest.approx(11 / 41)


def test_voters_that_are_wrong_together_show_double_faults_agreement_when_wrong_and_fewer_effective_voters():
    # Voters 0 and 1 make the same mistakes; voter 2 errs elsewhere.
    items = [
        Item("1", ("b", "b", "a"), gold="a"),
        Item("2", ("b", "b", "a"), gold="a"),
        Item("3", ("a", "a", "b"), gold="a"),
        Item("4", ("a", "a", "a"), gold="a"),
        Item("5", ("a", "a", "a"), gold="a"),
        Item("6", ("a", "a", "a"), gold="a"),
    ]
    report = analyse(items, ["a", "b"])
    assert report.voter_accuracy == pytest.approx({0: 4 / 6, 1: 4 / 6, 2: 5 / 6})
    assert report.vote_accuracy == pytest.approx(4 / 6)  # the correlated pair outvotes the right voter twice
    pair01 = next(p for p in report.pairs if (p.a, p.b) == (0, 1))
    pair02 = next(p for p in report.pairs if (p.a, p.b) == (0, 2))
    assert (pair01.double_fault, pair01.agree_when_wrong) == pytest.approx((2 / 6, 2 / 6))
    assert pair01.error_correlation == pytest.approx(1.0)
    assert (pair02.double_fault, pair02.agree_when_wrong) == (0.0, 0.0)
    # Independent errors (2 of 6 and 2 of 6) would put them wrong together 2 * 2 / 6 times, not 2.
    assert (pair01.double_faults, pair01.expected_double_faults) == (2, pytest.approx(2 / 3))
    assert (pair02.double_faults, pair02.expected_double_faults) == (0, pytest.approx(2 * 1 / 6))
    rho, n_eff = report.mean_error_correlation, report.effective_voters
    assert rho is not None and n_eff is not None
    assert rho == pytest.approx((1 - 2 * 0.31623) / 3, abs=1e-4)
    assert n_eff == pytest.approx(3 / (1 + 2 * rho))
    assert n_eff < 2.5


def test_independent_errors_keep_every_voter_effective():
    items = [
        Item("1", ("b", "a", "a"), gold="a"),
        Item("2", ("a", "b", "a"), gold="a"),
        Item("3", ("a", "a", "b"), gold="a"),
        Item("4", ("a", "a", "a"), gold="a"),
    ]
    report = analyse(items, ["a", "b"])
    assert report.vote_accuracy == 1.0
    assert all(p.double_fault == 0 for p in report.pairs)
    assert report.effective_voters == pytest.approx(3.0)


def test_the_stored_decision_counts_over_the_plain_plurality():
    items = [Item("1", ("a", "b"), gold="a", vote="a")]  # a tie the tie policy settled
    assert analyse(items, ["a", "b"]).vote_accuracy == 1.0
    assert analyse([Item("1", ("a", "b"), gold="a")], ["a", "b"]).vote_accuracy == 0.0


def test_no_items_is_an_error():
    with pytest.raises(ValueError, match="no items"):
        analyse([], ["a", "b"])


def test_items_no_voter_answered_are_listed_as_no_answer_not_hidden_from_low_agreement():
    # The report said "low agreement: none" while 12 runs had no answer at all: an item without a
    # valid answer has no winning share to call low, so it is listed apart, never dropped.
    items = [Item("a", ("x", "x", "x"), "x"), Item("b", (None, None, None), "x"), Item("c", ("x", "y", None), "y"),
             Item("d", (None, None, None), "y")]
    report = analyse(items, ["x", "y"])
    assert report.no_answer == ["b", "d"]
    assert report.low_agreement == ["c"]  # split 1 to 1: a share of 0.5, under 0.6
    assert report.to_json()["no_answer"] == ["b", "d"]


def test_when_no_voter_answered_anything_every_item_is_no_answer_and_the_rates_are_unmeasured():
    report = analyse([Item(str(i), (None, None), "x") for i in range(3)], ["x", "y"])
    assert report.no_answer == ["0", "1", "2"]
    j = report.to_json()
    assert j["unanimous_rate"] is None and j["fleiss_kappa"] is None and j["mean_pairwise_agreement"] is None
