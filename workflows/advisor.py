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
(errors_a x errors_b / both answered). Every comparison in the wording is decided by the figures it
shows ("more often than", "as often as", "below", "the same as"), compared as they are printed
(`percent`, one decimal), so the text never contradicts its numbers; without a measurement it
claims nothing. When the calls gave no answer at all there is nothing to compare, and the verdict
says so (fix the prompt, or the failures, first).
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


def percent(x: float | None) -> str:
    """A share as every table and sentence of the advice prints it: one decimal, none when it is zero
    (0.4444 -> "44.4%", 0.9 -> "90%"); "-" when there is no figure."""
    if x is None or math.isnan(x):
        return "-"
    return f"{x:.1%}".replace(".0%", "%")


def percent_range(lo: float, hi: float) -> str:
    """"40%" when both ends print the same, else "26.7%-40%"."""
    a, b = percent(lo), percent(hi)
    return a if a == b else f"{a}-{b}"


@dataclass(frozen=True)
class Measured:
    """One pattern run over the labelled set. `answered` documents got an answer (None: unknown, taken
    as every one); of the others, `failed` had every call fail (the provider's doing, not the prompt's)."""

    name: str
    correct: int
    total: int
    cost_usd: float
    wall_s: float  # mean wall time per document
    cost_estimated: bool = False
    answered: int | None = None
    failed: int = 0

    @property
    def unanswered(self) -> int:
        return 0 if self.answered is None else self.total - self.answered

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

    @property
    def against_chance(self) -> str:
        """How the double faults compare with independent errors, as the two figures are printed."""
        shown = round(self.expected, 1)
        if self.double_faults > shown:
            return "more often than"
        return "as often as" if self.double_faults == shown else "less often than"

    def describe(self) -> str:
        return (f"{self.pair} were wrong together on {self.double_faults} of {self.both_answered} documents, "
                f"where independent errors would give {self.expected:.1f}")

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
    # Each voter's accuracy against gold, (how to name it, accuracy), from workflows.voter_quality.
    voter_accuracy: tuple[tuple[str, float], ...] = ()


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


_pct = percent


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
    if m.single.answered == 0 and m.vote.answered == 0:
        return Advice(Verdict.FIX_PROMPT, f"{_nothing_answered(m)}: there is no accuracy to compare, so neither "
                      "more calls nor more voters can help yet", sectioning, notes)
    if not m.discrete:
        return Advice(Verdict.FIX_PROMPT, f"{single}, under the target {_pct(m.target)}, and the answers are not "
                      "a fixed set of labels, so votes cannot be tallied: make the categories discrete first",
                      sectioning, notes)
    unanswered = m.vote.unanswered / m.vote.total if m.vote.total else 0.0
    if unanswered > low_agreement_max:
        return Advice(Verdict.FIX_PROMPT, f"{single}, under the target {_pct(m.target)}, and the vote "
                      f"({m.vote.name}) gave no answer on {m.vote.unanswered} of {m.vote.total} documents"
                      f"{_failed(m.vote)}: {_fix_unanswered(m.vote)}", sectioning, notes)
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


def _failed(m: Measured) -> str:
    return f" ({m.failed} of them because every call failed)" if m.failed else ""


def _fix_unanswered(m: Measured) -> str:
    if m.failed and m.failed == m.unanswered:
        return "the calls failed; fix what made them fail (`chorus report` shows why) and measure again"
    return ("the prompt or the labels leave the model unable to choose; make the labels and their descriptions "
            "cover the documents, then measure again")


def _nothing_answered(m: AdviceInputs) -> str:
    parts = []
    for what in (m.single, m.vote):
        failed = f", every call failed on {what.failed}" if what.failed else ""
        parts.append(f"{what.name} answered none of the {what.total} documents{failed}")
    fix = ("fix what made the calls fail (`chorus report` shows why)"
           if m.single.failed == m.single.total and m.vote.failed == m.vote.total
           else "make the labels and their descriptions cover the documents")
    return f"no call named an allowed label ({'; '.join(parts)}); {fix}"


def _voters_against_single(m: AdviceInputs) -> str:
    """The voters' own accuracies beside the single call's, compared as printed; "" when not measured."""
    if not m.voter_accuracy:
        return ""
    scores = [acc for _, acc in m.voter_accuracy]
    shown = percent_range(min(scores), max(scores))
    one = percent(m.single.accuracy)
    each = "the voter scores" if len(scores) == 1 else "the voters score"
    if m.single.unanswered or m.vote.unanswered:
        # A voter's accuracy counts the documents it answered, the single call's all of them: with documents
        # left unanswered the two are not on one base, so neither is called above or below the other.
        return (f"{each} {shown} on the documents {'it' if len(scores) == 1 else 'each'} answered, the single "
                f"call {one} on all {m.single.total}")
    if all(percent(a) == one for a in scores):
        return f"{each} {shown}, the same as the single call"
    if all(a < m.single.accuracy and percent(a) != one for a in scores):
        return f"{each} {shown}, below the single call's {one}"
    if all(a > m.single.accuracy and percent(a) != one for a in scores):
        return f"{each} {shown}, above the single call's {one}, yet their vote is no better"
    return f"{each} {shown} against the single call's {one}"


def _why_no_better(m: AdviceInputs, worth: str) -> str:
    """Why the vote did not beat one call: only what the measured double fault and accuracies show."""
    o = m.error_overlap
    voters = _voters_against_single(m)
    voters = f"; {voters}" if voters else ""
    if o is None:
        return ("whether the voters are wrong together was not measured (no two voters answered the same "
                f"labelled document){voters}; improve the prompt rather than add voters")
    if o.correlated:
        times = f": {o.double_faults / o.expected:.1f}x as often" if o.expected > 0 else ""
        return (f"the voters' errors are correlated ({o.describe()}{times}){worth}{voters}; improve the prompt "
                "rather than add voters")
    beyond = ""
    if o.against_chance == "more often than":
        beyond = (f", but on fewer than {CORRELATED_MIN_DOUBLE_FAULTS} documents: too few to call their errors "
                  "correlated" if o.double_faults < CORRELATED_MIN_DOUBLE_FAULTS
                  else f", though not {CORRELATED_RATIO:g}x as often: not enough to call their errors correlated")
    return (f"the pair of voters most often wrong together is wrong together {o.against_chance} independent "
            f"errors would be ({o.describe()}){beyond}{voters}: improve the voters' prompts (see the per-voter "
            "advice) or the panel's model rather than add voters")
