"""Sectioning tasks.

`chorus.section.call` is one section worker or one synthesis step (chord header; the same
`run_slot` as a voter). `chorus.section.reduce` is the chord callback after a level: it plans the
next level from the outputs actually returned, either one final synthesis or a level of partial
syntheses whose own callback is `reduce` again. `chorus.section.finish` stores the result.

The section run's messages, its requests and replies, and its entry in the pattern registry
(`tasks.patterns`, registered at the end of this module) are here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task, shared_task
from celery.canvas import Signature
from celery.result import AsyncResult
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeStatus, Pattern, RunStatus, Session, WorkerOutcome, in_session, repo
from models.tables import OutcomeRole, utcnow
from settings import get_settings
from tasks import db, dispatch, patterns
from tasks.calls import run_slot
from tasks.requests import document_bytes
from workflows.calls import CallRequest, CallResult
from workflows.queues import CALLBACK_QUEUE
from workflows.runspec import SectionSpec, StepSpec, section_spec
from workflows.sectioning import (
    Part,
    concat_values,
    covered_sections,
    describe_missing,
    output_tokens,
    plan_level,
    read_section_reply,
    span_label,
)

log = logging.getLogger("chorus.tasks")
SECTION_CALL = "chorus.section.call"
SECTION_REDUCE = "chorus.section.reduce"
SECTION_FINISH = "chorus.section.finish"
FINAL, PARTIAL = "final", "partial"


@shared_task(name=SECTION_CALL, bind=True, max_retries=None)  # attempts: see tasks.calls
def call(self: Task, run_id: str, slot: int, model: str, task: str = "") -> dict[str, Any]:
    """One section or synthesis step. `model` and `task` are labels for Flower; the slot row is the truth."""
    return run_slot(self, run_id, slot)


@shared_task(name=SECTION_REDUCE, bind=True)
def reduce_level(self: Task, results: list[dict[str, Any]], run_id: str, items: list[int] | None = None
                 ) -> dict[str, Any]:
    try:
        return plan_next(self.app, run_id, items)
    except Exception as exc:  # noqa: BLE001 - a raising callback would leave the run open forever
        log.exception("planning the synthesis of run %s failed", run_id)
        return _fail(run_id, f"internal error while planning the synthesis: {type(exc).__name__}: {exc}")


@shared_task(name=SECTION_FINISH, bind=True)
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
    header, callback = level_messages(app, run_id, new_steps, None if final else next_items)
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


# ----- messages ---------------------------------------------------------------------------------
def section_messages(app: Celery, run_id: str, model: str, sections: int, task: str = ""
                     ) -> tuple[list[Signature], Signature]:
    """(one call per section, the reduce that plans the synthesis) of a stored sectioning run."""
    header = [dispatch.call_signature(app, OutcomeRole.SECTION, run_id, i, model, task) for i in range(sections)]
    return header, app.signature(SECTION_REDUCE, args=(run_id,), queue=CALLBACK_QUEUE)


def level_messages(app: Celery, run_id: str, steps: Sequence[tuple[int, str]], next_items: list[int] | None
                   ) -> tuple[list[Signature], Signature]:
    """One level of synthesis steps, then `finish` (final level, `next_items` None) or `reduce` again."""
    header = [dispatch.call_signature(app, OutcomeRole.SYNTHESIS, run_id, slot, model) for slot, model in steps]
    if next_items is None:
        return header, app.signature(SECTION_FINISH, args=(run_id,), queue=CALLBACK_QUEUE)
    return header, app.signature(SECTION_REDUCE, args=(run_id, next_items), queue=CALLBACK_QUEUE)


def send_section(app: Celery, run_id: str, config: dict[str, Any], callback_id: str | None = None) -> AsyncResult:
    header, reduce = section_messages(app, run_id, config["model"], len(config["sections"]),
                                      config.get("task_name", ""))
    return dispatch.send_chord(app, run_id, header, reduce)


def lane_reduce(app: Celery, run_id: str) -> dict[str, Any]:
    """A lane section run whose sections are all done: the reduce its chord would have run."""
    signature = app.signature(SECTION_REDUCE, args=([], run_id), queue=CALLBACK_QUEUE)
    dispatch.publishing(signature.apply_async)
    return {"run_id": run_id, "status": "running"}


# ----- a section's or a synthesis step's request and reply --------------------------------------------
def section_request(claim: repo.Claim, spec: SectionSpec, text: str, tags: tuple[tuple[str, str], ...]
                    ) -> CallRequest:
    """A section's map call (its text, or the PDF of its pages), or a synthesis step over its inputs."""
    if claim.role is OutcomeRole.SYNTHESIS:
        return synthesis_call_request(claim, spec, tags)
    files = dict(spec.document.files) if spec.document else {}
    document = spec.section_document(claim.slot, text, document_bytes(spec.blob_of(claim.slot), files))
    return spec.section_request(claim.model, claim.slot, document, tags)


def section_fields(claim: repo.Claim, spec: SectionSpec, config: dict[str, Any], result: CallResult
                   ) -> dict[str, Any]:
    """A reply that is no result (a refusal; with an output schema, a cut, non-JSON or off-schema reply)
    fails its slot with the reason; the call's usage is kept, it was paid."""
    schema = (spec.map if claim.role is OutcomeRole.SECTION else spec.reduce).output_schema
    _, problem = read_section_reply(result.text, schema, result.stop_reason, result.no_answer)
    return {} if problem is None else {"status": OutcomeStatus.FAILED, "error": problem}


def section_retry(claim: repo.Claim, spec: SectionSpec, request: CallRequest, result: CallResult
                  ) -> CallRequest | None:
    """A map reply cut at max_tokens before its JSON was complete is sent again with a larger budget
    (`SectionSpec.retry_request`); None otherwise."""
    if claim.role is not OutcomeRole.SECTION or result.stop_reason != "max_tokens" or result.no_answer:
        return None
    return spec.retry_request(request)


def step_of(config: dict[str, Any], role: OutcomeRole) -> StepSpec:
    """The map (section) or reduce (synthesis) step of a run."""
    spec = section_spec(config)
    return spec.map if role is OutcomeRole.SECTION else spec.reduce


def synthesis_call_request(claim: repo.Claim, spec: SectionSpec, tags: tuple[tuple[str, str], ...]) -> CallRequest:
    with Session() as s:
        by_slot = repo.outcomes_by_slot(s, claim.run_id)
    row = by_slot[claim.slot]
    parts = [Part(by_slot[i].title or f"part {i}", by_slot[i].raw_output or "", by_slot[i].output_tokens or 0)
             for i in row.inputs or []]
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(row.inputs or [], inputs_of(by_slot), succeeded(by_slot)))
        missing = [i + 1 for i in range(len(spec.sections)) if i not in covered]
    return spec.synthesis_request(claim.model, parts, missing, final=final, tags=tags)


def inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}


patterns.register(patterns.PatternEntry(
    pattern=Pattern.SECTION,
    roles=frozenset({OutcomeRole.SECTION, OutcomeRole.SYNTHESIS}),
    call_task=SECTION_CALL,
    spec=section_spec,
    build_request=section_request,
    interpret=section_fields,
    retry_request=section_retry,
    send=send_section,
    # All slots done but no synthesis yet may be a callback still queued or lost: go on with it.
    finish=reap_section,
    lane_callback=lane_reduce,
))
