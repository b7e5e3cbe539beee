"""Sectioning in the Python API: split a document, one worker per section, then a synthesis.

    from chorus import load_task, submit_section, wait_for_run
    run_id = submit_section(open("bash.txt").read(), task="summarize")
    run_id = submit_section(open("notes.md").read(), task="translate to French")
    run_id = submit_section(open("bash.1").read(), task=load_task("examples/man-options.toml"))
    run = wait_for_run(run_id)          # run.result["synthesis"], run.outcomes (sections, steps)

`task` is either instructions for each section, in any words (a model then combines the parts), or a
`SectionTask` (a task file): the `map` instructions with an optional JSON `output_schema`, and a
`reduce` step or `merge = "concat"`. Keyword options override the task's fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from chorus.budget import check_budget, estimate_plan
from chorus.runs import celery_app, ensure_workers, prepare
from models import Pattern, RunStatus, Session, repo
from models.tables import OutcomeRole, utcnow
from settings import Settings, get_settings
from tasks import dispatch
from workflows.errors import ConfigError
from workflows.intake import check_text
from workflows.registry import effort_levels, max_output_tokens
from workflows.sectioning import (
    SECTION_OUTPUT_TOKENS,
    SYNTHESIS_OUTPUT_TOKENS,
    Section,
    Split,
    output_budget,
    split,
)
from workflows.taskfile import (
    DEFAULT_SUMMARIZE,
    NAME_MAX_CHARS,
    SectionTask,
    Step,
    TaskFileError,
    VoteTask,
    check_schema,
    check_section_task,
    closed_schema,
    summary_task,
    task_hash,
)


@dataclass(frozen=True)
class SectionPlan:
    """A validated sectioning run, ready to store and send. Building one writes nothing.

    `task` is the task as it runs (the caller's options applied); `model` the map model (the
    section workers' queue) and `reduce_model` the synthesis model (None with a deterministic merge)."""

    text: str
    task: SectionTask
    how: Split
    sections: tuple[Section, ...]
    model: str
    reduce_model: str | None
    max_tokens: int
    overlap_tokens: int
    synthesis_budget_tokens: int
    external_id: str | None = None
    batch_id: str | None = None
    instructions: str | None = None  # the caller's free-text task, when it was given as text

    def config(self) -> dict[str, Any]:
        task = self.task
        map_schema = task.map.output_schema
        reduce = task.reduce
        reduce_schema = (reduce.output_schema or map_schema) if reduce else None
        return {
            # What runs stored before task files hold (a worker of that version reads it as instructions).
            "task": self.instructions or task.map.instructions,
            "task_name": task.name,
            "task_hash": task_hash(task),
            "spec": task.to_json(),
            "split": self.how.value,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "section_output_tokens": output_budget(task.map.max_output_tokens, default=SECTION_OUTPUT_TOKENS,
                                                   schema=map_schema, effort=task.map.effort),
            "synthesis_output_tokens": output_budget(reduce.max_output_tokens if reduce else None,
                                                     default=SYNTHESIS_OUTPUT_TOKENS, schema=reduce_schema,
                                                     effort=reduce.effort if reduce else None),
            "synthesis_budget_tokens": self.synthesis_budget_tokens,
            "map": {"instructions": task.map.instructions, "model": self.model, "effort": task.map.effort,
                    "output_schema": map_schema},
            "reduce": None if reduce is None else {
                "instructions": reduce.instructions, "model": self.reduce_model, "effort": reduce.effort,
                "output_schema": reduce_schema},
            "merge": task.merge,
            # One section needs no synthesis, unless the result must take the reduce step's own shape.
            "synthesize_single": bool(reduce and reduce.output_schema is not None
                                      and reduce.output_schema != map_schema),
            "sections": [s.to_json() for s in self.sections],
        }

    def slots(self) -> list[repo.SlotSpec]:
        return [repo.SlotSpec(s.index, OutcomeRole.SECTION, self.model) for s in self.sections]


def instructions_task(instructions: str) -> SectionTask:
    """The task free-text instructions mean: each section does them, a model combines the parts.
    "summarize" is the built-in summary."""
    words = " ".join(instructions.split())
    if not words:
        raise ConfigError("the task is empty; say what to do with each section, e.g. task=\"summarize\" "
                          "or task=\"list every command-line option\"")
    if words.casefold() == "summarize":
        return summary_task(DEFAULT_SUMMARIZE)
    name = words if len(words) <= NAME_MAX_CHARS else words[:NAME_MAX_CHARS - 1] + "…"
    return summary_task(instructions.strip(), name=name)


def resolve_section_task(task: SectionTask | str, *, how: str | None = None, max_tokens: int | None = None,
                         overlap_tokens: int | None = None, model: str | None = None) -> SectionTask:
    """The task a sectioning run runs: the given one (instructions or a SectionTask) with the options
    applied over its fields (`how` the split, `max_tokens` and `overlap_tokens` the section size and
    overlap, `model` the model of both steps)."""
    if isinstance(task, VoteTask) or (isinstance(task, SectionTask) and task.pattern != "section"):
        raise ConfigError(f"the task {task.name!r} is a {task.pattern} task; run it with submit_vote "
                          f"(`chorus vote --task FILE`), or give a section task (pattern = \"section\")")
    if isinstance(task, str):
        resolved = instructions_task(task)
    elif isinstance(task, SectionTask):
        resolved = task
    else:
        raise ConfigError(f"task must be instructions for each section (str, e.g. \"summarize\") or a SectionTask "
                          f"(chorus.load_task(path) reads a task file), got {type(task).__name__}")
    for where, step in (("map", resolved.map), ("reduce", resolved.reduce)):
        if (step is not None or where == "map") and not (isinstance(step, Step) and isinstance(step.instructions, str)):
            raise TaskFileError(where, f"must be a Step(instructions=..., model=..., output_schema=...), got {step!r}")
    if how is not None:
        resolved = replace(resolved, split=_split(how).value)
    if max_tokens is not None:
        resolved = replace(resolved, max_tokens=_whole(max_tokens, "max_tokens", 1))
    if overlap_tokens is not None:
        resolved = replace(resolved, overlap=_whole(overlap_tokens, "overlap_tokens", 0))
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a model id (str), got {model!r}")
        resolved = replace(resolved, map=replace(resolved.map, model=model),
                           reduce=replace(resolved.reduce, model=model) if resolved.reduce else None)
    for where, step in (("map", resolved.map), ("reduce", resolved.reduce)):
        if step is not None and step.output_schema is not None:
            check_output_schema(step.output_schema, f"{where}.output_schema")
    resolved = replace(resolved, map=_closed(resolved.map),
                       reduce=_closed(resolved.reduce) if resolved.reduce else None)
    return check_section_task(resolved)


def _closed(step: Step) -> Step:
    return replace(step, output_schema=closed_schema(step.output_schema)) if step.output_schema else step


def check_output_schema(schema: Mapping[str, Any], where: str) -> None:
    """A schema a task built in Python passes the same checks as one from a file, and is a JSON schema."""
    if not isinstance(schema, Mapping):
        raise TaskFileError(where, "must be a JSON schema (a dict)")
    check_schema(schema, where)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise TaskFileError(where, f"is not a valid JSON schema: {exc.message}") from None


def plan_section(
    text: str,
    *,
    task: SectionTask | str = "summarize",
    how: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    overlap_tokens: int | None = None,
    external_id: str | None = None,
    batch_id: str | None = None,
    settings: Settings | None = None,
) -> SectionPlan:
    """Check the inputs and split the document; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    if not isinstance(text, str):
        raise ConfigError(f"the document must be text (str), got {type(text).__name__}; decode bytes first")
    resolved = resolve_section_task(task, how=how, max_tokens=max_tokens, overlap_tokens=overlap_tokens, model=model)
    _, problem = check_text(text, settings.max_document_bytes)
    if problem is not None:
        raise ConfigError(f"the document cannot be sectioned: {problem}")
    map_model = resolved.map.model or settings.default_model
    reduce_model = (resolved.reduce.model or map_model) if resolved.reduce else None
    check_step_model("map", resolved.map, map_model, settings)
    if resolved.reduce is not None and reduce_model is not None:
        check_step_model("reduce", resolved.reduce, reduce_model, settings)
    budget = resolved.max_tokens or settings.section_tokens
    strategy = Split(resolved.split)
    try:
        sections = split(text, strategy, max_tokens=budget, overlap_tokens=resolved.overlap)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return SectionPlan(text, resolved, strategy, tuple(sections), map_model, reduce_model, budget, resolved.overlap,
                       settings.synthesis_budget_tokens, external_id, batch_id,
                       task if isinstance(task, str) else None)


def check_step_model(where: str, step: Step, model: str, settings: Settings) -> None:
    """The step's model has a queue, its effort (if any) is one the model offers, and its output budget
    fits what the model can write."""
    if model not in settings.model_list:
        raise ConfigError(f"{where}: model {model} has no queue; add it to CHORUS_MODELS (now: {settings.models})")
    if step.effort is not None:
        levels = effort_levels(model)
        if not levels:
            raise ConfigError(f"{where}: {model} takes no effort setting; remove `effort` from [{where}]")
        if step.effort not in levels:
            raise ConfigError(f"{where}: effort {step.effort!r} is not offered by {model}; "
                              f"use one of: {', '.join(levels)}")
    ceiling = max_output_tokens(model)
    if step.max_output_tokens is not None and ceiling is not None and step.max_output_tokens > ceiling:
        raise ConfigError(f"{where}: max_output_tokens {step.max_output_tokens} is more than {model} can write "
                          f"({ceiling}); lower it")


def _split(how: Any) -> Split:
    try:
        return Split(how)
    except ValueError:
        raise ConfigError(f"unknown split {how!r}; use one of {', '.join(s.value for s in Split)}") from None


def _whole(value: Any, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be a whole number of at least {low}, got {value!r}")
    return value


def submit_section(text: str, *, task: SectionTask | str = "summarize", settings: Settings | None = None,
                   **options: Any) -> str:
    """Validate, store and send a sectioning run; returns the run id (`wait_for_run` waits).

    `task`: instructions for each section ("summarize", "translate to French", ...) or a SectionTask
    (`chorus.load_task(path)`); options (how, max_tokens, overlap_tokens, model, external_id,
    batch_id) override the task's fields."""
    settings = settings or get_settings()
    return submit_section_plan(plan_section(text, task=task, settings=settings, **options), settings=settings)


def submit_section_plan(plan: SectionPlan, *, settings: Settings | None = None) -> str:
    """Store the run (document, run, one pending outcome per section) and send its chord; refused above
    the budget (CHORUS_MAX_COST_USD), and in embedded mode the worker is started, as for a vote."""
    settings = settings or get_settings()
    if settings.max_cost_usd is not None:
        check_budget(estimate_plan(plan, settings), settings.max_cost_usd, "this sectioning run")
    prepare(settings)
    ensure_workers(settings)
    with Session.begin() as s:
        run = repo.create_run(
            s, text=plan.text, external_id=plan.external_id or f"inline-{uuid.uuid4().hex[:8]}",
            pattern=Pattern.SECTION, provider=settings.provider_name, config=plan.config(), slots=plan.slots(),
            batch_id=plan.batch_id,
        )
        for outcome in run.outcomes:
            outcome.title = plan.sections[outcome.slot].title[:200]
        run.status = RunStatus.RUNNING
        run.submitted_at = utcnow()
        run_id = run.id
    # Not remembered: the reduce's result comes after the sections, long before the synthesis.
    dispatch.send_section(celery_app(settings), run_id, plan.config())
    return run_id
