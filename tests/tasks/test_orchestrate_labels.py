"""Flower names an orchestrate worker's call by its subtask (issue 23, item 2)."""

from __future__ import annotations


def test_a_workers_call_shows_the_task_name_and_its_subtasks_title_in_flowers_args():
    from models.tables import OutcomeRole
    from settings import get_settings
    from tasks import dispatch, orchestrate
    from tasks.labels import describe_call, parameter_names
    from worker import make_app

    app = make_app(get_settings(), set_as_current=False)
    label = orchestrate._label("contract-review", "Indemnity clause")
    sig = dispatch.call_signature(app, OutcomeRole.WORKER, "run-1", 3, "claude-haiku-5-5", label)
    assert sig.task == orchestrate.ORCHESTRATE_CALL
    shown = describe_call(parameter_names(orchestrate.call), sig.args, sig.kwargs)
    assert shown == "slot=3 model=claude-haiku-5-5 task=contract-review: Indemnity clause run_id=run-1"
