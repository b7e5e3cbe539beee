"""Orchestrator-worker, the pure core (issue 23, item 2): the task file, the planner's schema and request,
reading its plan, the workers' and the synthesis' requests, the run spec and its estimate's synthesis."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.budget import estimate_orchestrate, synthesis_costs
from chorus.testing.stub.outputs import schema_problem as stub_schema_problem
from tests.workflows.test_synthesis_bound import Item, measured_for, worker_run_cost
from workflows import schema_subset
from workflows.calls import Attachment
from workflows.orchestrating import (
    PLANNER_SYSTEM,
    TITLE_MAX,
    WORKER_SYSTEM,
    Subtask,
    SubtaskPlan,
    part_label,
    plan_schema,
    read_plan,
)
from workflows.runspec import DocumentSpec, orchestrate_spec, orchestrate_spec_of
from workflows.sectioning import Part
from workflows.taskfile import (
    MAX_WORKERS,
    OrchestrateTask,
    PlanStep,
    Step,
    TaskFileError,
    check_orchestrate_task,
    parse_task,
    task_from_json,
    task_hash,
)
from workflows.tokens import marks_prefix, upper_request_tokens

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contract-review.toml"
SONNET, HAIKU = "claude-sonnet-5-5", "claude-haiku-5-5"
TASK = """
name = "contract-review"
pattern = "orchestrate"
[plan]
model = "claude-sonnet-5-5"
instructions = "List the clauses a lawyer must check."
max_workers = 12
[work]
model = "claude-haiku-5-5"
instructions = "Check the clause of your subtask."
output_schema = { type = "object", required = ["risk"], properties = { risk = { type = "string" } } }
[reduce]
instructions = "Write the review."
"""
CONTRACT = "\n".join(f"Clause {i}: the supplier delivers within {i} days or pays a penalty of {i} percent."
                     for i in range(1, 40))


def task(text: str = TASK) -> OrchestrateTask:
    parsed = parse_task(tomllib.loads(text))
    assert isinstance(parsed, OrchestrateTask)
    return parsed


def spec_of(t: OrchestrateTask | None = None, *, plan=SONNET, work=HAIKU, reduce=SONNET, budget=8000):
    return orchestrate_spec_of(t or task(), plan_model=plan, work_model=work, reduce_model=reduce,
                               synthesis_budget_tokens=budget)


def reply(*subtasks: dict) -> str:
    return json.dumps({"subtasks": list(subtasks)})


def sub(title: str = "Indemnity", instructions: str = "Check the indemnity clause.", **more: str) -> dict:
    return {"title": title, "instructions": instructions, **more}


# ----- the task file ---------------------------------------------------------------------------------
def test_an_orchestrate_file_reads_plan_work_and_reduce():
    t = task()
    assert t.pattern == "orchestrate" and t.name == "contract-review"
    assert t.plan == PlanStep("List the clauses a lawyer must check.", model=SONNET, max_workers=12)
    assert t.work.model == HAIKU and t.work.output_schema is not None
    assert t.work.output_schema["additionalProperties"] is False  # closed, as a section's map schema is
    assert t.reduce == Step("Write the review.")


def test_the_shipped_orchestrate_example_parses():
    t = parse_task(tomllib.loads(EXAMPLE.read_text()), source=str(EXAMPLE))
    assert isinstance(t, OrchestrateTask) and t.plan.max_workers == 12


def test_a_stored_orchestrate_task_reads_back_as_the_same_task_and_hash():
    t = task()
    back = task_from_json(json.loads(json.dumps(t.to_json())))
    assert back == t and task_hash(back) == task_hash(t)
    assert task_hash(task(TASK.replace("max_workers = 12", "max_workers = 11"))) != task_hash(t)
    assert task_hash(task(TASK.replace("\n[reduce]", "\n# a comment\n[reduce]"))) == task_hash(t)


def test_max_workers_has_a_default_and_is_stored():
    t = task(TASK.replace("max_workers = 12\n", ""))
    assert t.plan.max_workers == 8
    assert t.to_json()["plan"]["max_workers"] == 8


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda t: t.replace("max_workers = 12", "max_workers = 0"), "plan.max_workers", "from 1 to 100"),
    (lambda t: t.replace("max_workers = 12", f"max_workers = {MAX_WORKERS + 1}"), "plan.max_workers",
     "the most subtasks one plan may run"),
    (lambda t: t.replace("max_workers = 12", 'max_workers = "12"'), "plan.max_workers", "whole number"),
    (lambda t: t.replace("max_workers = 12", "max_workers = true"), "plan.max_workers", "whole number"),
    (lambda t: t.replace("max_workers = 12", "max_workers = 2.5"), "plan.max_workers", "whole number"),
    (lambda t: t.replace("max_workers = 12", "output_schema = { type = \"object\" }"), "plan.output_schema",
     "unknown field"),
    (lambda t: t.replace('[plan]\nmodel = "claude-sonnet-5-5"\ninstructions = "List the clauses a lawyer must '
                         'check."', "[plan]"), "plan.instructions", "missing"),
    (lambda t: t.replace('instructions = "Check the clause of your subtask."', 'instructions = "  "'),
     "work.instructions", "empty"),
    (lambda t: t.replace("[reduce]\ninstructions = \"Write the review.\"\n", ""), "reduce", "needs a [reduce]"),
    (lambda t: t.replace("[work]", "[labour]"), "labour", "unknown field"),
    (lambda t: t.replace("properties = { risk = { type = \"string\" } }",
                         "properties = { risk = { type = \"string\", maxLength = 5 } }"),
     "work.output_schema.properties.risk.maxLength", "string constraints"),
    (lambda t: t.replace("[reduce]\n", "[reduce]\nmax_output_tokens = 0\n"), "reduce.max_output_tokens",
     "at least 1"),
    (lambda t: t.replace('pattern = "orchestrate"', 'pattern = "orchestra"'), "pattern", "orchestrate"),
])
def test_a_bad_orchestrate_file_names_its_field(change, field, words):
    with pytest.raises(TaskFileError) as caught:
        parse_task(tomllib.loads(change(TASK)), source="review.toml")
    assert caught.value.field == field, str(caught.value)
    assert words in str(caught.value) and str(caught.value).startswith("review.toml: ")


def test_a_plan_table_written_as_a_value_is_refused_with_the_fix():
    with pytest.raises(TaskFileError, match="write \\[plan\\] with instructions"):
        parse_task({"name": "x", "pattern": "orchestrate", "plan": "list them", "work": {"instructions": "a"},
                    "reduce": {"instructions": "b"}})


def test_a_python_orchestrate_task_is_checked_like_a_file():
    good = OrchestrateTask("review", PlanStep("List them.", max_workers=3), Step("Check it."), Step("Sum up."))
    assert check_orchestrate_task(good) is good
    with pytest.raises(TaskFileError, match="plan.max_workers"):
        check_orchestrate_task(replace(good, plan=PlanStep("List them.", max_workers=0)))
    with pytest.raises(TaskFileError, match="must be a Step"):
        check_orchestrate_task(replace(good, work="Check it."))  # type: ignore[arg-type]
    with pytest.raises(TaskFileError, match="work.output_schema.maxItems"):
        check_orchestrate_task(replace(good, work=Step("Check it.", output_schema={"type": "array", "maxItems": 3})))


# ----- the planner -----------------------------------------------------------------------------------
def test_the_planner_schema_is_one_structured_outputs_take():
    schema = plan_schema(12)
    assert schema_subset.first_problem(schema) is None  # chorus's reading of Anthropic's limits
    assert stub_schema_problem(schema) is None  # the stub's, written from the same page independently
    subtasks = schema["properties"]["subtasks"]
    assert subtasks["minItems"] == 1 and "maxItems" not in subtasks  # the API takes minItems 0 or 1 only
    assert "at most 12" in subtasks["description"]
    assert subtasks["items"]["required"] == ["title", "instructions"]
    assert set(subtasks["items"]["properties"]) == {"title", "instructions", "focus"}


def test_the_planner_reads_the_document_once_first_and_asks_for_the_schema():
    spec = spec_of()
    request = spec.planner_request(CONTRACT)
    assert request.model == SONNET and request.system == PLANNER_SYSTEM
    assert "".join(request.user_blocks).count(CONTRACT) == 1 and CONTRACT in request.user_blocks[0]
    assert "at most 12" in request.user_blocks[1] and "List the clauses a lawyer must check." in request.user_blocks[1]
    assert request.output_schema == plan_schema(12)
    assert request.cache_blocks == 0  # no other call sends the planner's prompt: a write would never be read
    assert request.max_tokens >= 12 * 300


def test_a_planner_without_structured_outputs_gets_the_schema_in_its_prompt():
    request = spec_of(plan="claude-3-haiku").planner_request(CONTRACT)
    assert request.output_schema is None
    assert "<output_schema>" in request.user_blocks[-1] and '"subtasks"' in request.user_blocks[-1]


def test_a_pdf_is_the_planners_first_block():
    pdf = Attachment(kind="pdf", media_type="application/pdf", data=b"%PDF-1.7", text="Clause 1.", pages=1,
                     image_tokens=1600, sha256="ab")
    request = spec_of().planner_request(pdf)
    assert request.attachments == (pdf,) and len(request.user_blocks) == 1


@pytest.mark.parametrize(("text", "stop", "problem"), [
    ("not json", "end_turn", "the planner's reply is no plan: the reply is not valid JSON"),
    (reply(), "end_turn", "the planner listed no subtasks"),
    (reply(sub(instructions="   ")), "end_turn", "subtask 1 ('Indemnity') has empty instructions"),
    (json.dumps({"subtasks": [{"title": "a"}]}), "end_turn", "'instructions' is a required property"),
    (json.dumps({"subtasks": [sub(owner="me")]}), "end_turn", "Additional properties are not allowed"),
    (json.dumps({"tasks": []}), "end_turn", "'subtasks' is a required property"),
    (reply(sub())[:-5], "max_tokens", "cut at max_tokens"),
    ("I will not plan this.", "refusal", "declined"),
])
def test_a_reply_that_is_no_plan_says_why(text, stop, problem):
    plan, why = read_plan(text, stop, max_workers=3)
    assert plan is None and why is not None and problem in why, why


def test_a_good_plan_reads_in_order_with_titles_and_focus():
    text = "```json\n" + reply(sub(), sub("  Term\nand   end ", "Check the term.", focus="Clause 9"),
                               sub("", "Check the rest.", focus="  ")) + "\n```"
    plan, why = read_plan(text, "end_turn", max_workers=3)
    assert why is None and plan is not None
    assert plan.subtasks == (Subtask("Indemnity", "Check the indemnity clause."),
                             Subtask("Term and end", "Check the term.", "Clause 9"),
                             Subtask("subtask 3", "Check the rest."))
    assert plan.dropped == () and plan.note is None


def test_a_plan_of_more_than_max_workers_runs_the_first_and_names_the_rest():
    items = [sub(f"Clause {i}", f"Check clause {i}.") for i in range(1, 10)]
    plan, why = read_plan(reply(*items), "end_turn", max_workers=3)
    assert why is None and plan is not None
    assert [s.title for s in plan.subtasks] == ["Clause 1", "Clause 2", "Clause 3"]
    assert plan.dropped == tuple(f"Clause {i}" for i in range(4, 10)) and plan.listed == 9
    assert plan.note is not None and plan.note.startswith(
        "the planner listed 9 subtasks, more than max_workers = 3: subtasks 1-3 are run, 4-9 are not ('Clause 4'")
    assert "and 1 more" in plan.note and "raise [plan] max_workers" in plan.note
    # Empty instructions beyond the limit do not matter: that subtask is not run.
    plan, why = read_plan(reply(*items[:3], sub("Extra", "")), "end_turn", max_workers=3)
    assert why is None and plan is not None and plan.dropped == ("Extra",)


def test_a_long_title_is_cut_and_a_plan_round_trips_through_json():
    plan, _ = read_plan(reply(sub("x" * 500)), "end_turn", max_workers=1)
    assert plan is not None and len(plan.subtasks[0].title) == TITLE_MAX and plan.subtasks[0].title.endswith("…")
    stored = SubtaskPlan((Subtask("a", "b", "c"), Subtask("d", "e")), ("f",))
    assert SubtaskPlan.from_json(json.loads(json.dumps(stored.to_json()))) == stored


def test_a_provider_that_is_no_model_is_reported_in_its_own_words():
    assert read_plan("", "end_turn", 3, no_answer="the offline scorer could not decide") == (
        None, "the offline scorer could not decide")


# ----- the workers and the synthesis -----------------------------------------------------------------
PLAN = SubtaskPlan((Subtask("Indemnity", "Check the indemnity clause.", "Clause 7"),
                    Subtask("Term", "Check the term."), Subtask("Penalties", "Check the penalties.")))


def test_every_worker_sends_the_same_document_prefix_once_and_its_own_subtask_after_it():
    spec = spec_of()
    requests = [spec.worker_request(PLAN, i, CONTRACT) for i in range(3)]
    assert len({(r.system, r.prefix_request().user_blocks, json.dumps(r.output_schema)) for r in requests}) == 1
    for i, r in enumerate(requests):
        assert r.system == WORKER_SYSTEM and r.model == HAIKU and r.cache_blocks == 1
        assert "".join(r.user_blocks).count(CONTRACT) == 1 and CONTRACT in r.user_blocks[0]
        assert f'<subtask n="{i + 1}" of="3">' in r.user_blocks[1]
        assert PLAN.subtasks[i].instructions in r.user_blocks[1] and PLAN.subtasks[i].title in r.user_blocks[1]
        assert r.output_schema == task().work.output_schema  # Haiku 5.5 has structured outputs
    assert "<focus>\nClause 7\n</focus>" in requests[0].user_blocks[1] and "<focus>" not in requests[1].user_blocks[1]


def test_the_workers_prefix_is_cacheable_once_long_enough_and_a_lone_worker_marks_nothing():
    spec = spec_of()
    long_document = CONTRACT * 20
    assert marks_prefix(spec.worker_request(PLAN, 0, long_document))
    lone = SubtaskPlan(PLAN.subtasks[:1])
    assert spec.worker_request(lone, 0, long_document).cache_blocks == 0
    prewarm = spec.prewarm_request(PLAN, long_document)
    worker = spec.worker_request(PLAN, 2, long_document)
    assert prewarm.max_tokens == 0 and prewarm.prefix_request() == replace(worker.prefix_request(), max_tokens=0)


def test_a_worker_of_another_model_and_a_pdf_read_natively():
    pdf = Attachment(kind="pdf", media_type="application/pdf", data=b"%PDF-1.7", text="Clause 1.", pages=1,
                     image_tokens=1600, sha256="ab")
    request = spec_of().worker_request(PLAN, 1, pdf, model="claude-3-haiku")
    assert request.model == "claude-3-haiku" and request.attachments == (pdf,) and len(request.user_blocks) == 1
    assert request.output_schema is None and "<output_schema>" in request.user_blocks[0]


def test_the_synthesis_reads_the_results_in_order_and_names_the_missing_subtasks():
    spec = spec_of()
    parts = [Part(part_label(0, "Indemnity"), "High risk."), Part(part_label(2, "Penalties"), "Low risk.")]
    request = spec.synthesis_request(SONNET, parts, [2], final=True)
    head, body = request.user_blocks
    assert "Write the review." in head and "the results of the 2 subtasks below" in head
    assert "Not available: the results of subtask 2 (their workers failed)." in head
    assert body.index("subtask 1: Indemnity") < body.index("subtask 3: Penalties") and "<synthesis>" in body
    assert request.system != WORKER_SYSTEM and request.output_schema is None
    partial = spec.synthesis_request(SONNET, parts, final=False)
    assert "partial result" in partial.user_blocks[0] and partial.user_blocks[1] == body


def test_a_synthesis_with_a_schema_gets_a_budget_that_fits_its_parts():
    schema = {"type": "object", "required": ["items"], "additionalProperties": False,
              "properties": {"items": {"type": "array", "items": {"type": "string"}}}}
    t = replace(task(), reduce=Step("Merge.", output_schema=schema))
    spec = spec_of(t)
    assert spec.synthesis_output_fit
    small = spec.synthesis_request(SONNET, [Part("subtask 1: a", "x", 10)], final=True)
    large = spec.synthesis_request(SONNET, [Part("subtask 1: a", "x", 30_000)], final=True)
    assert small.output_schema == schema and large.max_tokens > small.max_tokens


def test_the_spec_reads_back_from_the_config_it_writes():
    spec = spec_of()
    config = json.loads(json.dumps(spec.config()))
    assert orchestrate_spec(config) == spec
    document = DocumentSpec({"kind": "pdf", "media_type": "application/pdf", "blob": "ab", "pages": 1})
    with_document = {**config, "document": dict(document.entry), "files": {"ab": "file_1"}}
    back = orchestrate_spec(with_document)
    assert back.document is not None and back.document.blob == "ab"
    attachment = back.document_of("Clause 1.", None)
    assert isinstance(attachment, Attachment) and attachment.file_id == "file_1"
    assert spec.document_of("text", None) == "text"


def test_output_budgets_fit_the_steps_and_their_models():
    spec = spec_of()
    assert spec.plan_output_tokens == 64 + 300 * 12
    assert spec.work_output_tokens == 2048  # a JSON reply
    assert spec.synthesis_output_tokens == 800
    own = spec_of(replace(task(), plan=replace(task().plan, max_output_tokens=500, max_workers=100)))
    assert own.plan_output_tokens == 500
    most = spec_of(replace(task(), plan=replace(task().plan, max_workers=100)), plan="claude-3-haiku")
    assert most.plan_output_tokens == 4096  # Claude 3 Haiku writes at most 4,096 tokens


# ----- the estimate ----------------------------------------------------------------------------------
def test_the_estimate_grows_with_max_workers_and_the_document():
    def estimate(workers: int, document: str = CONTRACT) -> float:
        t = replace(task(), plan=replace(task().plan, max_workers=workers))
        return estimate_orchestrate(spec_of(t), document).total_usd

    assert 0 < estimate(1) < estimate(2) < estimate(12) < estimate(100)
    assert estimate(12) < estimate(12, CONTRACT * 3)
    spec = spec_of()
    lane = estimate_orchestrate(spec, CONTRACT, lane="batch")
    assert lane.total_usd < estimate_orchestrate(spec, CONTRACT).total_usd  # the workers at half price


def test_the_estimate_counts_every_worker_at_the_largest_prompt_a_plan_can_give_it():
    # Each worker at its request for an empty subtask, one of them with the planner's whole reply in it.
    spec = spec_of()
    empty = spec.worker_request(SubtaskPlan((Subtask("", "", ""),) * 12), 11, CONTRACT)
    full = spec.worker_request(SubtaskPlan((Subtask("x", "y " * 5000, "z"),) * 12), 11, CONTRACT)
    assert upper_request_tokens(full) > upper_request_tokens(empty)
    estimate = estimate_orchestrate(spec, CONTRACT)
    assert estimate.output_usd > 12 * spec.work_output_tokens * 5 / 1e6 * 0.1  # every worker at max_tokens


@st.composite
def results(draw: st.DrawFn):
    """The synthesis of 1 to max_workers results, each reply of any size up to the workers' budget and any
    density the workers can measure, and one tree the workers build for them (as for sections)."""
    model = draw(st.sampled_from([SONNET, "claude-sonnet-4-6"]))
    workers = draw(st.integers(1, 30))
    schema = draw(st.booleans())
    t = replace(task(), plan=replace(task().plan, max_workers=workers),
                reduce=Step("Merge.", output_schema={"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": {"type": "string"}}}, "additionalProperties": False}
                            if schema else None))
    spec = spec_of(t, reduce=model, budget=draw(st.sampled_from([10, 600, 8000])))
    n = draw(st.integers(1, workers))
    items = []
    for i in range(n):
        title = draw(st.text(st.sampled_from("a'&😀 "), max_size=TITLE_MAX))
        text = draw(st.one_of(st.just(spec.work_output_tokens), st.integers(0, spec.work_output_tokens)))
        items.append(Item(part_label(i, title), i, i, text, text, measured_for(draw, text)))
    return spec, model, worker_run_cost(draw, spec, model, items, spec.synthesis_budget_tokens)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(run=results())
def test_no_synthesis_tree_of_any_plan_costs_more_than_the_estimates_synthesis(run):
    spec, model, (paid, _) = run
    n = spec.max_workers
    from workflows.cost import total

    bound = total(synthesis_costs(spec, model, [part_label(n - 1, "'" * TITLE_MAX)] * n, spec.synthesis_budget_tokens,
                                  section_outputs=[spec.work_output_tokens] * n,
                                  section_texts=[spec.work_output_tokens] * n))
    assert paid.total_usd <= bound.total_usd * (1 + 1e-9)


@pytest.mark.parametrize(("numbers", "titles", "said"), [
    ([2], ["A", "B"], "subtask 2 ('B') missing"),
    ([1, 3], ["A", "B", "C"], "subtasks 1 and 3 ('A', 'C') missing"),
    (list(range(1, 7)), [str(i) for i in range(1, 7)], "subtasks 1, 2, 3, 4, 5 and 6 missing"),
    ([], ["A"], ""),
])
def test_missing_subtasks_are_named_by_number_and_title(numbers, titles, said):
    from workflows.orchestrating import describe_missing

    assert describe_missing(numbers, titles) == said


def test_a_partial_synthesis_label_is_as_long_as_the_section_label_the_estimate_frames():
    from workflows.orchestrating import span_label
    from workflows.sectioning import span_label as section_span

    assert (span_label(3, 3), span_label(1, 4)) == ("subtask 3", "subtasks 1-4")
    assert all(len(span_label(a, b)) == len(section_span(a, b)) for a, b in ((1, 1), (1, 12), (10, 99)))
