"""Orchestrator-worker in the Python API: a planner lists subtasks, one worker does each, a synthesis
combines their results (`workflows.orchestrating`; the worker side is tasks/orchestrate.py).

    from chorus import load_task, submit_orchestrate, wait_for_run
    run_id = submit_orchestrate(Path("contract.pdf"), task=load_task("examples/contract-review.toml"))
    run = wait_for_run(run_id)          # run.result["synthesis"], run.result["subtasks"], run.outcomes

Sectioning splits a document into parts that need no coordination; this pattern is for a job whose parts
need planning: the planner reads the whole document and says what each worker does (at most the task's
`[plan] max_workers`). The estimate, and so the budget, counts `max_workers` workers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chorus.budget import estimate_orchestrate
from chorus.native import blob_of, check_pages, check_readable, check_size, document_spec, load_document, needs_upload
from chorus.plans import submit
from chorus.section import check_output_schema, check_step_model
from models import Pattern, repo
from models.tables import OutcomeRole
from settings import Settings, get_settings
from workflows.attachments import document_config
from workflows.calls import Attachment
from workflows.cost import Cost
from workflows.errors import ConfigError
from workflows.intake import check_text
from workflows.runspec import OrchestrateSpec, orchestrate_spec, orchestrate_spec_of
from workflows.taskfile import OrchestrateTask, Step, check_orchestrate_task, closed_schema, task_hash

PLANNER_SLOT = 0  # the planner's slot; the workers take slots 1..N, one per subtask (tasks/orchestrate.py)


@dataclass(frozen=True)
class OrchestratePlan:
    """A validated orchestrate run, ready to store and send (`chorus.plans.Plan`). Building one writes
    nothing. `task` is the task as it runs (the caller's options applied, its models resolved)."""

    text: str
    task: OrchestrateTask
    synthesis_budget_tokens: int
    external_id: str | None = None
    batch_id: str | None = None
    native: Attachment | None = None  # a PDF or an image Claude reads natively (`text` is its text layer)

    @property
    def pattern(self) -> Pattern:
        return Pattern.ORCHESTRATE

    @property
    def noun(self) -> str:
        return "call"

    @property
    def what(self) -> str:
        return "this orchestrate run"

    @property
    def gold_label(self) -> str | None:
        return None  # an orchestrate run has no known answer to compare with

    @property
    def document(self) -> str | Attachment:
        return self.native if self.native is not None else self.text

    @property
    def max_workers(self) -> int:
        return self.task.plan.max_workers

    def calls(self) -> int:
        """The planner, at most `max_workers` workers and one synthesis (a tree of them when the workers'
        results are too large for one call)."""
        return 1 + self.max_workers + 1

    def models(self) -> set[str]:
        return {m for m in (self.task.plan.model, self.task.work.model, self.task.reduce.model) if m}

    def spec(self) -> OrchestrateSpec:
        """The run as its workers will read it back (`workflows.runspec`): what builds every request."""
        return orchestrate_spec(self.config())

    def estimate(self, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
        return estimate_orchestrate(self.spec(), self.document, lane=lane)

    def config(self) -> dict[str, Any]:
        task = self.task
        spec = orchestrate_spec_of(task, plan_model=_model(task.plan.model), work_model=_model(task.work.model),
                                   reduce_model=_model(task.reduce.model),
                                   synthesis_budget_tokens=self.synthesis_budget_tokens)
        return {
            "task_name": task.name,
            "task_hash": task_hash(task),
            "spec": task.to_json(),
            **spec.config(),
            **({"document": document_config(self.native)} if self.native is not None else {}),
        }

    def slots(self) -> list[repo.SlotSpec]:
        """The planner's slot; its callback adds one worker slot per subtask of the plan."""
        return [repo.SlotSpec(PLANNER_SLOT, OutcomeRole.PLANNER, _model(self.task.plan.model), title="plan")]

    def document_spec(self) -> repo.DocumentSpec | None:
        return document_spec(self.document)

    def uploads(self, settings: Settings) -> list[repo.BlobSpec]:
        """The bytes to upload once through the Files API rather than send inline in every call."""
        if self.native is None or self.native.data is None or not needs_upload(len(self.native.data), settings):
            return []
        return [blob_of(self.native)]


def _model(model: str | None) -> str:
    assert model is not None, "a planned task has its models resolved (resolve_orchestrate_task)"
    return model


def resolve_orchestrate_task(task: OrchestrateTask, *, max_workers: int | None = None, model: str | None = None,
                             settings: Settings) -> OrchestrateTask:
    """The task an orchestrate run runs: the given one with `max_workers` and `model` (every step's) applied
    over its fields, each step's model resolved (CHORUS_DEFAULT_MODEL when it names none) and checked,
    output schemas closed."""
    if not isinstance(task, OrchestrateTask):
        pattern = getattr(task, "pattern", None)
        hint = (f"the task {task.name!r} is a {pattern} task; run it with `chorus {pattern}`" if pattern  # type: ignore[attr-defined]
                else f"got {type(task).__name__}")
        raise ConfigError(f"task must be an OrchestrateTask (chorus.load_task(path) reads an orchestrate task file, "
                          f"pattern = \"orchestrate\"); {hint}")
    resolved = check_orchestrate_task(task)
    if max_workers is not None:
        resolved = check_orchestrate_task(replace(resolved, plan=replace(resolved.plan, max_workers=max_workers)))
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a model id (str), got {model!r}")
        resolved = replace(resolved, plan=replace(resolved.plan, model=model), work=replace(resolved.work, model=model),
                           reduce=replace(resolved.reduce, model=model))
    default = settings.default_model
    resolved = replace(resolved, plan=replace(resolved.plan, model=resolved.plan.model or default),
                       work=_closed(replace(resolved.work, model=resolved.work.model or default), "work"),
                       reduce=_closed(replace(resolved.reduce, model=resolved.reduce.model or default), "reduce"))
    plan = resolved.plan
    check_step_model("plan", Step(plan.instructions, model=plan.model, max_output_tokens=plan.max_output_tokens,
                                  effort=plan.effort), _model(plan.model), settings)
    check_step_model("work", resolved.work, _model(resolved.work.model), settings)
    check_step_model("reduce", resolved.reduce, _model(resolved.reduce.model), settings)
    return resolved


def _closed(step: Step, where: str) -> Step:
    if step.output_schema is None:
        return step
    check_output_schema(step.output_schema, f"{where}.output_schema")
    return replace(step, output_schema=closed_schema(step.output_schema))


def plan_orchestrate(
    document: str | Attachment | Path,
    *,
    task: OrchestrateTask,
    max_workers: int | None = None,
    model: str | None = None,
    external_id: str | None = None,
    batch_id: str | None = None,
    settings: Settings | None = None,
) -> OrchestratePlan:
    """Check the inputs of an orchestrate run; bad input raises ConfigError naming the problem.
    `max_workers` overrides the task's `[plan] max_workers`, `model` every step's model."""
    settings = settings or get_settings()
    if isinstance(document, Path):
        document = load_document(document, settings=settings)
    if not isinstance(document, str | Attachment):
        raise ConfigError(f"the document must be text (str), got {type(document).__name__}; decode bytes first, or "
                          f"pass a file as pathlib.Path or chorus.load_document(path)")
    resolved = resolve_orchestrate_task(task, max_workers=max_workers, model=model, settings=settings)
    native = document if isinstance(document, Attachment) else None
    body: str = native.text if native is not None else document  # type: ignore[assignment]
    if native is None:
        _, problem = check_text(body, settings.max_document_bytes)
        if problem is not None:
            raise ConfigError(f"the document cannot be orchestrated: {problem}")
    else:
        check_pages(native, [_model(s.model) for s in (resolved.plan, resolved.work)],
                    hint="every call of an orchestrate run reads the whole document; section it by pages "
                         "(`chorus section FILE`), or use a 1M-context model")
        check_size(native, settings)
        check_readable(native, settings)
    return OrchestratePlan(body, resolved, settings.synthesis_budget_tokens, external_id, batch_id, native)


def submit_orchestrate(document: str | Attachment | Path, *, task: OrchestrateTask, settings: Settings | None = None,
                       **options: Any) -> str:
    """Validate, store and send an orchestrate run; returns the run id (`wait_for_run` waits).

    `task`: an OrchestrateTask (`chorus.load_task(path)` reads one); options (max_workers, model,
    external_id, batch_id) override the task's fields."""
    settings = settings or get_settings()
    return submit(plan_orchestrate(document, task=task, settings=settings, **options), settings=settings)
