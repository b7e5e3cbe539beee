"""Adaptive voting (pure): ask voters in waves and stop once the voters not yet asked cannot change
the result.

After each wave the tally so far is checked against the worst case: every voter still to be asked
answers for the strongest rival of the current leader. If the leader keeps the win (and the quorum is
met, or can no longer be met whatever they say), the result is decided and the rest are not called.
This is the stopping rule of Adaptive-Consistency (Aggarwal et al., EMNLP 2023) made exact for a
plurality vote with a quorum: a stop never changes the winner or the status the full panel would
give. A task may also state a looser rule, `stop_when_agree = k`: stop once k voters gave the same
label, even if the rest could in theory outvote them. The task file holds k at or above the quorum
(workflows.taskfile), and a k-way tie stops only where the tie policy gives it to the leader, so such
a stop may change the winner but always ends succeeded.

Waves are as small as they can be while still able to decide: the next wave is the fewest voters who,
all agreeing with the leader, would decide the vote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workflows.voting import TiePolicy

STOP_ALL, STOP_DECIDED = "all", "decided"
STOP_RULES = (STOP_ALL, STOP_DECIDED)


@dataclass(frozen=True)
class Decision:
    decided: bool
    reason: str
    next_wave: int  # voters to ask next (0 when decided or nobody is left)


def decide(
    answers: Sequence[str | None],
    labels: Sequence[str],
    *,
    remaining: int,
    panel: int,
    quorum: int,
    tie_policy: TiePolicy = TiePolicy.NONE,
    stop_when_agree: int | None = None,
) -> Decision:
    """Whether the vote is decided with `answers` in (None: abstained or failed) and `remaining` voters
    not yet asked, and if not, how many to ask next."""
    if remaining <= 0:
        return Decision(True, "every voter has been asked", 0)
    counts = Counter(a for a in answers if a is not None and a in labels)
    valid = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], labels.index(kv[0])))
    lead_label, lead = ranked[0] if ranked else (None, 0)
    rival = ranked[1][1] if len(ranked) > 1 else 0
    # A tie at k would tally as undecided (partial) under tie_policy "none": ask on until it is broken.
    if stop_when_agree is not None and lead >= stop_when_agree and (lead > rival or tie_policy is TiePolicy.FIRST):
        return Decision(True, f"{lead} voters agree on {lead_label} (the task stops at {stop_when_agree})", 0)
    if lead_label is not None and _keeps_win(lead_label, lead, counts, labels, remaining, tie_policy):
        if valid >= quorum:
            return Decision(True, f"{lead_label} leads {lead} to {rival}; the {remaining} voter(s) left "
                                  "cannot change the winner", 0)
        if valid + remaining < quorum:
            return Decision(True, f"the quorum of {quorum} can no longer be met; the {remaining} voter(s) "
                                  "left cannot change the winner", 0)
    return Decision(False, "", next_wave(lead, rival, valid, remaining=remaining, quorum=quorum,
                                         stop_when_agree=stop_when_agree))


def _keeps_win(leader: str, lead: int, counts: Counter[str], labels: Sequence[str], remaining: int,
               tie_policy: TiePolicy) -> bool:
    """The leader still wins if every voter left answers for any one rival (the worst case)."""
    for label in labels:
        if label == leader:
            continue
        worst = counts.get(label, 0) + remaining
        if worst > lead:
            return False
        if worst == lead and not (tie_policy is TiePolicy.FIRST and labels.index(leader) < labels.index(label)):
            return False  # a tie the leader does not win by the tie policy
    return True


def next_wave(lead: int, rival: int, valid: int, *, remaining: int, quorum: int,
              stop_when_agree: int | None = None) -> int:
    """The fewest voters that, all agreeing with the leader, would decide the vote (at least one)."""
    # k more for the leader and remaining - k left for the rival: lead + k > rival + remaining - k.
    needed = max(1, (rival + remaining - lead) // 2 + 1, quorum - valid)
    if stop_when_agree is not None:
        needed = min(needed, max(1, stop_when_agree - lead))
    return min(needed, remaining)


def first_wave(panel: int, quorum: int, leaders: int = 0, stop_when_agree: int | None = None) -> int:
    """How many voters the first wave asks: the cache leaders when there are any (the rest read the
    prefix they write), else the fewest who could decide the vote on their own."""
    if leaders:
        return min(leaders, panel)
    return next_wave(0, 0, 0, remaining=panel, quorum=quorum, stop_when_agree=stop_when_agree)
