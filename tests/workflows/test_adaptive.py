"""The adaptive stopping rule: it stops only when the voters left cannot change what the full panel
would decide, and its waves are the fewest voters that could decide."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workflows.adaptive import decide, first_wave, next_wave
from workflows.taskfile import TIE_POLICIES, Label, TaskFileError, VoterSpec, VoteRules, VoteTask, check_vote_task
from workflows.voting import TiePolicy, VoteStatus, default_quorum, tally

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


def test_a_tie_at_stop_when_agree_stops_only_where_the_tie_policy_decides_it():
    # A first wave of two cache leaders split 1-1, k = 1: a stop would tally as an undecided tie.
    assert not decide(["positive", "negative"], LABELS, remaining=1, panel=3, quorum=1, stop_when_agree=1).decided
    assert decide(["positive", "negative"], LABELS, remaining=1, panel=3, quorum=1, stop_when_agree=1,
                  tie_policy=TiePolicy.FIRST).decided
    assert decide(["positive", "negative", "positive"], LABELS, remaining=3, panel=6, quorum=1,
                  stop_when_agree=1).decided


# ----- every rule set a task file accepts: an early stop never ends worse than the full panel -------
@st.composite
def accepted_rules(draw: st.DrawFn) -> VoteTask:
    """An adaptive vote task the task-file checks accept (a draw they refuse is thrown away)."""
    panel = draw(st.integers(1, 9))
    rules = VoteRules(quorum=draw(st.none() | st.integers(1, panel)), tie_policy=draw(st.sampled_from(TIE_POLICIES)),
                      low_agreement_below=draw(st.sampled_from([0.01, 0.5, 0.6, 1.0])), stop="decided",
                      stop_when_agree=draw(st.none() | st.integers(1, panel)))
    labels = tuple(Label(x) for x in LABELS[: draw(st.integers(2, 3))])
    try:
        return check_vote_task(VoteTask(name="t", labels=labels, voters=(VoterSpec(count=panel),), vote=rules))
    except TaskFileError:
        assume(False)
        raise


def run_adaptively(task: VoteTask, sheet: list[str | None], leaders: int) -> list[str | None]:
    """The answers an adaptive vote collects, as tasks/vote.py asks: a first wave (the cache leaders,
    when there are any), then `decide`'s waves until it stops."""
    panel, rules = task.panel_size, task.vote
    quorum = rules.quorum or default_quorum(panel)
    asked = sheet[: first_wave(panel, quorum, leaders, rules.stop_when_agree)]
    while len(asked) < panel:
        d = decide(asked, task.label_names, remaining=panel - len(asked), panel=panel, quorum=quorum,
                   tie_policy=TiePolicy(rules.tie_policy), stop_when_agree=rules.stop_when_agree)
        if d.decided:
            break
        asked = sheet[: len(asked) + d.next_wave]
    return asked


def tally_of(task: VoteTask, answers: list[str | None], skipped: int = 0):
    rules = task.vote
    return tally(answers, task.label_names, skipped=skipped, quorum=rules.quorum,
                 tie_policy=TiePolicy(rules.tie_policy), low_agreement_below=rules.low_agreement_below)


@settings(max_examples=400, deadline=None)
@given(task=accepted_rules(), data=st.data())
def test_an_accepted_rule_set_stopping_early_on_unanimous_answers_succeeds(task, data):
    label = data.draw(st.sampled_from(task.label_names))
    leaders = data.draw(st.integers(0, task.panel_size))
    sheet: list[str | None] = [label] * task.panel_size
    asked = run_adaptively(task, sheet, leaders)
    early = tally_of(task, asked, skipped=task.panel_size - len(asked))
    assert tally_of(task, sheet).status is VoteStatus.SUCCEEDED
    assert (early.winner, early.status) == (label, VoteStatus.SUCCEEDED), (task.vote, task.panel_size, asked)


@settings(max_examples=400, deadline=None)
@given(task=accepted_rules(), data=st.data())
def test_an_accepted_rule_set_never_stops_into_a_partial_the_full_panel_would_not_give(task, data):
    """Any answers (None: an abstention or a failure): a stop by the exact rule gives the full panel's
    winner and status; a stop by stop_when_agree may change the winner (a looser rule, stated by the
    user) but ends succeeded."""
    choices = st.sampled_from([*task.label_names, None])
    sheet = data.draw(st.lists(choices, min_size=task.panel_size, max_size=task.panel_size))
    leaders = data.draw(st.integers(0, task.panel_size))
    asked = run_adaptively(task, sheet, leaders)
    early = tally_of(task, asked, skipped=task.panel_size - len(asked))
    full = tally_of(task, sheet)
    assert early.status is VoteStatus.SUCCEEDED or (early.winner, early.status) == (full.winner, full.status), (
        task.vote, task.panel_size, sheet, asked)
    if task.vote.stop_when_agree is None:
        assert (early.winner, early.status) == (full.winner, full.status)
