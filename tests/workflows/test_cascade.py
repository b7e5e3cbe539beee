"""Panel alone, strong model alone, panel+escalation: the three rows and the recommendation (pure)."""

from __future__ import annotations

import pytest

from workflows.cascade import Call, Case, Way, cascade_call, compare_ways, recommend_way

PANEL, STRONG = "3 x claude-haiku-5-5 vote", "1 x claude-opus-5-5"


def case(gold: str, panel: str | None, strong: str | None, escalates: str | None = None, *,
         panel_cost: float = 0.001, strong_cost: float = 0.01, strong_failed: bool = False) -> Case:
    return Case(f"doc-{gold}-{panel}-{strong}", gold, Call(panel, panel_cost, 0.5, calls=3),
                escalates, Call(strong, strong_cost, 1.0, failed=strong_failed))


def test_a_document_the_panel_decides_alone_costs_the_panel_only():
    c = case("a", "a", "b")
    assert cascade_call(c) == c.panel


def test_an_escalated_document_takes_the_strong_answer_and_adds_its_cost_calls_and_wall_time():
    c = case("b", "a", "b", "tie between a, b")
    assert cascade_call(c) == Call("b", 0.011, 1.5, calls=4)


def test_an_escalated_call_without_a_label_leaves_the_panels_answer():
    c = case("a", "a", None, "low agreement", strong_failed=True)
    assert cascade_call(c).answer == "a" and cascade_call(c).calls == 4


def test_an_escalated_call_measured_apart_is_used_instead_of_the_strong_model_alone():
    c = Case("d", "a", Call("b", 0.001, 0.5, calls=3), "tie", Call("b", 0.01, 1.0), escalated=Call("a", 0.002, 0.8))
    assert cascade_call(c) == Call("a", 0.003, 1.3, calls=4)


def cases_where_escalation_pays() -> list[Case]:
    """10 documents: the panel is right on 7 clear ones and wrong on 3 close ones; the strong model is
    right on all 10. Panel+escalation: 10 right, 3 escalations."""
    clear = [case("a", "a", "a") for _ in range(7)]
    close = [case("b", "a", "b", "low agreement") for _ in range(3)]
    return clear + close


def test_the_three_rows_side_by_side():
    strong, panel, cascade = compare_ways(cases_where_escalation_pays(), panel_name=PANEL, strong_name=STRONG)
    assert (strong.way, panel.way, cascade.way) == (Way.STRONG, Way.PANEL, Way.ESCALATION)
    assert [r.measured.correct for r in (strong, panel, cascade)] == [10, 7, 10]
    assert [r.calls for r in (strong, panel, cascade)] == [10, 30, 33]
    assert [round(r.measured.cost_usd, 6) for r in (strong, panel, cascade)] == [0.1, 0.01, 0.04]
    assert [round(r.measured.wall_s, 4) for r in (strong, panel, cascade)] == [1.0, 0.5, 0.8]
    assert cascade.escalated == 3 and cascade.name == f"{PANEL} + escalation to {STRONG}"
    row = cascade.to_json()
    assert row["accuracy_shown"] == "100%" and row["cost_shown"] == "$0.040000" and row["escalated"] == 3
    assert row["mean_wall_shown"] == "800 ms" and "escalated" not in panel.to_json()


def test_with_a_target_the_cheapest_way_that_meets_it_is_recommended():
    rows = compare_ways(cases_where_escalation_pays(), panel_name=PANEL, strong_name=STRONG)
    advice = recommend_way(rows, target=0.9)
    assert advice.choice is Way.ESCALATION
    assert advice.reason == (f"the cheapest of the 2 ways that meet the target 90%: {PANEL} + escalation to {STRONG} "
                             "scores 100% on 10 documents for $0.040000 in 33 calls, 800 ms a document, escalating 3 "
                             "of 10 documents")
    assert advice.others == [
        f"{STRONG} scores 100% on 10 documents for $0.100000 in 10 calls, 1000 ms a document, meeting the target 90%: "
        "as accurate as panel+escalation, and costs more (2.50x)",
        f"{PANEL} scores 70% on 10 documents for $0.010000 in 30 calls, 500 ms a document, under the target 90%: "
        "less accurate than panel+escalation, and costs less (0.25x)",
    ]


def test_a_panel_that_meets_the_target_alone_is_preferred_to_escalating():
    rows = compare_ways(cases_where_escalation_pays(), panel_name=PANEL, strong_name=STRONG)
    assert recommend_way(rows, target=0.7).choice is Way.PANEL


def test_without_a_target_the_most_accurate_then_the_cheapest():
    rows = compare_ways(cases_where_escalation_pays(), panel_name=PANEL, strong_name=STRONG)
    advice = recommend_way(rows)
    assert advice.choice is Way.ESCALATION and advice.reason.startswith("the cheapest of the 2 most accurate ways: ")


def test_when_no_way_meets_the_target_the_most_accurate_is_recommended_and_the_text_says_so():
    cases = [case("a", "a", "b"), case("a", "b", "a", "tie"), case("a", "b", "b")]
    rows = compare_ways(cases, panel_name=PANEL, strong_name=STRONG)
    advice = recommend_way(rows, target=0.9)
    # panel 1/3, strong 1/3, cascade 2/3 (the tie went to the strong model, which was right there)
    assert advice.choice is Way.ESCALATION
    assert advice.reason.startswith("no way meets the target 90%; the most accurate: ")


def test_accuracies_equal_as_printed_are_a_tie_decided_by_cost():
    # 2 of 3 against 2 of 3: the same figure; the panel is cheaper than the strong model
    cases = [case("a", "a", "a"), case("a", "a", "b"), case("a", "b", "a")]
    rows = compare_ways(cases, panel_name=PANEL, strong_name=STRONG)
    advice = recommend_way(rows)
    assert advice.choice is Way.PANEL  # no document escalated: panel+escalation is the panel, and not simpler
    assert "no document escalated" in advice.notes[0]


def test_nothing_answered_recommends_no_way():
    cases = [case("a", None, None, "low agreement", strong_failed=True)]
    advice = recommend_way(compare_ways(cases, panel_name=PANEL, strong_name=STRONG), target=0.9)
    assert advice.choice is None and advice.recommendation.startswith("fix the prompt first: no way named")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one labelled document"):
        compare_ways([], panel_name=PANEL, strong_name=STRONG)
    with pytest.raises(ValueError, match="target accuracy must be in"):
        recommend_way(compare_ways([case("a", "a", "a")], panel_name=PANEL, strong_name=STRONG), target=1.5)
