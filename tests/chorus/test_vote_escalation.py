"""Planning a vote that escalates: `escalate_to` checked with the voters' models, priced in the estimate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chorus.budget import call_cost, estimate_plan
from chorus.taskfile import describe_task
from chorus.vote import plan_vote
from settings import load_settings
from tests.workflows.test_registry_user_models import OPUS_6
from workflows import registry
from workflows.errors import ConfigError
from workflows.escalation import escalation_request
from workflows.taskfile import Label, VoterSpec, VoteRules, VoteTask

OFFLINE = {"provider": "offline"}
TEXT = "The whole team is locked out since this morning's update, nobody can work. " * 20


@pytest.fixture(autouse=True)
def registry_alone() -> Iterator[None]:
    registry.use_user_models(None)
    yield
    registry.use_user_models(None)


def task(to: str | None, model: str = "claude-haiku-5-5") -> VoteTask:
    return VoteTask(name="t", labels=(Label("urgent"), Label("normal")), voters=(VoterSpec(model=model, count=3),),
                    vote=VoteRules(escalate_to=to))


def test_the_estimate_counts_one_more_call_at_the_stronger_model():
    settings = load_settings(**OFFLINE)
    plain = plan_vote(TEXT, task=task(None), settings=settings)
    escalating = plan_vote(TEXT, task=task("claude-opus-5-5"), settings=settings)
    request = escalation_request(escalating.spec(), escalating.document)
    assert request is not None and request.model == "claude-opus-5-5"
    extra = call_cost(request)
    for lane in ("sync", "batch"):  # the escalated call at the normal price either way: the higher of the two
        with_escalation = estimate_plan(escalating, settings, count=False, lane=lane).total_usd
        assert with_escalation == pytest.approx(estimate_plan(plain, settings, count=False, lane=lane).total_usd
                                                + extra.total_usd)
    assert extra.total_usd > 0 and call_cost(request, lane=True).total_usd < extra.total_usd


def test_task_check_shows_and_prices_the_escalated_call():
    settings = load_settings(**OFFLINE)
    described = describe_task(task("claude-opus-5-5"), settings=settings)
    plain = describe_task(task(None), settings=settings)
    assert [c["model"] for c in described["calls"]][-1] == "claude-opus-5-5"
    assert described["calls"][-1]["name"] == "escalation (when the vote is close): claude-opus-5-5"
    assert described["estimated_cost_per_document"]["total_usd"] > plain["estimated_cost_per_document"]["total_usd"]


@pytest.mark.parametrize(("plan", "message"), [
    (lambda s: plan_vote(TEXT, task=task("claude-opus-55"), settings=s), r"did you mean claude-opus-5-5\?"),
    (lambda s: describe_task(task("claude-opus-55"), settings=s), r"did you mean claude-opus-5-5\?"),
    (lambda s: plan_vote(TEXT, task=task("claude-opus-4-1"), settings=s), "claude-opus-4-1 has no queue"),
    (lambda s: plan_vote(TEXT, task=task("claude-haiku-5-5"), settings=s), "is the model of every voter"),
    (lambda s: plan_vote(TEXT, task=task("claude-opus-5-5", model="claude-opus-5-5"), settings=s),
     "is the model of every voter"),
], ids=["vote: misspelt", "task check: misspelt", "no queue", "the panel's own model", "the panel's own strong model"])
def test_a_bad_escalate_to_is_refused_when_the_vote_is_planned(plan, message):
    with pytest.raises(ConfigError, match=message) as caught:
        plan(load_settings(**OFFLINE))
    assert "vote.escalate_to" in str(caught.value)


def test_a_model_of_the_models_file_can_be_escalated_to(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(OPUS_6)
    settings = load_settings(models_file=str(path), models="claude-haiku-5-5,claude-opus-6", **OFFLINE)
    plan = plan_vote(TEXT, task=task("claude-opus-6"), settings=settings)
    assert plan.task.vote.escalate_to == "claude-opus-6" and plan.config()["spec"]["vote"]["escalate_to"] == \
        "claude-opus-6"
