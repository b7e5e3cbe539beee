"""What Flower shows as a task's arguments (tasks/labels.py): named, short, never the payload."""

from __future__ import annotations

import pytest

from tasks.labels import describe_call, describe_value


@pytest.mark.parametrize(
    ("names", "args", "kwargs", "shown"),
    [
        (["run_id", "slot", "model"], ("ab12", 1, "claude-haiku-4-5"), {}, "slot=1 model=claude-haiku-4-5 run_id=ab12"),
        (["results", "run_id"], ([{"slot": i} for i in range(64)], "ab12"), {}, "results=<64 items> run_id=ab12"),
        (["run_id"], ("ab12", "extra"), {}, "arg1=extra run_id=ab12"),
        (["run_id", "slot"], ("ab12",), {"slot": 3}, "slot=3 run_id=ab12"),
        (["id", "batch_id", "name"], ("r1", "b1", "nightly"), {}, "name=nightly id=r1 batch_id=b1"),
        ([], (), {}, ""),
    ],
)
def test_a_call_is_shown_as_its_parameters_by_name(names, args, kwargs, shown):
    assert describe_call(names, args, kwargs) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "None"),
        (2.5, "2.5"),
        ({"a": 1, "b": 2}, "<2 keys>"),
        ((1, 2, 3), "<3 items>"),
        ("x" * 200, "x" * 79 + "…"),
    ],
)
def test_a_value_is_shown_short(value, shown):
    assert describe_value(value) == shown


def test_a_voters_call_shows_its_slot_model_and_task_name_in_flowers_args():
    from models.tables import OutcomeRole
    from settings import get_settings
    from tasks import dispatch, vote
    from tasks.labels import parameter_names
    from worker import make_app

    app = make_app(get_settings(), set_as_current=False)
    config = {"task_name": "ticket-urgency", "voters": [{"slot": 0, "model": "claude-haiku-5-5"}]}
    _, header, _ = vote.vote_messages(app, "run-1", config, "cb")
    (sig,) = header
    assert sig.kwargs == {"task": "ticket-urgency"}
    shown = describe_call(parameter_names(vote.call), sig.args, sig.kwargs)
    assert shown == "slot=0 model=claude-haiku-5-5 task=ticket-urgency run_id=run-1"
    plain = dispatch.call_signature(app, OutcomeRole.VOTER, "run-1", 0, "claude-haiku-5-5")
    assert plain.kwargs == {}  # a run stored before task files: no label, the same call
