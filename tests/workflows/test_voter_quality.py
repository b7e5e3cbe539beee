"""Per-voter quality: accuracy against gold, double faults between voters, and which voter to drop."""

from __future__ import annotations

from collections import Counter

import pytest

from workflows.voter_quality import Document, Seat, VoterId, assess

HAIKU, SONNET = "claude-haiku-5-5", "claude-sonnet-5-5"
CANNOT = VoterId("cannot-do", HAIKU)
MONEY = VoterId("money-data-outage", SONNET)
CUSTOMER = VoterId("customer-words", HAIKU)

FAIL = "<failed>"  # a seat whose call failed; None is an abstention


def doc(i: int, gold: str | None, *said: tuple[VoterId, str | None], winner: str | None = "auto") -> Document:
    seats = tuple(Seat(v, None if a == FAIL else a, a == FAIL) for v, a in said)
    if winner == "auto":
        counts = Counter(s.answer for s in seats if s.answer is not None)
        winner = counts.most_common(1)[0][0] if counts else None
    return Document(f"d{i}", seats, gold, winner)


def panel(rows: list[tuple[str, str, str, str]]) -> list[Document]:
    """Rows of (gold, cannot-do, money-data-outage, customer-words)."""
    return [doc(i, g, (CANNOT, a), (MONEY, b), (CUSTOMER, c)) for i, (g, a, b, c) in enumerate(rows)]


def by_name(quality, voter):
    return next(v for v in quality.voters if v.voter == voter)


def test_each_voter_counts_answered_correct_abstained_and_failed_against_gold():
    docs = [
        doc(0, "urgent", (CANNOT, "Urgent"), (MONEY, "normal")),  # labels compare case-insensitively
        doc(1, "normal", (CANNOT, "normal"), (MONEY, None)),  # money abstained
        doc(2, "urgent", (CANNOT, FAIL), (MONEY, "urgent")),  # cannot-do's call failed
        doc(3, None, (CANNOT, "normal"), (MONEY, "urgent")),  # no gold: not in the accuracy
    ]
    q = assess(docs)
    cannot, money = by_name(q, CANNOT), by_name(q, MONEY)
    assert (cannot.documents, cannot.answered, cannot.abstained, cannot.failed) == (4, 3, 0, 1)
    assert (cannot.gold, cannot.gold_answered, cannot.correct, cannot.accuracy) == (3, 2, 2, 1.0)
    assert (money.documents, money.answered, money.abstained, money.failed) == (4, 3, 1, 0)
    assert (money.gold_answered, money.correct) == (2, 1)
    assert money.rest_accuracy == 1.0 and cannot.rest_accuracy == 0.5
    assert q.gold_documents == 3
    assert any("3 of 4 documents" in n for n in q.notes)


@pytest.mark.parametrize(
    ("seats", "gold", "correct", "state"),
    [
        (("urgent", "urgent"), "urgent", 1, "answered"),
        (("normal", "urgent"), "urgent", 0, "answered"),  # its own seats tie: the first seat's answer
        (("urgent", "normal"), "urgent", 1, "answered"),
        ((None, "urgent"), "urgent", 1, "answered"),  # one seat answered
        ((None, FAIL), "urgent", 0, "abstained"),  # a seat returned without a label
        ((FAIL, FAIL), "urgent", 0, "failed"),
    ],
)
def test_the_seats_of_one_voter_count_as_one_voter(seats, gold, correct, state):
    q = assess([doc(0, gold, *((CANNOT, s) for s in seats), (MONEY, gold))])
    cannot = by_name(q, CANNOT)
    assert cannot.seats == 2 and cannot.documents == 1
    assert cannot.correct == correct
    assert getattr(cannot, state) == 1


def test_pairs_count_double_faults_and_agreement_when_wrong_over_documents_both_answered():
    docs = panel([
        ("urgent", "normal", "normal", "urgent"),  # cannot & money wrong, same answer
        ("urgent", "normal", "spam", "urgent"),  # both wrong, different answers
        ("normal", "normal", "urgent", "normal"),  # money alone wrong
        ("normal", "normal", "normal", "normal"),
    ]) + [doc(9, "urgent", (CANNOT, "normal"), (MONEY, None), (CUSTOMER, "urgent"))]  # money abstained
    q = assess(docs)
    pair = next(p for p in q.pairs if {p.a, p.b} == {CANNOT, MONEY})
    assert (pair.both_answered, pair.double_faults, pair.agree_when_wrong) == (4, 2, 1)
    assert (pair.errors_a, pair.errors_b) == (2, 3)
    assert pair.double_fault == 0.5
    assert pair.expected_double_faults == pytest.approx(2 * 3 / 4)
    other = next(p for p in q.pairs if {p.a, p.b} == {CANNOT, CUSTOMER})
    assert (other.both_answered, other.double_faults) == (5, 0)


def bad_money_panel() -> list[Document]:
    # money-data-outage is wrong on 6 of 10, 5 of them together with cannot-do (wrong on 5 of 10);
    # customer-words is wrong once.
    rows = [("urgent", "normal", "normal", "urgent")] * 4 + [("normal", "urgent", "urgent", "urgent")]
    rows += [("urgent", "urgent", "normal", "urgent")] + [("normal", "normal", "normal", "normal")] * 4
    return panel(rows)


def test_a_deliberately_bad_voter_is_named_with_the_voter_it_errs_with():
    q = assess(bad_money_panel())
    assert [a.voter for a in q.advice] == [MONEY]
    money = by_name(q, MONEY)
    assert (money.correct, money.gold_answered) == (4, 10)
    assert money.rest_accuracy == pytest.approx(14 / 20)  # cannot-do 5 of 10, customer-words 9 of 10
    text = q.advice[0].text
    assert text.startswith("drop or rewrite `money-data-outage` (claude-sonnet-5-5): 40% accurate (4 of 10) "
                           "against the rest of the panel's 70%")
    assert "wrong together with `cannot-do` (claude-haiku-5-5) on 5 of its 6 errors" in text
    assert "the vote went wrong with it on 5" in text


def test_a_good_panel_gets_no_advice():
    rows = [("urgent", "urgent", "urgent", "urgent")] * 8 + [("normal", "normal", "urgent", "normal"),
                                                            ("normal", "urgent", "normal", "normal")]
    q = assess(panel(rows))
    assert q.advice == []
    assert q.vote_accuracy == 1.0


def test_a_bad_voter_whose_errors_are_its_own_is_advised_for_cost():
    rows = [("urgent", "urgent", "normal", "urgent")] * 6 + [("normal", "normal", "normal", "normal")] * 4
    q = assess(panel(rows))
    assert [a.voter for a in q.advice] == [MONEY]
    assert "its errors are its own" in q.advice[0].text
    assert "the vote went wrong" not in q.advice[0].text


@pytest.mark.parametrize(
    ("money_correct", "others_correct", "n", "advised"),
    [
        (5, 9, 10, True),  # 50 % against 90 %: clear
        (8, 9, 10, False),  # 80 % against 90 %: within chance on 10 documents
        (80, 90, 100, True),  # the same gap on 100 documents is not chance
        (88, 90, 100, False),  # under the 5-point margin however many documents
        (9, 9, 10, False),  # as accurate as the rest
        (10, 9, 10, False),  # more accurate than the rest
        (0, 4, 4, False),  # too few gold documents to judge
    ],
)
def test_the_rule_needs_a_margin_beyond_chance_and_enough_documents(money_correct, others_correct, n, advised):
    rows = [("urgent",
             "urgent" if i < others_correct else "normal",
             "urgent" if i < money_correct else "normal",
             "urgent" if i < others_correct else "normal") for i in range(n)]
    q = assess(panel(rows))
    assert [a.voter for a in q.advice] == ([MONEY] if advised else [])
    if n < 5:
        assert any("too few answered gold documents" in note for note in q.notes)


def test_a_voter_that_abstains_often_is_told_to_rewrite_and_failures_are_never_advised():
    rows = [doc(i, "urgent", (CANNOT, "urgent"), (MONEY, None if i < 4 else "urgent"), (CUSTOMER, "urgent"))
            for i in range(10)]
    q = assess(rows)
    assert [(a.voter, a.problem) for a in q.advice] == [(MONEY, "abstains")]
    assert "gave no label on 4 of 10 documents (40%, the rest of the panel 0%)" in q.advice[0].text
    failing = [doc(i, "urgent", (CANNOT, "urgent"), (MONEY, FAIL if i < 4 else "urgent"), (CUSTOMER, "urgent"))
               for i in range(10)]
    assert assess(failing).advice == []
    assert by_name(assess(failing), MONEY).failed == 4


def test_without_gold_each_voter_shows_its_disagreement_with_the_winner_and_no_accuracy():
    rows = [doc(i, None, (CANNOT, "urgent"), (MONEY, "normal" if i < 3 else "urgent"), (CUSTOMER, "urgent"))
            for i in range(4)]
    rows.append(doc(4, None, (CANNOT, "urgent"), (MONEY, None), (CUSTOMER, "urgent")))  # an abstention is no vote
    rows.append(doc(5, None, (CANNOT, "urgent"), (MONEY, "normal"), winner=None))  # a tie: no winner to disagree with
    q = assess(rows)
    money, cannot = by_name(q, MONEY), by_name(q, CANNOT)
    assert (money.documents, money.abstained) == (6, 1)
    assert (money.disagreed, money.compared, money.disagreement) == (3, 4, 0.75)
    assert (cannot.disagreed, cannot.compared) == (0, 5)
    assert money.accuracy is None and q.vote_accuracy is None
    assert q.pairs == [] and q.advice == []
    assert any("gold labels" in n for n in q.notes)
    assert q.to_json()["voters"][1]["disagreement"] == 0.75


def test_todays_built_in_variants_are_voters_named_by_their_variant():
    direct, lead = VoterId("direct", HAIKU), VoterId("lead", HAIKU)
    rows = [doc(i, "positive", (direct, "positive"), (lead, "negative"), (VoterId("closing", HAIKU), "positive"))
            for i in range(6)]
    q = assess(rows)
    assert [v.voter.name for v in q.voters] == ["direct", "lead", "closing"]
    assert [a.voter for a in q.advice] == [lead]
    assert q.advice[0].text.startswith("drop or rewrite `lead` (claude-haiku-5-5): 0% accurate")


def test_a_single_voter_is_measured_but_never_advised():
    q = assess([doc(i, "urgent", (CANNOT, "normal")) for i in range(8)])
    assert by_name(q, CANNOT).accuracy == 0.0
    assert q.advice == [] and q.pairs == []


def test_no_documents_is_an_error():
    with pytest.raises(ValueError, match="no documents"):
        assess([])


def test_a_panel_none_of_whose_voters_answered_enough_is_not_called_fine():
    # Nobody answered: "no voter is clearly less accurate than the rest" would be a claim without evidence.
    silent = assess([doc(i, "urgent", (CANNOT, None), (MONEY, FAIL)) for i in range(8)])
    assert silent.judged == 0 and silent.advice == []
    assert silent.to_json()["judged"] == 0
    fine = assess(panel([("urgent", "urgent", "urgent", "urgent")] * 6))
    assert fine.judged == 3
