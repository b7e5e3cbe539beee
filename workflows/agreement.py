"""Agreement and correlated errors over a batch of votes (pure).

Each item holds one answer per voter slot (None when the voter gave no valid answer), in the same
slot order for every item, and optionally its gold label. Voters that are wrong together give a
confident wrong vote, so besides accuracy this measures how alike their errors are.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Item:
    id: str
    answers: tuple[str | None, ...]
    gold: str | None = None
    vote: str | None = None  # the stored decision (tie policy applied); default: the plain plurality

    @property
    def decision(self) -> str | None:
        return self.vote if self.vote is not None else self.winner

    @property
    def valid(self) -> list[str]:
        return [a for a in self.answers if a is not None]

    @property
    def winner(self) -> str | None:
        counts = Counter(self.valid)
        if not counts:
            return None
        top = max(counts.values())
        leaders = [a for a in counts if counts[a] == top]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def winning_share(self) -> float:
        valid = self.valid
        return max(Counter(valid).values()) / len(valid) if valid else 0.0


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a subjects x categories table of rating counts.

    Subjects may have different numbers of ratings (each needs at least 2); P_i uses its own n_i.
    Returns nan when agreement by chance is already perfect (one category only).
    """
    rows = [list(r) for r in counts if sum(r) >= 2]
    if not rows:
        return math.nan
    total = sum(sum(r) for r in rows)
    p_j = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_bar = sum((sum(x * x for x in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows) / len(rows)
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return math.nan
    return (p_bar - p_e) / (1 - p_e)


def count_table(items: Sequence[Item], categories: Sequence[str]) -> list[list[int]]:
    index = {c: i for i, c in enumerate(categories)}
    table = []
    for item in items:
        row = [0] * len(categories)
        for a in item.valid:
            if a in index:
                row[index[a]] += 1
        table.append(row)
    return table


def pairwise_agreement(item: Item) -> float | None:
    """Share of voter pairs that gave the same answer (Fleiss' P_i); None under 2 answers."""
    valid = item.valid
    if len(valid) < 2:
        return None
    pairs = list(itertools.combinations(valid, 2))
    return sum(1 for a, b in pairs if a == b) / len(pairs)


def effective_voters(n: int, mean_error_correlation: float) -> float:
    """N / (1 + (N - 1) * rho): N voters whose errors correlate by rho are worth this many
    independent ones (the design-effect formula). rho <= 0 counts as independent (N)."""
    if n < 1:
        return 0.0
    rho = min(1.0, max(0.0, mean_error_correlation))
    return n / (1 + (n - 1) * rho)


def _phi(xs: Sequence[int], ys: Sequence[int]) -> float | None:
    """Correlation of two 0/1 sequences; None when either never varies."""
    n = len(xs)
    if n == 0:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    vx, vy = mx * (1 - mx), my * (1 - my)
    if vx == 0 or vy == 0:
        return None
    cov = sum(x * y for x, y in zip(xs, ys, strict=True)) / n - mx * my
    return cov / math.sqrt(vx * vy)


@dataclass(frozen=True)
class PairStats:
    a: int
    b: int
    both_answered: int
    double_fault: float  # both wrong
    agree_when_wrong: float  # both wrong with the same answer
    error_correlation: float | None
    double_faults: int = 0  # how many documents both were wrong on
    expected_double_faults: float = 0.0  # what independent errors would give: errors_a * errors_b / both_answered

    def to_json(self) -> dict[str, Any]:
        return {"voters": [self.a, self.b], "both_answered": self.both_answered,
                "double_fault": round(self.double_fault, 4), "agree_when_wrong": round(self.agree_when_wrong, 4),
                "error_correlation": None if self.error_correlation is None else round(self.error_correlation, 4),
                "double_faults": self.double_faults, "expected_double_faults": round(self.expected_double_faults, 2)}


@dataclass(frozen=True)
class AgreementReport:
    items: int
    voters: int
    unanimous_rate: float
    mean_pairwise_agreement: float
    fleiss_kappa: float
    winning_share: dict[str, int]  # "2/3" -> number of items
    low_agreement: list[str]  # item ids whose winning share is below the threshold
    # Item ids where no voter gave a valid answer: no share to call low, and no vote either; listed
    # apart so a report never says "none" of them while every voter failed or abstained.
    no_answer: list[str] = field(default_factory=list)
    voter_accuracy: dict[int, float] = field(default_factory=dict)
    vote_accuracy: float | None = None
    pairs: list[PairStats] = field(default_factory=list)
    mean_error_correlation: float | None = None
    effective_voters: float | None = None

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None or math.isnan(x) else round(x, 4)

        return {
            "items": self.items, "voters": self.voters, "unanimous_rate": r(self.unanimous_rate),
            "mean_pairwise_agreement": r(self.mean_pairwise_agreement), "fleiss_kappa": r(self.fleiss_kappa),
            "winning_share": self.winning_share, "low_agreement": self.low_agreement, "no_answer": self.no_answer,
            "voter_accuracy": {str(k): r(v) for k, v in self.voter_accuracy.items()},
            "vote_accuracy": r(self.vote_accuracy), "pairs": [p.to_json() for p in self.pairs],
            "mean_error_correlation": r(self.mean_error_correlation), "effective_voters": r(self.effective_voters),
        }


def _share_label(item: Item) -> str:
    valid = item.valid
    if not valid:
        return "0/0"
    return f"{max(Counter(valid).values())}/{len(valid)}"


def analyse(items: Sequence[Item], categories: Sequence[str], *, low_agreement_below: float = 0.6) -> AgreementReport:
    """Agreement for every batch; accuracy and correlated errors when items carry gold labels."""
    if not items:
        raise ValueError("no items to analyse")
    voters = max(len(i.answers) for i in items)
    answered = [i for i in items if len(i.valid) >= 2]
    pairwise = [p for p in (pairwise_agreement(i) for i in answered) if p is not None]
    shares = Counter(_share_label(i) for i in items)
    report = AgreementReport(
        items=len(items),
        voters=voters,
        unanimous_rate=sum(1 for i in answered if len(set(i.valid)) == 1) / len(answered) if answered else math.nan,
        mean_pairwise_agreement=sum(pairwise) / len(pairwise) if pairwise else math.nan,
        fleiss_kappa=fleiss_kappa(count_table(items, categories)),
        winning_share=dict(sorted(shares.items(), key=lambda kv: (_share_value(kv[0]), kv[0]))),
        low_agreement=[i.id for i in items if i.valid and i.winning_share < low_agreement_below],
        no_answer=[i.id for i in items if not i.valid],
    )
    gold = [i for i in items if i.gold is not None]
    if not gold:
        return report
    accuracy = {}
    for slot in range(voters):
        answers = [(i.answers[slot], i.gold) for i in gold if slot < len(i.answers)]
        accuracy[slot] = sum(1 for a, g in answers if a == g) / len(answers) if answers else math.nan
    pairs = []
    for a, b in itertools.combinations(range(voters), 2):
        both = [i for i in gold if max(a, b) < len(i.answers) and i.answers[a] is not None
                and i.answers[b] is not None]
        if not both:
            continue
        wrong_a = [int(i.answers[a] != i.gold) for i in both]
        wrong_b = [int(i.answers[b] != i.gold) for i in both]
        double = sum(x * y for x, y in zip(wrong_a, wrong_b, strict=True))
        same = sum(1 for i in both if i.answers[a] != i.gold and i.answers[a] == i.answers[b])
        pairs.append(PairStats(a, b, len(both), double / len(both), same / len(both), _phi(wrong_a, wrong_b),
                               double, sum(wrong_a) * sum(wrong_b) / len(both)))
    correlations = [p.error_correlation for p in pairs if p.error_correlation is not None]
    mean_corr = sum(correlations) / len(correlations) if correlations else None
    return replace(
        report,
        voter_accuracy=accuracy,
        vote_accuracy=sum(1 for i in gold if i.decision == i.gold) / len(gold),
        pairs=pairs,
        mean_error_correlation=mean_corr,
        effective_voters=effective_voters(voters, mean_corr) if mean_corr is not None else None,
    )


def _share_value(label: str) -> float:
    top, _, n = label.partition("/")
    return int(top) / int(n) if int(n) else 0.0
