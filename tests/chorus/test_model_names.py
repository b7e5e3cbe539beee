"""Wherever a model is named (a vote's models, a section's, a task file's voters and steps, the default
model), a name the registry does not know is refused with the closest names, before anything is
written; a model of the user's models file is accepted and priced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chorus.budget import estimate_plan
from chorus.section import plan_section
from chorus.taskfile import describe_task
from chorus.vote import plan_vote
from settings import load_settings
from tests.workflows.test_registry_user_models import OPUS_6
from workflows import registry
from workflows.errors import ConfigError
from workflows.taskfile import Label, SectionTask, Step, VoterSpec, VoteTask

OFFLINE = {"provider": "offline"}
MAN = "# NAME\nls - list\n\n# OPTIONS\n-a  all entries\n\n# SEE ALSO\ndir(1)\n"


@pytest.fixture(autouse=True)
def registry_alone() -> Iterator[None]:
    registry.use_user_models(None)
    yield
    registry.use_user_models(None)


def task_with(model: str) -> VoteTask:
    return VoteTask(name="t", labels=(Label("a"), Label("b")), voters=(VoterSpec(name="judge", model=model),))


@pytest.mark.parametrize("plan", [
    lambda s: plan_vote("Some text.", "a,b", models=["claude-sonet-5-5"], settings=s),
    lambda s: plan_vote("Some text.", task=task_with("claude-sonet-5-5"), settings=s),
    lambda s: plan_section(MAN, task="summarize", model="claude-sonet-5-5", settings=s),
    lambda s: plan_section(MAN, task=SectionTask(name="s", map=Step("list options"), merge=None,
                                                 reduce=Step("merge", model="claude-sonet-5-5")), settings=s),
    lambda s: describe_task(task_with("claude-sonet-5-5"), settings=s),
], ids=["vote --model", "vote task voter", "section --model", "section task reduce", "task check"])
def test_a_misspelt_model_is_refused_with_did_you_mean_wherever_it_is_named(plan):
    with pytest.raises(ConfigError, match="did you mean claude-sonnet-5-5\\?") as caught:
        plan(load_settings(**OFFLINE))
    assert "`chorus models`" in str(caught.value)
    assert "add them to CHORUS_MODELS" not in str(caught.value)  # the old advice led to abstaining voters


def test_a_misspelt_default_model_is_named_as_the_setting():
    settings = load_settings(default_model="claude-haiku-55", **OFFLINE)
    with pytest.raises(ConfigError, match=r"model 'claude-haiku-55' \(CHORUS_DEFAULT_MODEL\) is not in the model "
                                          r"registry; did you mean claude-haiku-5-5\?"):
        plan_vote("Some text.", "a,b", settings=settings)


def test_a_registry_model_without_a_queue_still_says_to_add_it_to_chorus_models():
    with pytest.raises(ConfigError, match="claude-opus-4-1 have no queue; add them to CHORUS_MODELS"):
        plan_vote("Some text.", "a,b", models=["claude-opus-4-1"], settings=load_settings(**OFFLINE))


def test_a_model_of_the_models_file_votes_and_its_estimate_has_a_price(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(OPUS_6)
    with pytest.raises(ConfigError, match="not in the model registry"):
        plan_vote("Some text.", "a,b", models=["claude-opus-6"], settings=load_settings(**OFFLINE))

    settings = load_settings(models_file=str(path), **OFFLINE)
    plan = plan_vote("Some text.", "a,b", voters=3, models=["claude-opus-6"], settings=settings)

    assert {v.model for v in plan.panel} == {"claude-opus-6"}
    cost = estimate_plan(plan, settings, count=False)
    assert cost.total_usd > 0
    described = describe_task(task_with("claude-opus-6"), settings=settings)
    assert described["estimated_cost_per_document"]["total_usd"] > 0
