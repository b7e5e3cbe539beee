"""The advisor (pure): should this task be parallelized at all, and how?

It answers from measurements on a labelled set: a single call's accuracy with its Wilson interval
against the target, the accuracy, cost and latency of a vote, and how often the voters disagree.
Parallelize only when a single call misses the target; vote only when voting actually beats the
single call and the voters mostly agree (frequent disagreement means the prompt or the labels are
ambiguous, and more voters only average the noise).

When a vote is no better than a single call, the reason given depends on the measured double
fault (`ErrorOverlap`, the pair of voters most often wrong together beyond chance): their errors
are called correlated only when that pair was wrong together on at least CORRELATED_MIN_DOUBLE_FAULTS
(2) gold documents and at least CORRELATED_RATIO (2) times as often as independent errors would be
(errors_a x errors_b / both answered). Otherwise the voters are each too weak, and that is what the
advice says; without a measurement it claims neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    SINGLE = "don't parallelize"
    VOTE = "vote"
    FIX_PROMPT = "fix the prompt first"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % for z = 1.96); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Measured:
    """One pattern run over the labelled set."""

    name: str
    correct: int
    total: int
    cost_usd: float
    wall_s: float  # mean wall time per document
    cost_estimated: bool = False

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)


CORRELATED_MIN_DOUBLE_FAULTS = 2
CORRELATED_RATIO = 2.0


@dataclass(frozen=True)
class ErrorOverlap:
    """The pair of voters most often wrong together on the labelled set (from workflows.agreement)."""

    pair: str  # how to name the two voters, e.g. "`direct` (haiku) & `lead` (haiku)"
    double_faults: int  # gold documents both answered wrongly
    both_answered: int
    expected: float  # the double faults independent errors would give: errors_a * errors_b / both_answered

    @property
    def correlated(self) -> bool:
        return (self.double_faults >= CORRELATED_MIN_DOUBLE_FAULTS
                and self.double_faults >= CORRELATED_RATIO * self.expected)

    def to_json(self) -> dict[str, Any]:
        return {"pair": self.pair, "double_faults": self.double_faults, "both_answered": self.both_answered,
                "expected_if_independent": round(self.expected, 2), "correlated": self.correlated}


@dataclass(frozen=True)
class AdviceInputs:
    target: float
    single: Measured
    vote: Measured
    discrete: bool  # every gold label is one of a fixed set of labels
    low_agreement_share: float  # share of documents where the vote's voters mostly disagreed
    mean_document_tokens: float = 0.0
    splittable_share: float = 0.0  # share of documents with several sections/paragraphs
    effective_voters: float | None = None  # from workflows.agreement, when known
    error_overlap: ErrorOverlap | None = None  # the measured double fault, when known


@dataclass(frozen=True)
class Advice:
    verdict: Verdict
    reason: str
    suggest_sectioning: bool
    notes: list[str] = field(default_factory=list)

    @property
    def recommendation(self) -> str:
        return f"{self.verdict.value}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "reason": self.reason, "recommendation": self.recommendation,
                "suggest_sectioning": self.suggest_sectioning, "notes": self.notes}


LOW_AGREEMENT_MAX = 0.25
LONG_DOCUMENT_TOKENS = 4000
SPLITTABLE_SHARE_MIN = 0.5


def _pct(x: float) -> str:
    return f"{x:.0%}" if x * 100 == round(x * 100) else f"{x:.1%}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def advise(
    m: AdviceInputs,
    *,
    low_agreement_max: float = LOW_AGREEMENT_MAX,
    long_document_tokens: float = LONG_DOCUMENT_TOKENS,
) -> Advice:
    if not 0 < m.target <= 1:
        raise ValueError(f"the target accuracy must be in (0, 1], got {m.target}")
    lo, hi = m.single.interval
    single = f"a single call ({m.single.name}) scores {_pct(m.single.accuracy)} (95 % CI {_pct(lo)}-{_pct(hi)})"
    notes: list[str] = []
    sectioning = (m.mean_document_tokens >= long_document_tokens and m.splittable_share >= SPLITTABLE_SHARE_MIN)
    if sectioning:
        notes.append(f"documents are long (~{m.mean_document_tokens:.0f} tokens) and split into sections: "
                     "sectioning can cut latency whatever the verdict")
    if m.single.cost_estimated or m.vote.cost_estimated:
        notes.append("costs are estimates (offline provider token counts)")

    if m.single.accuracy >= m.target:
        if lo < m.target:
            notes.append(f"the interval's lower end ({_pct(lo)}) is under the target: label more documents to be sure")
        return Advice(Verdict.SINGLE, f"{single}, which meets the target {_pct(m.target)}; a vote would cost "
                      f"{_ratio(m.vote.cost_usd, m.single.cost_usd)} as much for no needed gain", sectioning, notes)
    if not m.discrete:
        return Advice(Verdict.FIX_PROMPT, f"{single}, under the target {_pct(m.target)}, and the answers are not "
                      "a fixed set of labels, so votes cannot be tallied: make the categories discrete first",
                      sectioning, notes)
    if m.low_agreement_share > low_agreement_max:
        return Advice(Verdict.FIX_PROMPT, f"{single}, under the target {_pct(m.target)}, and the voters disagree "
                      f"on {_pct(m.low_agreement_share)} of documents: the prompt or the labels are ambiguous, "
                      "and voting would only average the noise", sectioning, notes)
    gain = m.vote.accuracy - m.single.accuracy
    correlated = ("" if m.effective_voters is None
                  else f" (the voters are worth {m.effective_voters:.1f} independent ones)")
    if gain <= 0:
        return Advice(Verdict.FIX_PROMPT, f"{single}, under the target {_pct(m.target)}, and a vote "
                      f"({m.vote.name}) scores {_pct(m.vote.accuracy)}, no better: {_why_no_better(m, correlated)}",
                      sectioning, notes)
    if m.vote.accuracy < m.target:
        return Advice(Verdict.FIX_PROMPT, f"{single}, and a vote ({m.vote.name}) scores {_pct(m.vote.accuracy)}: "
                      f"both miss the target {_pct(m.target)}{correlated}; more voters will not close the gap, "
                      "a better prompt (or model) must", sectioning, notes)
    return Advice(Verdict.VOTE, f"{single}, under the target {_pct(m.target)}; a vote ({m.vote.name}) scores "
                  f"{_pct(m.vote.accuracy)}, meeting it, at {_ratio(m.vote.cost_usd, m.single.cost_usd)} "
                  f"the cost and {_ratio(m.vote.wall_s, m.single.wall_s)} the latency", sectioning, notes)


def _why_no_better(m: AdviceInputs, worth: str) -> str:
    """Why the vote did not beat one call, from the measured double fault only."""
    o = m.error_overlap
    if o is None:
        return ("whether the voters are wrong together was not measured (no two voters answered the same "
                "labelled document), so improve the prompt rather than add voters")
    seen = f"{o.pair} were wrong together on {o.double_faults} of {o.both_answered} documents"
    if o.correlated:
        return (f"the voters' errors are correlated ({seen}, where independent errors would give "
                f"{o.expected:.1f}){worth}, so improve the prompt rather than add voters")
    return (f"the voters' errors are not correlated (the pair most often wrong together, {seen}; independent "
            f"errors would give {o.expected:.1f}), so the voters are each weaker than the single call: improve "
            "their prompts (see the per-voter advice) or the panel's model rather than add voters")
