"""The adaptive stopping rule: it stops only when the voters left cannot change what the full panel
would decide, and its waves are the fewest voters that could decide."""

from __future__ import annotations

import itertools

import pytest

from workflows.adaptive import decide, first_wave, next_wave
from workflows.voting import TiePolicy, tally

LABELS = ("positive", "negative", "neutral")


def test_a_unanimous_majority_decides_a_five_voter_vote():
    d = decide(["negative"] * 3, LABELS, remaining=2, panel=5, quorum=3)
    assert d.decided and "cannot change the winner" in d.reason


def test_a_split_wave_asks_for_more_and_says_how_many():
    d = decide(["negative", "negative", "positive"], LABELS, remaining=2, panel=5, quorum=3)
    assert not d.decided and d.next_wave == 1  # one more "negative" makes 3 to 1 with 1 left
    d = decide(["negative", "positive"], LABELS, remaining=1, panel=3, quorum=2)
    assert not d.decided and d.next_wave == 1


def test_a_lead_the_rest_could_still_tie_is_not_decided_unless_the_tie_policy_gives_it_the_win():
    answers = ["positive", "positive", "negative"]
    assert not decide(answers, LABELS, remaining=1, panel=4, quorum=3).decided
    # With "first", a tie goes to the label listed first: positive is, so 2-2 still leaves positive ahead.
    assert decide(answers, LABELS, remaining=1, panel=4, quorum=3, tie_policy=TiePolicy.FIRST).decided
    flipped = ["negative", "negative", "positive"]
    assert not decide(flipped, LABELS, remaining=1, panel=4, quorum=3, tie_policy=TiePolicy.FIRST).decided


def test_a_lead_below_quorum_keeps_asking_until_the_quorum_cannot_be_met():
    # 2 valid answers agree but 3 are left: a rival could still reach 3, so not decided.
    assert not decide(["neutral", "neutral", None], LABELS, remaining=3, panel=6, quorum=4).decided
    # 3 abstentions and failures, 1 agreeing answer, 1 left, quorum 4: it can never be met; the winner
    # cannot change (a rival reaches 1 at most, and "first" gives positive the tie).
    d = decide([None, None, None, "positive"], LABELS, remaining=1, panel=5, quorum=4, tie_policy=TiePolicy.FIRST)
    assert d.decided and "quorum" in d.reason


def test_stop_when_agree_stops_at_k_agreeing_even_if_the_rest_could_outvote():
    answers = ["positive", "positive"]
    assert not decide(answers, LABELS, remaining=5, panel=7, quorum=4).decided
    assert decide(answers, LABELS, remaining=5, panel=7, quorum=4, stop_when_agree=2).decided


def test_waves_are_the_fewest_voters_that_could_decide():
    assert first_wave(5, 3) == 3
    assert first_wave(9, 5) == 5
    assert first_wave(5, 3, leaders=1) == 1  # the cache leader goes alone first
    assert first_wave(7, 4, stop_when_agree=2) == 2
    assert next_wave(1, 0, 1, remaining=4, quorum=3) == 2  # after a leader: 2 more agreeing make 3 to 0 with 2 left
    assert next_wave(0, 0, 0, remaining=2, quorum=1) == 2
    assert next_wave(3, 3, 6, remaining=1, quorum=4) == 1


@pytest.mark.parametrize("panel", [3, 4, 5])
def test_stopping_never_changes_the_full_panels_winner_or_status(panel):
    """Every order of every answer sheet (None = an abstention): wherever the rule stops, the tally of the
    answers so far plus skipped voters names the same winner and status as the tally of all answers."""
    choices = (*LABELS[:2], None)
    for sheet in itertools.product(choices, repeat=panel):
        for policy in TiePolicy:
            quorum = panel // 2 + 1
            full = tally(list(sheet), LABELS, quorum=quorum, tie_policy=policy)
            asked: list[str | None] = []
            while len(asked) < panel:
                d = decide(asked, LABELS, remaining=panel - len(asked), panel=panel, quorum=quorum, tie_policy=policy)
                if d.decided:
                    break
                asked.extend(sheet[len(asked): len(asked) + d.next_wave])
            early = tally(asked, LABELS, skipped=panel - len(asked), quorum=quorum, tie_policy=policy)
            assert (early.winner, early.status) == (full.winner, full.status), (sheet, policy, asked)
