"""Sectioning in the Python API: split a document, one worker per section, then a synthesis.

    from chorus import submit_section, wait_for_run
    run_id = submit_section(open("bash.txt").read(), task="summarize")
    run = wait_for_run(run_id)          # run.result["synthesis"], run.outcomes (sections, steps)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from chorus.runs import celery_app, prepare
from models import Pattern, RunStatus, Session, repo
from models.tables import OutcomeRole, utcnow
from settings import Settings, get_settings
from tasks import dispatch
from workflows.errors import ConfigError
from workflows.sectioning import SECTION_OUTPUT_TOKENS, SYNTHESIS_OUTPUT_TOKENS, Section, Split, split

TASKS = ("summarize", "extract")


@dataclass(frozen=True)
class SectionPlan:
    """A validated sectioning run, ready to store and send. Building one writes nothing."""

    text: str
    task: str
    how: Split
    sections: tuple[Section, ...]
    model: str
    max_tokens: int
    overlap_tokens: int
    synthesis_budget_tokens: int
    external_id: str | None = None
    batch_id: str | None = None

    def config(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "split": self.how.value,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "section_output_tokens": SECTION_OUTPUT_TOKENS,
            "synthesis_output_tokens": SYNTHESIS_OUTPUT_TOKENS,
            "synthesis_budget_tokens": self.synthesis_budget_tokens,
            "sections": [s.to_json() for s in self.sections],
        }

    def slots(self) -> list[repo.SlotSpec]:
        return [repo.SlotSpec(s.index, OutcomeRole.SECTION, self.model) for s in self.sections]


def normalize_task(task: str) -> str:
    """`summarize`, or `extract <what>` (e.g. "extract every command-line option")."""
    task = " ".join(task.split())
    verb = task.split(" ", 1)[0].lower() if task else ""
    if verb not in TASKS:
        raise ConfigError(f"unknown task {task!r}: use \"summarize\" or \"extract <what to extract>\"")
    if verb == "extract" and task.lower() == "extract":
        raise ConfigError("say what to extract, e.g. --task \"extract every command-line option\"")
    return task


def plan_section(
    text: str,
    *,
    task: str = "summarize",
    how: str = Split.AUTO.value,
    model: str | None = None,
    max_tokens: int | None = None,
    overlap_tokens: int = 0,
    external_id: str | None = None,
    batch_id: str | None = None,
    settings: Settings | None = None,
) -> SectionPlan:
    """Check the inputs and split the document; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    try:
        strategy = Split(how)
    except ValueError:
        raise ConfigError(f"unknown split {how!r}; use one of {', '.join(s.value for s in Split)}") from None
    if not text or not text.strip():
        raise ConfigError("the document is empty (nothing but whitespace); give some text to section")
    model = model or settings.default_model
    if model not in settings.model_list:
        raise ConfigError(f"model {model} has no queue; add it to CHORUS_MODELS (now: {settings.models})")
    budget = max_tokens or settings.section_tokens
    try:
        sections = split(text, strategy, max_tokens=budget, overlap_tokens=overlap_tokens)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return SectionPlan(text, normalize_task(task), strategy, tuple(sections), model, budget, overlap_tokens,
                       settings.synthesis_budget_tokens, external_id, batch_id)


def submit_section(text: str, *, settings: Settings | None = None, **options: Any) -> str:
    """Validate, store and send a sectioning run; returns the run id (`wait_for_run` waits)."""
    settings = settings or get_settings()
    return submit_section_plan(plan_section(text, settings=settings, **options), settings=settings)


def submit_section_plan(plan: SectionPlan, *, settings: Settings | None = None) -> str:
    """Store the run (document, run, one pending outcome per section) and send its chord."""
    settings = settings or get_settings()
    prepare(settings)
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
