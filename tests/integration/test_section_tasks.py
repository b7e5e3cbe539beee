"""The user's own section task: `plan_section` with free instructions or a SectionTask (and options over
it), and runs through real workers on Redis and PostgreSQL with the real anthropic SDK pointed at the
stub, whose structured outputs come from the offline provider: a map step with an `output_schema`
returns schema-valid JSON, merged by a model (`[reduce]`) or joined without one (`merge = "concat"`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from chorus.runs import wait_for_run
from chorus.section import plan_section, submit_section
from workflows.errors import ConfigError
from workflows.taskfile import DEFAULT_SUMMARIZE, SectionTask, Step, VoteTask, labels_task, task_from_json, task_hash

OPTIONS = {
    "type": "object",
    "required": ["options"],
    "additionalProperties": False,
    "properties": {"options": {"type": "array", "items": {
        "type": "object", "required": ["flag", "meaning"], "additionalProperties": False,
        "properties": {"flag": {"type": "string"}, "meaning": {"type": "string"}}}}},
}
MAN = (
    "# Selection\n-a, --all\n    Show every entry, hidden ones too.\n-b, --brief\n    Show one line per entry.\n\n"
    "# Output\n-o FILE\n    Write the listing to FILE.\n\n"
    "# Debugging\n-d, --debug\n    Print what the tool is doing.\n"
)
FLAGS_IN_ORDER = ["-a", "-b", "-o", "-d"]
MAP = "List every command-line option this section documents, with its meaning in one line."
CONCAT = SectionTask(name="man-options", split="headings",
                     map=Step(MAP, model="claude-haiku-5-5", output_schema=OPTIONS), merge="concat")
BY_MODEL = replace(CONCAT, merge=None, reduce=Step("Merge the lists into one, drop duplicates, keep the order of "
                                                   "first appearance.", model="claude-sonnet-5-5", effort="low"))


def calls_of(stub, run_id: str) -> list[dict]:
    return sorted((r for r in stub.requests() if r["run"] == run_id and r["status"] == 200), key=lambda r: r["seq"])


def user_text(body: dict) -> str:
    return "".join(block["text"] for block in body["messages"][0]["content"])


def result_json(run) -> Any:
    assert run.result is not None and run.result["synthesis"] is not None, run.error
    value = json.loads(run.result["synthesis"])
    jsonschema.validate(value, OPTIONS)
    return value


# ----- planning ----------------------------------------------------------------------------------
def test_free_instructions_become_the_map_step_and_the_reduce_step_combines_for_them():
    plan = plan_section(MAN, task="translate to French")
    config = plan.config()
    assert plan.task.map.instructions == "translate to French"
    assert plan.task.reduce is not None and "translate to French" in plan.task.reduce.instructions
    assert config["task"] == "translate to French"  # what runs stored before task files hold
    assert config["task_name"] == "translate to French"
    assert config["task_hash"] == task_hash(plan.task)
    assert task_from_json(config["spec"]) == plan.task
    assert config["map"]["output_schema"] is None and config["merge"] is None
    assert config["reduce"]["model"] == config["model"] == plan.model


def test_summarize_is_the_built_in_summary_task():
    plan = plan_section(MAN)
    assert plan.task.name == "summarize" and plan.task.map.instructions == DEFAULT_SUMMARIZE
    assert plan.config()["task"] == "summarize"


def test_a_section_task_runs_as_written():
    plan = plan_section(MAN, task=BY_MODEL)
    config = plan.config()
    assert plan.task == BY_MODEL
    assert [s.title for s in plan.sections] == ["Selection", "Output", "Debugging"]
    assert (plan.model, plan.reduce_model) == ("claude-haiku-5-5", "claude-sonnet-5-5")
    assert config["map"] == {"instructions": MAP, "model": "claude-haiku-5-5", "effort": None, "output_schema": OPTIONS}
    assert config["reduce"]["output_schema"] == OPTIONS  # the map's, as the reduce step has none of its own
    assert config["reduce"]["effort"] == "low"
    assert config["spec"] == BY_MODEL.to_json() and config["task_name"] == "man-options"
    assert config["synthesize_single"] is False  # one section is its own result: it has the map schema


def test_options_override_the_tasks_fields():
    plan = plan_section(MAN, task=BY_MODEL, how="tokens", max_tokens=20, overlap_tokens=5, model="claude-opus-5-5")
    assert plan.how.value == "tokens" and plan.max_tokens == 20 and plan.overlap_tokens == 5
    assert len(plan.sections) > 3  # the token budget, not the headings
    assert (plan.model, plan.reduce_model) == ("claude-opus-5-5", "claude-opus-5-5")
    assert plan.task.map.output_schema == OPTIONS and plan.task.reduce is not None
    assert plan.task.reduce.instructions == BY_MODEL.reduce.instructions  # type: ignore[union-attr]
    assert plan.config()["task_hash"] != task_hash(BY_MODEL)  # the hash is of the task as it ran


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        (MAN, {"task": 42}, "task must be instructions for each section (str"),
        (MAN, {"task": labels_task("a,b")}, "is a vote task; run it with submit_vote"),
        (MAN, {"task": replace(CONCAT, pattern="vote")}, "is a vote task; run it with submit_vote"),
        (MAN, {"task": "   "}, "the task is empty"),
        ("  \n ", {"task": "summarize"}, "the document is only whitespace"),
        (b"bytes", {}, "the document must be text (str), got bytes"),
        (MAN, {"how": "chapters"}, "unknown split 'chapters'"),
        (MAN, {"max_tokens": 0}, "max_tokens must be a whole number of at least 1, got 0"),
        (MAN, {"overlap_tokens": "2"}, "overlap_tokens must be a whole number of at least 0, got '2'"),
        (MAN, {"model": "claude-nope-1"}, "map: model 'claude-nope-1' is not in the model registry"),
        (MAN, {"model": "claude-opus-4-1"}, "model claude-opus-4-1 has no queue; add it to CHORUS_MODELS"),
        (MAN, {"task": replace(CONCAT, map=replace(CONCAT.map, effort="turbo"))},
         "map: effort 'turbo' is not offered by claude-haiku-5-5"),
        (MAN, {"task": replace(CONCAT, map=replace(CONCAT.map, model="claude-haiku-4-5", effort="low"))},
         "map: claude-haiku-4-5 takes no effort setting"),
        (MAN, {"task": replace(CONCAT, map=Step(MAP))}, "field `merge`: merge = \"concat\" joins JSON arrays"),
        (MAN, {"task": replace(CONCAT, map=Step(MAP, output_schema={"type": "list"}))},
         "field `map.output_schema.type`: unknown JSON type 'list'"),
        (MAN, {"task": replace(CONCAT, map=Step(MAP, output_schema={"type": "array", "uniqueItems": "yes"}))},
         "field `map.output_schema.uniqueItems`: array constraints beyond minItems 0 or 1 are not supported"),
        (MAN, {"task": replace(CONCAT, map=Step(MAP, output_schema={"type": "array", "items": {"type": "string"},
                                                                    "minItems": "one"}))},
         "field `map.output_schema.minItems`: structured outputs support minItems 0 or 1 only, got 'one'"),
        (MAN, {"task": replace(BY_MODEL, reduce=None, merge=None)}, "field `reduce`: say how to combine the sections"),
        (MAN, {"task": replace(BY_MODEL, map=None)},  # type: ignore[arg-type]  # a wrong type, on purpose
         "field `map`: must be a Step("),
    ],
)
def test_bad_input_is_a_config_error_naming_the_problem(text, options, message):
    with pytest.raises(ConfigError) as caught:
        plan_section(text, **options)
    assert message in str(caught.value)


def test_a_vote_task_object_is_refused_by_type_not_only_by_pattern():
    task = labels_task("a,b")
    assert isinstance(task, VoteTask)
    with pytest.raises(ConfigError, match="submit_vote"):
        submit_section(MAN, task=task)  # type: ignore[arg-type]  # the wrong kind of task, on purpose


# ----- end to end ------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_schema_task_merged_by_a_model_returns_schema_valid_json(workers, stub):
    stub.reset()
    run = wait_for_run(submit_section(MAN, task=BY_MODEL), timeout=60)

    assert run.status == "succeeded", run.error
    value = result_json(run)
    assert [o["flag"] for o in value["options"]] == FLAGS_IN_ORDER
    assert run.task == {"name": "man-options", "hash": task_hash(BY_MODEL)}
    steps = [o for o in run.outcomes if o.role == "synthesis"]
    assert len(steps) == 1 and steps[0].model == "claude-sonnet-5-5"
    calls = calls_of(stub, run.id)
    maps, reduces = calls[:-1], calls[-1:]
    assert sorted(int(c["slot"]) for c in maps) == [0, 1, 2]
    for call in calls:
        assert call["body"]["output_config"]["format"] == {"type": "json_schema", "schema": OPTIONS}
        assert not {"temperature", "top_p", "top_k", "tool_choice"} & set(call["body"])
    for call in maps:
        assert call["body"]["model"] == "claude-haiku-5-5" and MAP in user_text(call["body"])
        assert "effort" not in call["body"]["output_config"]
    (synthesis,) = reduces
    assert synthesis["body"]["model"] == "claude-sonnet-5-5"
    assert synthesis["body"]["output_config"]["effort"] == "low"
    assert "<synthesis>" in user_text(synthesis["body"]) and "drop duplicates" in user_text(synthesis["body"])


@pytest.mark.integration
def test_a_concat_task_joins_the_sections_json_in_order_without_a_synthesis_call(workers, stub):
    stub.reset()
    run = wait_for_run(submit_section(MAN, task=CONCAT), timeout=60)

    assert run.status == "succeeded", run.error
    value = result_json(run)
    assert [o["flag"] for o in value["options"]] == FLAGS_IN_ORDER
    assert run.result is not None and run.result["synthesis_steps"] == 0 and run.result["missing"] == []
    assert [o.role for o in run.outcomes] == ["section"] * 3
    calls = calls_of(stub, run.id)
    assert sorted(int(c["slot"]) for c in calls) == [0, 1, 2]  # one call per section, no synthesis
    for call in calls:
        assert call["body"]["output_config"]["format"] == {"type": "json_schema", "schema": OPTIONS}
        assert "<synthesis>" not in user_text(call["body"])
    # Each section's stored reply is the JSON its part of the result came from.
    per_section = [json.loads(o.raw_output or "")["options"] for o in run.outcomes]
    assert [item for part in per_section for item in part] == value["options"]


@pytest.mark.integration
def test_a_concat_run_with_a_failed_section_is_partial_and_names_it(workers, stub):
    stub.reset()
    stub.set_rules([{"slot": "1", "status": 400}])  # a permanent error: not retried
    try:
        run = wait_for_run(submit_section(MAN, task=CONCAT), timeout=60)
    finally:
        stub.reset()

    assert run.status == "partial"
    assert run.error == "section 2 missing"
    assert run.result is not None and run.result["missing"] == [2]
    assert [o["flag"] for o in result_json(run)["options"]] == ["-a", "-b", "-d"]


@pytest.mark.integration
def test_a_reply_cut_at_max_tokens_fails_its_section_and_keeps_the_paid_usage(workers, stub):
    stub.reset()
    tiny = replace(CONCAT, map=replace(CONCAT.map, max_output_tokens=5))
    run = wait_for_run(submit_section(MAN, task=tiny), timeout=60)

    assert run.status == "failed"
    assert run.error == "no section succeeded (sections 1, 2 and 3 missing)"
    assert run.result is not None and run.result["synthesis"] is None
    for o in run.outcomes:
        assert o.status == "failed" and o.attempts == 1  # a paid reply that is no result is not retried
        assert o.error == "the reply was cut at max_tokens before the JSON was complete; raise max_output_tokens"
        assert o.input_tokens > 0 and o.output_tokens == 5
    assert [c["body"]["max_tokens"] for c in calls_of(stub, run.id)] == [5, 5, 5]
