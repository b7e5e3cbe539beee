"""Sectioning tasks.

`chorus.section.call` is one section worker or one synthesis step (chord header; the same
`run_slot` as a voter). `chorus.section.reduce` is the chord callback after a level: it plans the
next level from the outputs actually returned, either one final synthesis or a level of partial
syntheses whose own callback is `reduce` again. `chorus.section.finish` stores the result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery, Task, shared_task
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeStatus, RunStatus, Session, WorkerOutcome, in_session, repo
from models.tables import OutcomeRole, utcnow
from settings import get_settings
from tasks import db, dispatch
from tasks.calls import run_slot
from tasks.requests import FINAL, PARTIAL, inputs_of, step_of, succeeded
from workflows.sectioning import (
    concat_values,
    covered_sections,
    describe_missing,
    output_tokens,
    plan_level,
    read_section_reply,
    span_label,
)

log = logging.getLogger("chorus.tasks")


@shared_task(name=dispatch.SECTION_CALL, bind=True, max_retries=None)  # attempts: see tasks.calls
def call(self: Task, run_id: str, slot: int, model: str, task: str = "") -> dict[str, Any]:
    """One section or synthesis step. `model` and `task` are labels for Flower; the slot row is the truth."""
    return run_slot(self, run_id, slot)


@shared_task(name=dispatch.SECTION_REDUCE, bind=True)
def reduce_level(self: Task, results: list[dict[str, Any]], run_id: str, items: list[int] | None = None
                 ) -> dict[str, Any]:
    try:
        return plan_next(self.app, run_id, items)
    except Exception as exc:  # noqa: BLE001 - a raising callback would leave the run open forever
        log.exception("planning the synthesis of run %s failed", run_id)
        return _fail(run_id, f"internal error while planning the synthesis: {type(exc).__name__}: {exc}")


@shared_task(name=dispatch.SECTION_FINISH, bind=True)
def finish(self: Task, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    return finish_section(run_id)


def plan_next(app: Celery, run_id: str, items: list[int] | None) -> dict[str, Any]:
    """Add the next level's synthesis steps (idempotent) and send them on `app`; or finish the run."""
    db.bind()

    def add_level(s: OrmSession) -> dict[str, Any] | tuple[list[tuple[int, str]], list[int], bool]:
        run = repo.load_run(s, run_id)
        if run is None or run.status.terminal:
            return {"run_id": run_id, "status": run.status.value if run else "failed"}
        config = run.config
        by_slot = {o.slot: o for o in run.outcomes}
        sections = len(config["sections"])
        level_items = items if items is not None else list(range(sections))
        ok = [i for i in level_items if by_slot[i].status is OutcomeStatus.SUCCEEDED]
        single = sections == 1 and items is None and not config.get("synthesize_single")
        if not ok or single or config.get("merge"):  # a deterministic merge needs no synthesis call
            return [], [], True
        groups = plan_level([output_tokens(by_slot[i].raw_output) for i in ok], config["synthesis_budget_tokens"])
        model = (config.get("reduce") or {}).get("model") or config["model"]
        steps, next_items = _add_steps(s, run_id, by_slot, ok, groups, model)
        return steps, next_items, groups is None

    planned = in_session(add_level)  # idempotent: a second try finds the rows the first one added
    if isinstance(planned, dict):
        return planned
    new_steps, next_items, final = planned
    if not new_steps and not next_items:
        return finish_section(run_id)
    header, callback = dispatch.level_messages(app, run_id, new_steps, None if final else next_items)
    dispatch.send_chord(app, run_id, header, callback)
    return {"run_id": run_id, "steps": [slot for slot, _ in new_steps], "final": final}


def _add_steps(s: Any, run_id: str, by_slot: dict[int, WorkerOutcome], ok: list[int],
               groups: list[list[int]] | None, model: str) -> tuple[list[tuple[int, str]], list[int]]:
    """The synthesis rows of one level, created once: a redelivered callback finds them again."""
    existing = {tuple(o.inputs or ()): o for o in by_slot.values() if o.role is OutcomeRole.SYNTHESIS}
    slot_inputs = inputs_of(by_slot)
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
            leaves = covered_sections(members, slot_inputs, set(by_slot))
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
    """Store the synthesis (or the single section's output) and name every missing section. Safe to
    call twice (and after a transient database error in_session does)."""
    db.bind()
    return in_session(lambda s: _finish_section(s, run_id))


def _finish_section(s: OrmSession, run_id: str) -> dict[str, Any]:
    run = repo.load_run(s, run_id)
    if run is None:
        return {"run_id": run_id, "status": "failed", "error": "unknown run"}
    if run.status.terminal:
        return {"run_id": run_id, "status": run.status.value}
    by_slot = {o.slot: o for o in run.outcomes}
    sections = len(run.config["sections"])
    if run.config.get("merge") == "concat":
        return _finish_concat(s, run)
    finals = [o for o in run.outcomes if o.prompt_variant == FINAL]
    final = finals[-1] if finals else None
    if final is not None:
        top = [final.slot]
    elif sections == 1:
        top = [0]
    else:
        top = []
    covered = set(covered_sections(top, inputs_of(by_slot), succeeded(by_slot)))
    missing = [i + 1 for i in range(sections) if i not in covered]
    head = final or by_slot[0]
    text = head.raw_output if head.status is OutcomeStatus.SUCCEEDED else None
    schema = step_of(run.config, head.role).output_schema
    if text is not None and schema is not None:
        value, unreadable = read_section_reply(text, schema, None)  # validated when the slot succeeded
        text = _json_text(value) if unreadable is None else text
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


def _finish_concat(s: OrmSession, run: Any) -> dict[str, Any]:
    """`merge = "concat"`: the sections' JSON lists joined in section order, no synthesis call. A failed
    section is named as missing, as a synthesis names it."""
    schema = run.config["map"]["output_schema"]
    sections = len(run.config["sections"])
    values: list[Any] = []
    missing: list[int] = []
    for o in sorted((o for o in run.outcomes if o.role is OutcomeRole.SECTION), key=lambda o: o.slot):
        value, problem = (read_section_reply(o.raw_output or "", schema, None)
                          if o.status is OutcomeStatus.SUCCEEDED else (None, o.error or o.status.value))
        if problem is None:
            values.append(value)
        else:
            missing.append(o.slot + 1)
    text: str | None = None
    if not values:
        status, reason = RunStatus.FAILED, f"no section succeeded ({describe_missing(missing)})"
    else:
        joined, problem = concat_values(values, schema)
        if problem is not None:
            status, reason = RunStatus.FAILED, problem
        else:
            text = _json_text(joined)
            status, reason = (RunStatus.PARTIAL, describe_missing(missing)) if missing else (RunStatus.SUCCEEDED, "")
    result = {
        "synthesis": text,
        "sections": sections,
        "sections_succeeded": sections - len(missing),
        "missing": missing,
        "synthesis_steps": 0,
        "levels": 0,
        "merge": "concat",
        "status": status.value,
        "reason": reason,
    }
    repo.finish_run(s, run, status=status, result=result, error=reason or None)
    return {"run_id": run.id, **result}


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def reap_section(app: Celery, run_id: str) -> dict[str, Any]:
    """For the reaper: a run whose slots are all done but whose next step never came (a lost
    callback) goes on from its unmerged outputs; one past CHORUS_REAP_AFTER_S is finished as it is."""
    db.bind()
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
        slot_inputs = inputs_of(by_slot)
        frontier = sorted((slot for slot in by_slot if slot not in consumed),
                          key=lambda slot: min(covered_sections([slot], slot_inputs, set(by_slot)) or [slot]))
    has_steps = any(o.role is OutcomeRole.SYNTHESIS for o in by_slot.values())
    return plan_next(app, run_id, frontier if has_steps else None)


def _fail(run_id: str, reason: str) -> dict[str, Any]:
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        if run is not None and not run.status.terminal:
            repo.finish_run(s, run, status=RunStatus.FAILED, result={"reason": reason}, error=reason)
    return {"run_id": run_id, "status": "failed", "error": reason}
