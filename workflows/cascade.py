"""Panel alone, strong model alone, or panel+escalation (pure): three ways side by side on a labelled set.

`chorus compare` and `chorus advise` measure, on every labelled document, the panel (its answer, cost,
calls, wall time and whether its tally escalates, `escalation.escalation_reason`) and the strong model
alone. The third way is computed from those: where the panel's tally escalates, the escalated call
decides (its label, or the panel's when it gave none, as `escalation.decide_with_escalation` does) and
its cost, calls and wall time are added to the panel's (it is sent once the panel is tallied). The
escalated call is the strong model's call on the same document unless it was measured on its own
(`Case.escalated`).

The recommendation follows the advisor's wording rules (`workflows.advisor`): every comparison is decided
by the figures as they are printed (`percent`, `usd`, `ms`), so the text never contradicts its table.
With a target accuracy, the cheapest way that meets it; without one, or when none does, the most
accurate (then the cheapest). A tie goes to the way with fewer calls, then the faster, then the
simpler (the strong model alone, the panel alone, panel+escalation, in that order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from workflows.advisor import Measured, percent


class Way(StrEnum):
    STRONG = "strong model alone"
    PANEL = "panel alone"
    ESCALATION = "panel+escalation"


SIMPLER_FIRST = (Way.STRONG, Way.PANEL, Way.ESCALATION)


@dataclass(frozen=True)
class Call:
    """One way's outcome on one document: the label (None: no answer), its cost, its wall time, the calls
    it sent, and whether every one of them failed (the provider's doing, not the prompt's)."""

    answer: str | None
    cost_usd: float
    wall_s: float
    calls: int = 1
    failed: bool = False
    cost_estimated: bool = False


@dataclass(frozen=True)
class Case:
    """A labelled document: its gold label, the panel's outcome and whether its tally escalates (the
    reason, or None), the strong model's, and the escalated call's when measured apart (None: the strong
    model's call stands for it)."""

    id: str
    gold: str
    panel: Call
    escalates: str | None
    strong: Call
    escalated: Call | None = None


@dataclass(frozen=True)
class WayRow:
    way: Way
    name: str  # what the table calls it, e.g. "3 x claude-haiku-5-5 vote"
    measured: Measured  # accuracy, its interval, total cost, mean wall time
    calls: int
    escalated: int = 0  # documents handed to the strong model (panel+escalation only)

    def to_json(self) -> dict[str, Any]:
        m = self.measured
        lo, hi = m.interval
        return {"way": self.way.value, "name": self.name, "accuracy": round(m.accuracy, 4),
                "ci95": [round(lo, 4), round(hi, 4)], "accuracy_shown": percent(m.accuracy),
                "documents": m.total, "answered": m.answered, "failed": m.failed, "calls": self.calls,
                "cost_usd": round(m.cost_usd, 6), "cost_shown": usd(m.cost_usd), "cost_estimated": m.cost_estimated,
                "mean_wall_s": round(m.wall_s, 4), "mean_wall_shown": ms(m.wall_s),
                **({"escalated": self.escalated} if self.way is Way.ESCALATION else {})}


def usd(x: float) -> str:
    """A cost as the tables print it (`chorus advise`: six decimals)."""
    return f"${x:.6f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def escalated_call(case: Case) -> Call | None:
    """What panel+escalation does on this document: None when the panel decides alone, else the
    escalated call (measured apart, or the strong model's)."""
    if case.escalates is None:
        return None
    return case.escalated if case.escalated is not None else case.strong


def cascade_call(case: Case) -> Call:
    """Panel+escalation on one document, from the panel's outcome and the escalated call's."""
    extra = escalated_call(case)
    if extra is None:
        return case.panel
    answer = extra.answer if extra.answer is not None else case.panel.answer
    return Call(answer, case.panel.cost_usd + extra.cost_usd, case.panel.wall_s + extra.wall_s,
                case.panel.calls + extra.calls, failed=answer is None and case.panel.failed and extra.failed,
                cost_estimated=case.panel.cost_estimated or extra.cost_estimated)


def _row(way: Way, name: str, cases: Sequence[Case], calls: Sequence[Call], escalated: int = 0) -> WayRow:
    n = len(calls)
    measured = Measured(name, sum(1 for case, c in zip(cases, calls, strict=True) if c.answer == case.gold), n,
                        sum(c.cost_usd for c in calls), sum(c.wall_s for c in calls) / n if n else 0.0,
                        any(c.cost_estimated for c in calls), answered=sum(1 for c in calls if c.answer is not None),
                        failed=sum(1 for c in calls if c.answer is None and c.failed))
    return WayRow(way, name, measured, sum(c.calls for c in calls), escalated)


def compare_ways(cases: Sequence[Case], *, panel_name: str, strong_name: str) -> tuple[WayRow, WayRow, WayRow]:
    """The three rows (strong model alone, panel alone, panel+escalation) over the labelled documents."""
    if not cases:
        raise ValueError("comparing the three ways needs at least one labelled document")
    return (_row(Way.STRONG, strong_name, cases, [c.strong for c in cases]),
            _row(Way.PANEL, panel_name, cases, [c.panel for c in cases]),
            _row(Way.ESCALATION, f"{panel_name} + escalation to {strong_name}", cases,
                 [cascade_call(c) for c in cases], sum(1 for c in cases if c.escalates is not None)))


@dataclass(frozen=True)
class WayAdvice:
    choice: Way | None  # None: no way answered anything, there is nothing to choose from
    reason: str
    others: list[str] = field(default_factory=list)  # one sentence per way not chosen
    notes: list[str] = field(default_factory=list)

    @property
    def recommendation(self) -> str:
        return f"{self.choice.value if self.choice else 'fix the prompt first'}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"choice": self.choice.value if self.choice else None, "reason": self.reason,
                "recommendation": self.recommendation, "others": self.others, "notes": self.notes}


def _shown_accuracy(row: WayRow) -> float:
    return float(percent(row.measured.accuracy).rstrip("%"))


def _shown_cost(row: WayRow) -> float:
    return float(usd(row.measured.cost_usd).lstrip("$"))


def _shown_wall(row: WayRow) -> float:
    return float(ms(row.measured.wall_s).split()[0])


def _meets(row: WayRow, target: float) -> bool:
    return _shown_accuracy(row) >= float(percent(target).rstrip("%"))


def _cheapest(rows: Sequence[WayRow]) -> WayRow:
    return min(rows, key=lambda r: (_shown_cost(r), r.calls, _shown_wall(r), SIMPLER_FIRST.index(r.way)))


def _figures(row: WayRow) -> str:
    m = row.measured
    return (f"{row.name} scores {percent(m.accuracy)} on {m.total} documents for {usd(m.cost_usd)} in {row.calls} "
            f"calls, {ms(m.wall_s)} a document")


def _against(row: WayRow, chosen: WayRow, target: float | None) -> str:
    """One way beside the chosen one, every word decided by the printed figures."""
    a, b = _shown_accuracy(row), _shown_accuracy(chosen)
    accuracy = "more accurate than" if a > b else "less accurate than" if a < b else "as accurate as"
    c, d = _shown_cost(row), _shown_cost(chosen)
    cost = "costs more" if c > d else "costs less" if c < d else "costs the same"
    ratio = f" ({row.measured.cost_usd / chosen.measured.cost_usd:.2f}x)" if c != d and d > 0 else ""
    goal = "" if target is None else f", {'meeting' if _meets(row, target) else 'under'} the target {percent(target)}"
    escalated = (f", escalating {row.escalated} of {row.measured.total} documents"
                 if row.way is Way.ESCALATION else "")
    return f"{_figures(row)}{escalated}{goal}: {accuracy} {chosen.way.value}, and {cost}{ratio}"


def recommend_way(rows: Sequence[WayRow], *, target: float | None = None) -> WayAdvice:
    """Which of the three ways to use (see the module's docstring for the rule)."""
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"the target accuracy must be in (0, 1], got {target}")
    notes = []
    if any(r.measured.cost_estimated for r in rows):
        notes.append("costs are estimates (offline provider token counts)")
    cascade = next((r for r in rows if r.way is Way.ESCALATION), None)
    if cascade is not None and cascade.escalated == 0:
        notes.append("no document escalated: panel+escalation is the panel alone on this set")
    if all(r.measured.answered == 0 for r in rows):
        return WayAdvice(None, "no way named an allowed label on any document, so there is no accuracy to compare; "
                               "make the labels and their descriptions cover the documents, or fix what made the "
                               "calls fail (`chorus report` shows why)", notes=notes)
    meeting = [r for r in rows if target is not None and _meets(r, target)]
    if meeting:
        chosen = _cheapest(meeting)
        why = ("the only way that meets" if len(meeting) == 1 else
               f"the cheapest of the {len(meeting)} ways that meet") + f" the target {percent(target)}"
    else:
        best = max(_shown_accuracy(r) for r in rows)
        chosen = _cheapest([r for r in rows if _shown_accuracy(r) == best])
        tied = sum(1 for r in rows if _shown_accuracy(r) == best)
        why = ("the most accurate" if tied == 1 else f"the cheapest of the {tied} most accurate ways")
        if target is not None:
            why = f"no way meets the target {percent(target)}; {why}"
    reason = f"{why}: {_figures(chosen)}"
    if chosen.way is Way.ESCALATION:
        reason += f", escalating {chosen.escalated} of {chosen.measured.total} documents"
    others = [_against(r, chosen, target) for r in rows if r is not chosen]
    return WayAdvice(chosen.way, reason, others, notes)
