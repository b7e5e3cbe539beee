"""An orchestrate run's next step is taken from what is stored, once however often it is asked (issue 23,
item 2): the workers of the plan, then the synthesis, then the end. Runs of the batch lane, so each step
only releases its slots (nothing is sent) and the test reads what was added."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from chorus.orchestrate import plan_orchestrate
from chorus.runs import celery_app
from models import OutcomeStatus, Pattern, Run, RunStatus, Session, ensure_schema, get_engine, repo
from models.tables import OutcomeRole, utcnow
from settings import get_settings
from tasks.orchestrate import advance, orchestrate_fields, reap_orchestrate
from tests.conftest import PG_URL
from workflows.calls import CallResult, Usage
from workflows.runspec import orchestrate_spec
from workflows.taskfile import OrchestrateTask, PlanStep, Step

pytestmark = pytest.mark.integration
TASK = OrchestrateTask("review", PlanStep("List the clauses.", max_workers=3), Step("Check it."), Step("Sum up."))
PLAN = {"subtasks": [{"title": f"Clause {i}", "instructions": f"Check clause {i}."} for i in range(1, 5)]}


@pytest.fixture
def db(postgres: str) -> str:
    ensure_schema(PG_URL)
    get_engine(PG_URL)
    return PG_URL


def stored_run(planner: OutcomeStatus = OutcomeStatus.SUCCEEDED, age_s: float = 0.0) -> str:
    """A lane orchestrate run whose planner answered PLAN (four subtasks, one more than max_workers)."""
    plan = plan_orchestrate("Clause 1.\nClause 2.\nClause 3.\nClause 4.", task=TASK)
    with Session.begin() as s:
        run = repo.create_run(s, text=plan.text, external_id="steps", pattern=Pattern.ORCHESTRATE, provider="anthropic",
                              config={**plan.config(), "lane": "batch"}, slots=plan.slots())
        run.status = RunStatus.RUNNING
        run.submitted_at = utcnow() - dt.timedelta(seconds=age_s)
        run.outcomes[0].status = planner
        run.outcomes[0].raw_output = json.dumps(PLAN)
        return run.id


def load(s: Any, run_id: str) -> Run:
    run = repo.load_run(s, run_id)
    assert run is not None
    return run


def finish_released(run_id: str, slots: list[int]) -> None:
    with Session.begin() as s:
        for slot in slots:
            repo.update_slot(s, run_id, slot, status=OutcomeStatus.SUCCEEDED, raw_output=f"finding {slot}",
                             output_tokens=5)


def test_each_step_is_taken_once_however_often_the_callback_runs(db):
    app = celery_app(get_settings())
    run_id = stored_run()

    first = advance(app, run_id)
    again = advance(app, run_id)
    assert first["released"] == [1, 2, 3] and "released" not in again  # max_workers = 3 of the 4 listed
    with Session() as s:
        run = load(s, run_id)
        assert run.result is not None
        assert [(o.slot, o.role, o.title) for o in run.outcomes[1:]] == [
            (n, OutcomeRole.WORKER, f"Clause {n}") for n in (1, 2, 3)]
        assert [t["title"] for t in run.result["subtasks"]] == ["Clause 1", "Clause 2", "Clause 3"]
        assert run.result["dropped"] == ["Clause 4"]

    finish_released(run_id, [1, 2, 3])
    assert advance(app, run_id)["released"] == [4]
    assert advance(app, run_id) == {"run_id": run_id, "status": "running"}
    with Session() as s:
        step = repo.outcomes_by_slot(s, run_id)[4]
        assert (step.role, step.prompt_variant, step.inputs, step.title) == (OutcomeRole.REDUCE, "final", [1, 2, 3],
                                                                             "subtasks 1-3")
    finish_released(run_id, [4])
    done = advance(app, run_id)
    assert done["status"] == "partial" and done["synthesis"] == "finding 4" and done["missing"] == []
    assert "more than max_workers = 3" in done["reason"] and "'Clause 4'" in done["reason"]
    assert advance(app, run_id) == {"run_id": run_id, "status": "partial"}


def test_a_failed_planner_fails_the_run_with_its_reason(db):
    run_id = stored_run(planner=OutcomeStatus.FAILED)
    done = advance(celery_app(get_settings()), run_id)
    assert done["status"] == "failed" and "planner" in done["reason"]


def test_the_reaper_finishes_a_run_past_its_time_as_it_is(db):
    app = celery_app(get_settings())
    run_id = stored_run(age_s=get_settings().lane_expire_s + 60)
    assert reap_orchestrate(app, run_id)["status"] == "failed"  # no worker ran: nothing to synthesize
    with Session() as s:
        assert [o.slot for o in load(s, run_id).outcomes] == [0]  # and none was added


def test_a_planner_reply_that_is_no_plan_fails_its_slot_with_the_reason():
    spec = orchestrate_spec(plan_orchestrate("Clause 1.", task=TASK).config())
    claim = repo.Claim("r", 0, OutcomeRole.PLANNER, "claude-haiku-5-5", None, None, 1, utcnow())
    usage = Usage(10, 5)
    model = "claude-haiku-5-5"
    assert orchestrate_fields(claim, spec, {}, CallResult(json.dumps(PLAN), model, usage)) == {}
    fields = orchestrate_fields(claim, spec, {}, CallResult('{"subtasks": []}', model, usage))
    assert fields["status"] is OutcomeStatus.FAILED and "no subtasks" in fields["error"]
