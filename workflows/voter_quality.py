"""Per-voter quality (pure): which voter of the panel to drop or rewrite, so the prompt can be fixed.

A voter is one (name, model) of the panel: the task file's voter name, or the built-in prompt
variant id ("direct", "lead", ...) of a labels-only run, with its model. Seats repeated with
`count = N` are one voter. On one document a voter's answer is the most common valid answer of its
seats (a tie between its own seats goes to the seat listed first); it *answered* when a seat gave a
valid label, *abstained* when its seats returned but none gave a label, and *failed* when every
seat's call failed. Labels are compared case-insensitively, spaces collapsed.

With gold labels (the documents that have one):

* accuracy = correct / answered gold documents;
* for each two voters, over the gold documents both answered: double faults (both wrong),
  agree-when-wrong (both wrong with the same label), and the double faults independent errors would
  give (errors_a x errors_b / both answered);
* "the rest of the panel": the other voters' correct answers over their answered gold documents,
  pooled.

The rule (advice only where the evidence is):

* a voter that answered fewer than MIN_DOCUMENTS (5) gold documents gets no advice (a note says so);
* inaccurate: its accuracy is at least ACCURACY_MARGIN (5 points) under the rest of the panel's,
  and the upper end of its 95 % Wilson interval is under the rest's accuracy too, so the gap is
  not chance on a small set;
* abstains: it gave no label on at least ABSTAIN_SHARE (20 %) of the documents it was asked, and on
  at least ABSTAIN_MARGIN (10 points) more of them than the rest of the panel;
* the reason names the voter it was most often wrong together with (on how many of its errors), or
  says its errors are its own, and on how many of its errors the vote went wrong too.

A voter at least as accurate as the rest never gets advice. Failed calls are counted and shown but
never advised on: they are the provider's doing (rate limits, outages), not the prompt's.

Without gold labels there is no accuracy: each voter shows how often it disagreed with the run's
winner (over the documents with a winner that it answered), and a note says gold labels are needed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workflows.advisor import percent, wilson_interval

MIN_DOCUMENTS = 5
ACCURACY_MARGIN = 0.05
ABSTAIN_SHARE = 0.20
ABSTAIN_MARGIN = 0.10


@dataclass(frozen=True, order=True)
class VoterId:
    name: str
    model: str

    def __str__(self) -> str:
        return f"`{self.name}` ({self.model})"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "model": self.model}


@dataclass(frozen=True)
class Seat:
    """One voter slot's outcome on one document: its valid label, or None (abstained or failed)."""

    voter: VoterId
    answer: str | None
    failed: bool = False


@dataclass(frozen=True)
class Document:
    id: str
    seats: tuple[Seat, ...]
    gold: str | None = None
    winner: str | None = None  # the run's decision


def _key(label: str | None) -> str | None:
    return None if label is None else " ".join(label.split()).casefold()


@dataclass(frozen=True)
class _Said:
    """What one voter said on one document."""

    answer: str | None  # normalized
    state: str  # answered | abstained | failed


def _said(seats: Sequence[Seat]) -> _Said:
    valid = [_key(s.answer) for s in seats if s.answer is not None]
    if valid:
        counts = Counter(valid)
        top = max(counts.values())
        return _Said(next(a for a in valid if counts[a] == top), "answered")
    return _Said(None, "failed" if all(s.failed for s in seats) else "abstained")


def _by_voter(doc: Document) -> dict[VoterId, _Said]:
    seats: dict[VoterId, list[Seat]] = {}
    for seat in doc.seats:
        seats.setdefault(seat.voter, []).append(seat)
    return {v: _said(s) for v, s in seats.items()}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


_pct = percent  # the advice prints shares as its tables do


@dataclass(frozen=True)
class VoterStats:
    voter: VoterId
    seats: int  # seats per document (the task's `count`)
    documents: int  # documents it was asked
    answered: int
    abstained: int
    failed: int
    gold: int = 0  # gold documents it was asked
    gold_answered: int = 0
    correct: int = 0
    rest_correct: int = 0  # the other voters, pooled, on the gold documents they answered
    rest_answered: int = 0
    disagreed: int = 0  # answered, and not the run's winner
    compared: int = 0  # answered documents that have a winner

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.gold_answered)

    @property
    def rest_accuracy(self) -> float | None:
        return _ratio(self.rest_correct, self.rest_answered)

    @property
    def errors(self) -> int:
        return self.gold_answered - self.correct

    @property
    def abstain_share(self) -> float:
        return self.abstained / self.documents if self.documents else 0.0

    @property
    def disagreement(self) -> float | None:
        return _ratio(self.disagreed, self.compared)

    def to_json(self) -> dict[str, Any]:
        return {**self.voter.to_json(), "seats": self.seats, "documents": self.documents,
                "answered": self.answered, "abstained": self.abstained, "failed": self.failed,
                "gold_documents": self.gold, "gold_answered": self.gold_answered, "correct": self.correct,
                "accuracy": _r(self.accuracy), "rest_accuracy": _r(self.rest_accuracy),
                "disagreed_with_winner": self.disagreed, "compared_with_winner": self.compared,
                "disagreement": _r(self.disagreement)}


@dataclass(frozen=True)
class VoterPair:
    a: VoterId
    b: VoterId
    both_answered: int  # gold documents both answered
    double_faults: int  # both wrong
    agree_when_wrong: int  # both wrong with the same label
    errors_a: int  # within the documents both answered
    errors_b: int

    @property
    def double_fault(self) -> float | None:
        return _ratio(self.double_faults, self.both_answered)

    @property
    def expected_double_faults(self) -> float:
        """How many double faults independent errors would give."""
        return self.errors_a * self.errors_b / self.both_answered if self.both_answered else 0.0

    def with_voter(self, voter: VoterId) -> VoterId | None:
        return self.b if voter == self.a else self.a if voter == self.b else None

    def to_json(self) -> dict[str, Any]:
        return {"voters": [self.a.to_json(), self.b.to_json()], "both_answered": self.both_answered,
                "double_faults": self.double_faults, "double_fault": _r(self.double_fault),
                "agree_when_wrong": self.agree_when_wrong,
                "agree_when_wrong_rate": _r(_ratio(self.agree_when_wrong, self.both_answered)),
                "expected_double_faults": round(self.expected_double_faults, 2),
                "errors": [self.errors_a, self.errors_b]}


@dataclass(frozen=True)
class VoterAdvice:
    voter: VoterId
    problem: str  # "inaccurate" | "abstains"
    text: str

    def to_json(self) -> dict[str, Any]:
        return {**self.voter.to_json(), "problem": self.problem, "advice": self.text}


@dataclass(frozen=True)
class VoterQuality:
    documents: int
    gold_documents: int
    vote_accuracy: float | None  # the run's winner against gold
    voters: list[VoterStats]
    pairs: list[VoterPair] = field(default_factory=list)
    advice: list[VoterAdvice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    judged: int = 0  # voters with enough answered gold documents to be judged (advised on or not)

    def to_json(self) -> dict[str, Any]:
        return {"documents": self.documents, "gold_documents": self.gold_documents, "judged": self.judged,
                "vote_accuracy": _r(self.vote_accuracy), "voters": [v.to_json() for v in self.voters],
                "pairs": [p.to_json() for p in self.pairs], "advice": [a.to_json() for a in self.advice],
                "notes": self.notes}


def _stats(voter: VoterId, docs: Sequence[Document], said: Sequence[dict[VoterId, _Said]]) -> VoterStats:
    seats = max((sum(1 for s in d.seats if s.voter == voter) for d in docs), default=0)
    mine = [(d, s[voter]) for d, s in zip(docs, said, strict=True) if voter in s]
    states = Counter(x.state for _, x in mine)
    gold = [(d, x) for d, x in mine if d.gold is not None]
    answered_gold = [(d, x) for d, x in gold if x.state == "answered"]
    rest = [(d, y) for d, s in zip(docs, said, strict=True) if d.gold is not None
            for v, y in s.items() if v != voter and y.state == "answered"]
    compared = [(d, x) for d, x in mine if x.state == "answered" and d.winner is not None]
    return VoterStats(
        voter, seats, len(mine), states["answered"], states["abstained"], states["failed"],
        gold=len(gold), gold_answered=len(answered_gold),
        correct=sum(1 for d, x in answered_gold if x.answer == _key(d.gold)),
        rest_correct=sum(1 for d, y in rest if y.answer == _key(d.gold)), rest_answered=len(rest),
        disagreed=sum(1 for d, x in compared if x.answer != _key(d.winner)), compared=len(compared),
    )


def _pair(a: VoterId, b: VoterId, docs: Sequence[Document], said: Sequence[dict[VoterId, _Said]]) -> VoterPair:
    both = [(_key(d.gold), s[a].answer, s[b].answer) for d, s in zip(docs, said, strict=True)
            if d.gold is not None and a in s and b in s and s[a].state == s[b].state == "answered"]
    return VoterPair(
        a, b, len(both),
        double_faults=sum(1 for g, x, y in both if x != g and y != g),
        agree_when_wrong=sum(1 for g, x, y in both if x != g and x == y),
        errors_a=sum(1 for g, x, _ in both if x != g), errors_b=sum(1 for g, _, y in both if y != g),
    )


def _inaccurate(v: VoterStats, margin: float) -> bool:
    accuracy, rest = v.accuracy, v.rest_accuracy
    if accuracy is None or rest is None:
        return False
    return accuracy <= rest - margin and wilson_interval(v.correct, v.gold_answered)[1] < rest


def _abstains(v: VoterStats, others: Sequence[VoterStats], share: float, margin: float) -> bool:
    asked = sum(o.documents for o in others)
    rest = sum(o.abstained for o in others) / asked if asked else 0.0
    return v.abstain_share >= share and v.abstain_share >= rest + margin


def _why_errors(v: VoterStats, pairs: Sequence[VoterPair], wrong_votes: int) -> str:
    shared = [(p.double_faults, p.with_voter(v.voter)) for p in pairs if p.with_voter(v.voter) is not None]
    best = max(shared, key=lambda x: x[0], default=(0, None))
    if best[0] > 0 and best[1] is not None:
        why = f"wrong together with {best[1]} on {best[0]} of its {v.errors} errors"
    else:
        why = "its errors are its own (no other voter was wrong with it on them), so it adds cost but no accuracy"
    if wrong_votes:
        why += f"; the vote went wrong with it on {wrong_votes}"
    return why


def assess(
    documents: Sequence[Document],
    *,
    min_documents: int = MIN_DOCUMENTS,
    accuracy_margin: float = ACCURACY_MARGIN,
    abstain_share: float = ABSTAIN_SHARE,
    abstain_margin: float = ABSTAIN_MARGIN,
) -> VoterQuality:
    """Each voter's accuracy (or disagreement with the winner), their pairwise double faults, and
    advice for the weak ones (the rule is in the module docstring)."""
    if not documents:
        raise ValueError("no documents to assess")
    said = [_by_voter(d) for d in documents]
    order = list(dict.fromkeys(s.voter for d in documents for s in d.seats))
    stats = [_stats(v, documents, said) for v in order]
    gold = [d for d in documents if d.gold is not None]
    notes: list[str] = []
    if not gold:
        notes.append("no document has a gold label: accuracy and double faults need gold labels (a `label` per "
                     "document in the input); shown instead is how often each voter disagreed with the run's winner")
        return VoterQuality(len(documents), 0, None, stats, notes=notes)
    if len(gold) < len(documents):
        notes.append(f"accuracy is measured on the {len(gold)} of {len(documents)} documents that have a gold label")
    pairs = [_pair(a, b, documents, said) for a, b in itertools.combinations(order, 2)]
    advice: list[VoterAdvice] = []
    few = [v for v in stats if v.gold_answered < min_documents]
    if few and len(stats) > 1:
        notes.append(f"too few answered gold documents (under {min_documents}) to judge "
                     + ", ".join(str(v.voter) for v in few))
    for v in stats:
        if len(stats) < 2 or v.gold_answered < min_documents:
            continue
        others = [o for o in stats if o.voter != v.voter]
        if _inaccurate(v, accuracy_margin):
            wrong_votes = sum(1 for d, s in zip(documents, said, strict=True)
                              if d.gold is not None and v.voter in s and s[v.voter].state == "answered"
                              and s[v.voter].answer != _key(d.gold) and _key(d.winner) != _key(d.gold))
            text = (f"drop or rewrite {v.voter}: {_pct(v.accuracy or 0.0)} accurate "
                    f"({v.correct} of {v.gold_answered}) against the rest of the panel's "
                    f"{_pct(v.rest_accuracy or 0.0)}; {_why_errors(v, pairs, wrong_votes)}")
            advice.append(VoterAdvice(v.voter, "inaccurate", text))
        elif _abstains(v, others, abstain_share, abstain_margin):
            asked = sum(o.documents for o in others)
            rest = sum(o.abstained for o in others) / asked if asked else 0.0
            advice.append(VoterAdvice(v.voter, "abstains", (
                f"rewrite {v.voter}: it gave no label on {v.abstained} of {v.documents} documents "
                f"({_pct(v.abstain_share)}, the rest of the panel {_pct(rest)}): its prompt leaves it unsure "
                "which label applies")))
    advice.sort(key=lambda a: next(s.accuracy or 0.0 for s in stats if s.voter == a.voter))
    vote_accuracy = sum(1 for d in gold if d.winner is not None and _key(d.winner) == _key(d.gold)) / len(gold)
    judged = sum(1 for v in stats if v.gold_answered >= min_documents) if len(stats) > 1 else 0
    return VoterQuality(len(documents), len(gold), vote_accuracy, stats, pairs, advice, notes, judged)
