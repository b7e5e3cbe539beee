"""Sectioning tasks.

`chorus.section.call` is one section worker or one synthesis step (chord header; the same
`run_slot` as a voter). `chorus.section.reduce` is the chord callback after a level: it plans the
next level from the outputs actually returned, either one final synthesis or a level of partial
syntheses whose own callback is `reduce` again. `chorus.section.finish` stores the result.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, chord

from models import OutcomeStatus, RunStatus, Session, WorkerOutcome, get_engine, repo
from models.tables import OutcomeRole, utcnow
from providers.base import CallRequest
from tasks.calls import run_slot
from worker import CALLBACK_QUEUE, app, queue_for_model
from workflows.sectioning import (
    Part,
    Section,
    covered_sections,
    describe_missing,
    output_tokens,
    plan_level,
    section_request,
    span_label,
    synthesis_request,
)

log = logging.getLogger("chorus.tasks")
FINAL, PARTIAL = "final", "partial"


@app.task(name="chorus.section.call", bind=True)
def call(self: Task, run_id: str, slot: int, model: str) -> dict[str, Any]:
    """One section or synthesis step. `model` is a label for Flower; the slot row is the truth."""
    return run_slot(self, run_id, slot)


@app.task(name="chorus.section.reduce", bind=True)
def reduce_level(self: Task, results: list[dict[str, Any]], run_id: str, items: list[int] | None = None
                 ) -> dict[str, Any]:
    try:
        return plan_next(run_id, items)
    except Exception as exc:  # noqa: BLE001 - a raising callback would leave the run open forever
        log.exception("planning the synthesis of run %s failed", run_id)
        return _fail(run_id, f"internal error while planning the synthesis: {type(exc).__name__}: {exc}")


@app.task(name="chorus.section.finish", bind=True)
def finish(self: Task, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    return finish_section(run_id)


def sections_of(config: dict[str, Any]) -> list[Section]:
    return [Section(i, title, start, end) for i, (start, end, title) in enumerate(config["sections"])]


def section_call_request(claim: repo.Claim, config: dict[str, Any], text: str,
                         tags: tuple[tuple[str, str], ...]) -> CallRequest:
    sections = sections_of(config)
    if claim.role is OutcomeRole.SECTION:
        return section_request(claim.model, config["task"], sections[claim.slot], text, len(sections),
                               max_tokens=config["section_output_tokens"], tags=tags)
    with Session() as s:
        by_slot = _outcomes(s, claim.run_id)
    step = by_slot[claim.slot]
    parts = [Part(by_slot[i].title or f"part {i}", by_slot[i].raw_output or "") for i in step.inputs or []]
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(step.inputs or [], _inputs_of(by_slot), _succeeded(by_slot)))
        missing = [i + 1 for i in range(len(sections)) if i not in covered]
    return synthesis_request(claim.model, config["task"], parts, missing, final=final,
                             max_tokens=config["synthesis_output_tokens"], tags=tags)


def _outcomes(s: Any, run_id: str) -> dict[int, WorkerOutcome]:
    from sqlalchemy import select

    rows = s.execute(select(WorkerOutcome).where(WorkerOutcome.run_id == run_id)).scalars()
    return {o.slot: o for o in rows}


def _inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def _succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}


def plan_next(run_id: str, items: list[int] | None) -> dict[str, Any]:
    """Add the next level's synthesis steps (idempotent) and send them; or finish the run."""
    get_engine()
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        if run is None or run.status.terminal:
            return {"run_id": run_id, "status": run.status.value if run else "failed"}
        config = run.config
        by_slot = {o.slot: o for o in run.outcomes}
        sections = len(config["sections"])
        level_items = items if items is not None else list(range(sections))
        ok = [i for i in level_items if by_slot[i].status is OutcomeStatus.SUCCEEDED]
        if not ok or (sections == 1 and items is None):
            done = True
        else:
            done = False
            groups = plan_level([output_tokens(by_slot[i].raw_output) for i in ok], config["synthesis_budget_tokens"])
            new_steps, next_items = _add_steps(s, run_id, by_slot, ok, groups, config["model"])
    if done:
        return finish_section(run_id)
    header = [call.si(run_id, slot, model).set(queue=queue_for_model(model)) for slot, model in new_steps]
    if groups is None:
        callback = finish.s(run_id).set(queue=CALLBACK_QUEUE)
    else:
        callback = reduce_level.s(run_id, next_items).set(queue=CALLBACK_QUEUE)
    chord(header)(callback)
    return {"run_id": run_id, "steps": [slot for slot, _ in new_steps], "final": groups is None}


def _add_steps(s: Any, run_id: str, by_slot: dict[int, WorkerOutcome], ok: list[int],
               groups: list[list[int]] | None, model: str) -> tuple[list[tuple[int, str]], list[int]]:
    """The synthesis rows of one level, created once: a redelivered callback finds them again."""
    existing = {tuple(o.inputs or ()): o for o in by_slot.values() if o.role is OutcomeRole.SYNTHESIS}
    inputs_of = _inputs_of(by_slot)
    level = max((o.level or 0) for o in by_slot.values()) + 1
    next_slot = max(by_slot) + 1
    now = utcnow()
    wanted = [ok] if groups is None else [[ok[j] for j in g] for g in groups]
    steps: list[tuple[int, str]] = []
    next_items: list[int] = []
    for members in wanted:
        if len(members) == 1 and groups is not None:
            next_items.append(members[0])  # carried up unchanged
            continue
        row = existing.get(tuple(members))
        if row is None:
            leaves = covered_sections(members, inputs_of, set(by_slot))
            row = WorkerOutcome(
                run_id=run_id, slot=next_slot, role=OutcomeRole.SYNTHESIS, model=model,
                prompt_variant=FINAL if groups is None else PARTIAL, status=OutcomeStatus.PENDING, queued_at=now,
                title=span_label(leaves[0] + 1, leaves[-1] + 1) if leaves else "synthesis",
                inputs=list(members), level=level,
            )
            s.add(row)
            next_slot += 1
        steps.append((row.slot, model))
        next_items.append(row.slot)
    s.flush()
    return steps, next_items


def finish_section(run_id: str) -> dict[str, Any]:
    """Store the synthesis (or the single section's output) and name every missing section."""
    get_engine()
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        if run is None:
            return {"run_id": run_id, "status": "failed", "error": "unknown run"}
        if run.status.terminal:
            return {"run_id": run_id, "status": run.status.value}
        by_slot = {o.slot: o for o in run.outcomes}
        sections = len(run.config["sections"])
        finals = [o for o in run.outcomes if o.prompt_variant == FINAL]
        final = finals[-1] if finals else None
        if final is not None:
            top = [final.slot]
        elif sections == 1:
            top = [0]
        else:
            top = []
        covered = set(covered_sections(top, _inputs_of(by_slot), _succeeded(by_slot)))
        missing = [i + 1 for i in range(sections) if i not in covered]
        head = final or by_slot[0]
        text = head.raw_output if head.status is OutcomeStatus.SUCCEEDED else None
        steps = [o for o in run.outcomes if o.role is OutcomeRole.SYNTHESIS]
        if text is None:
            status = RunStatus.FAILED
            done = sum(1 for o in run.outcomes if o.role is OutcomeRole.SECTION and o.status is OutcomeStatus.SUCCEEDED)
            if final is not None:
                reason = f"the final synthesis failed: {final.error}"
            elif sections == 1:
                reason = f"section 1 failed: {head.error}"
            elif done:
                reason = f"the synthesis never finished ({done} of {sections} sections had succeeded)"
            else:
                reason = f"no section succeeded ({describe_missing(missing)})"
        elif missing:
            status, reason = RunStatus.PARTIAL, describe_missing(missing)
        else:
            status, reason = RunStatus.SUCCEEDED, ""
        result = {
            "synthesis": text,
            "sections": sections,
            "sections_succeeded": sum(1 for o in run.outcomes if o.role is OutcomeRole.SECTION
                                      and o.status is OutcomeStatus.SUCCEEDED),
            "missing": missing,
            "synthesis_steps": len(steps),
            "levels": max((o.level or 0) for o in steps) if steps else 0,
            "status": status.value,
            "reason": reason,
        }
        repo.finish_run(s, run, status=status, result=result, error=reason or None)
        return {"run_id": run_id, **result}


def reap_section(run_id: str) -> dict[str, Any]:
    """For the reaper: a run whose slots are all done but whose next step never came (a lost
    callback) goes on from its unmerged outputs; one past CHORUS_REAP_AFTER_S is finished as it is."""
    from settings import get_settings

    get_engine()
    with Session() as s:
        run = repo.load_run(s, run_id)
        if run is None or run.status.terminal:
            return {"run_id": run_id, "status": run.status.value if run else "failed"}
        by_slot = {o.slot: o for o in run.outcomes}
        began = repo.as_utc(run.submitted_at or run.created_at)
        expired = began is None or (utcnow() - began).total_seconds() > get_settings().reap_after_s
        if expired or any(not o.status.terminal for o in by_slot.values()) \
                or any(o.prompt_variant == FINAL for o in by_slot.values()):
            return finish_section(run_id)
        consumed = {i for o in by_slot.values() for i in (o.inputs or [])}
        inputs_of = _inputs_of(by_slot)
        frontier = sorted((slot for slot in by_slot if slot not in consumed),
                          key=lambda slot: min(covered_sections([slot], inputs_of, set(by_slot)) or [slot]))
    has_steps = any(o.role is OutcomeRole.SYNTHESIS for o in by_slot.values())
    return plan_next(run_id, frontier if has_steps else None)


def _fail(run_id: str, reason: str) -> dict[str, Any]:
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        if run is not None and not run.status.terminal:
            repo.finish_run(s, run, status=RunStatus.FAILED, result={"reason": reason}, error=reason)
    return {"run_id": run_id, "status": "failed", "error": reason}
