"""Orchestrator-worker tasks (`workflows.orchestrating`): one planner call, one worker per subtask of its
plan, then a synthesis over the workers' results (a tree of them when they are too large for one call).

`chorus.orchestrate.call` is any of those calls (the same `run_slot` as a voter). `chorus.orchestrate.advance`
is the callback after each wave: it looks at the run as stored and takes the next step, under the run's row
lock, so running it twice (a redelivered callback, the reaper beside a late callback) takes each step once:

- the planner's call failed, or its reply is no plan: the run fails with the reason;
- the plan is read and no worker exists yet: the plan is stored on the run (`result["subtasks"]`) and one
  worker slot is added per subtask (`repo.add_slots`: slots 1..N, subtask n in slot n), then sent, the first
  worker ahead of the rest when the others can read the document from the cache it writes;
- the workers (or a level of partial syntheses) are done: the next level of synthesis steps is added and
  sent (`sectioning.plan_level`, as a section run plans its tree), or, once the final step is done, the run
  is finished: succeeded, partial (a worker's result missing, or a plan cut at `max_workers`) or failed.

In the batch lane nothing is sent: the added slots are released for the lane's collector, so the plan, the
workers and the synthesis go as successive provider batches. The run's entry in the pattern registry
(`tasks.patterns`) is registered at the end of this module.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task, shared_task
from celery.result import AsyncResult
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeRole, OutcomeStatus, Pattern, Run, RunStatus, Session, WorkerOutcome, in_session, repo
from models.tables import utcnow
from settings import get_settings
from tasks import db, dispatch, patterns
from tasks.calls import run_slot
from tasks.requests import document_bytes
from workflows.calls import Attachment, CallRequest, CallResult
from workflows.dispatch import cacheable_prefix_tokens
from workflows.orchestrating import SubtaskPlan, describe_missing, part_label, span_label
from workflows.queues import CALLBACK_QUEUE
from workflows.runspec import OrchestrateSpec, orchestrate_spec
from workflows.sectioning import Part, covered_sections, output_tokens, plan_level, read_section_reply
from workflows.tokens import min_cacheable_tokens

log = logging.getLogger("chorus.tasks")
ORCHESTRATE_CALL = "chorus.orchestrate.call"
ORCHESTRATE_ADVANCE = "chorus.orchestrate.advance"
PLANNER_SLOT = 0
FINAL, PARTIAL = "final", "partial"
ADVANCE_WAIT_S = 1.0
MAX_ADVANCE_WAITS = 3600


@shared_task(name=ORCHESTRATE_CALL, bind=True, max_retries=None)  # attempts: see tasks.calls
def call(self: Task, run_id: str, slot: int, model: str, task: str = "") -> dict[str, Any]:
    """The planner, a worker or a synthesis step. `model` and `task` (the task's name, and a worker's
    subtask) are labels for Flower; the slot row is the truth."""
    return run_slot(self, run_id, slot)


@shared_task(name=ORCHESTRATE_ADVANCE, bind=True, max_retries=None)  # bounded by MAX_ADVANCE_WAITS
def advance_task(self: Task, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    # A header task redelivered after it had stored its result is counted twice by the chord's join, so
    # the callback can come while a sibling still runs: wait for it (the reaper fails it in the end).
    db.bind()
    status, still_open = in_session(lambda s: repo.run_progress(s, run_id), write=False)
    if still_open and status is not None and not status.terminal and self.request.retries < MAX_ADVANCE_WAITS:
        raise self.retry(countdown=ADVANCE_WAIT_S)
    try:
        return advance(self.app, run_id, bind=False)
    except Exception as exc:  # noqa: BLE001 - a raising callback would leave the run open forever
        log.exception("the next step of orchestrate run %s failed", run_id)
        return _fail(run_id, f"internal error while planning the next step: {type(exc).__name__}: {exc}")


# ----- the next step ------------------------------------------------------------------------------
# What a step added: ((slot, role, model, Flower's label) of each new slot, the plan, the config, the text).
Added = tuple[list[tuple[int, OutcomeRole, str, str]], SubtaskPlan, dict[str, Any], str]


def advance(app: Celery, run_id: str, *, bind: bool = True) -> dict[str, Any]:
    """Take the run's next step (see the module's docstring) and send what it added; what it did."""
    if bind:
        db.bind()
    step = in_session(lambda s: _next_step(s, run_id))
    if isinstance(step, dict):
        return step
    added, plan, config, text = step
    slots = [slot for slot, _, _, _ in added]
    if config.get("lane") == "batch":
        return {"run_id": run_id, "status": "running", "released": slots}
    if not added:
        return {"run_id": run_id, "status": "running", "sent": []}
    first = _leader(added, plan, config, text)
    calls = {slot: dispatch.call_signature(app, role, run_id, slot, model, label) for slot, role, model, label in added}
    header = [sig for slot, sig in calls.items() if slot not in first]
    lead = [sig for slot, sig in calls.items() if slot in first]
    callback = app.signature(ORCHESTRATE_ADVANCE, args=(run_id,), queue=CALLBACK_QUEUE)
    dispatch.send_chord(app, run_id, header, callback, first=lead)
    return {"run_id": run_id, "status": "running", "sent": slots}


def _next_step(s: OrmSession, run_id: str) -> dict[str, Any] | Added:
    run = repo.load_run_locked(s, run_id)
    if run is None:
        return {"run_id": run_id, "status": "failed", "error": "unknown run"}
    if run.status.terminal:
        return {"run_id": run_id, "status": run.status.value}
    by_slot = {o.slot: o for o in run.outcomes}
    if any(not o.status.terminal for o in run.outcomes):
        return {"run_id": run_id, "status": "running"}  # a call still runs: its own callback comes later
    spec = orchestrate_spec(run.config)
    plan = _plan_of(spec, by_slot[PLANNER_SLOT])
    if plan is None:
        return _finish(s, run, spec, None)
    if not any(o.role is OutcomeRole.WORKER for o in run.outcomes):
        run.result = {"status": "running", **plan_json(plan)}  # shown while the workers run
        return _add(s, run, plan, [repo.SlotSpec(i + 1, OutcomeRole.WORKER, spec.work_model, title=subtask.title)
                                   for i, subtask in enumerate(plan.subtasks)])
    if any(o.prompt_variant == FINAL for o in run.outcomes if o.role is OutcomeRole.REDUCE):
        return _finish(s, run, spec, plan)
    wanted = _synthesis_level(by_slot, spec)
    return _add(s, run, plan, wanted) if wanted else _finish(s, run, spec, plan)


def _add(s: OrmSession, run: Run, plan: SubtaskPlan, wanted: list[repo.SlotSpec]) -> Added:
    """Add the slots (each once: a slot number the run has is left as it is) and say which were added."""
    added = set(repo.add_slots(s, run.id, wanted))
    task = run.config.get("task_name", "")
    return ([(w.slot, w.role, w.model, _label(task, w.title)) for w in wanted if w.slot in added], plan,
            run.config, run.document.text)


def _plan_of(spec: OrchestrateSpec, planner: WorkerOutcome) -> SubtaskPlan | None:
    """The plan the planner's stored reply holds (checked when its slot succeeded), or None."""
    if planner.status is not OutcomeStatus.SUCCEEDED:
        return None
    plan, _ = spec.read_plan(planner.raw_output or "", None)
    return plan


def plan_json(plan: SubtaskPlan) -> dict[str, Any]:
    """What a run shows of its plan: `subtasks` (title, instructions, focus) and the titles `dropped`."""
    return {"subtasks": [s.to_json() for s in plan.subtasks], "dropped": list(plan.dropped)}


def _label(task: str, title: str | None) -> str:
    """Flower's label of a worker's or a synthesis step's call: the task's name and the subtask's title (the
    subtasks a step combines)."""
    return f"{task}: {title}" if task and title else task or title or ""


def _synthesis_level(by_slot: dict[int, WorkerOutcome], spec: OrchestrateSpec) -> list[repo.SlotSpec]:
    """The next level's synthesis steps over the items no step has merged yet (the workers' results, then
    partial syntheses), in subtask order: one final step when they fit one call's budget, else groups of
    partial steps (a lone item is carried up). Empty when no item succeeded."""
    inputs = _inputs_of(by_slot)
    consumed = {i for o in by_slot.values() for i in (o.inputs or [])}
    items = [slot for slot, o in by_slot.items()
             if o.role in (OutcomeRole.WORKER, OutcomeRole.REDUCE) and slot not in consumed]
    items.sort(key=lambda slot: min(covered_sections([slot], inputs, set(by_slot)) or [slot]))
    ok = [slot for slot in items if by_slot[slot].status is OutcomeStatus.SUCCEEDED]
    if not ok:
        return []
    groups = plan_level([output_tokens(by_slot[slot].raw_output) for slot in ok], spec.synthesis_budget_tokens)
    level = max((o.level or 0) for o in by_slot.values()) + 1
    next_slot = max(by_slot) + 1
    wanted: list[repo.SlotSpec] = []
    for members in [ok] if groups is None else [[ok[j] for j in g] for g in groups]:
        if len(members) == 1 and groups is not None:
            continue  # carried up unchanged
        leaves = covered_sections(members, inputs, set(by_slot))
        wanted.append(repo.SlotSpec(next_slot, OutcomeRole.REDUCE, spec.reduce_model,
                                    prompt_variant=FINAL if groups is None else PARTIAL,
                                    title=span_label(leaves[0], leaves[-1]) if leaves else "synthesis",
                                    inputs=tuple(members), level=level))
        next_slot += 1
    return wanted


def _inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def _succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}


def _leader(added: Sequence[tuple[int, OutcomeRole, str, str]], plan: SubtaskPlan, config: dict[str, Any],
            text: str) -> set[int]:
    """Cache-aware dispatch of the workers: the first goes ahead and writes the document to the cache when
    another worker can read it (two or more, the prefix at the model's cache minimum by chorus's estimate);
    the others follow once it has answered. Nothing waits before a synthesis step."""
    first = next((slot for slot, role, _, _ in added if role is OutcomeRole.WORKER and slot == 1), None)
    if first is None or len(added) < 2:
        return set()
    request = orchestrate_spec(config).worker_request(plan, 0, _document(orchestrate_spec(config), text))
    return {first} if cacheable_prefix_tokens(request) >= min_cacheable_tokens(request.model) else set()


# ----- the end --------------------------------------------------------------------------------------
def finish_orchestrate(run_id: str, *, bind: bool = True) -> dict[str, Any]:
    """Finish the run from what its slots hold now (its open slots left as they are). Safe to call twice."""
    if bind:
        db.bind()

    def finish(s: OrmSession) -> dict[str, Any]:
        run = repo.load_run_locked(s, run_id)
        if run is None:
            return {"run_id": run_id, "status": "failed", "error": "unknown run"}
        if run.status.terminal:
            return {"run_id": run_id, "status": run.status.value}
        spec = orchestrate_spec(run.config)
        by_slot = {o.slot: o for o in run.outcomes}
        return _finish(s, run, spec, _plan_of(spec, by_slot[PLANNER_SLOT]))

    return in_session(finish)


def _finish(s: OrmSession, run: Run, spec: OrchestrateSpec, plan: SubtaskPlan | None) -> dict[str, Any]:
    by_slot = {o.slot: o for o in run.outcomes}
    if plan is None:
        planner = by_slot[PLANNER_SLOT]
        reason = f"the planner's call failed, so no worker was sent: {planner.error or planner.status.value}"
        result: dict[str, Any] = {"synthesis": None, "subtasks": [], "dropped": [], "workers": 0,
                                  "workers_succeeded": 0, "missing": [], "synthesis_steps": 0, "levels": 0,
                                  "status": RunStatus.FAILED.value, "reason": reason}
        repo.finish_run(s, run, status=RunStatus.FAILED, result=result, error=reason)
        return {"run_id": run.id, **result}
    titles = [t.title for t in plan.subtasks]
    workers = [o for o in run.outcomes if o.role is OutcomeRole.WORKER]
    steps = [o for o in run.outcomes if o.role is OutcomeRole.REDUCE]
    finals = [o for o in steps if o.prompt_variant == FINAL]
    final = finals[-1] if finals else None
    covered = set(covered_sections([final.slot], _inputs_of(by_slot), _succeeded(by_slot))) if final else set()
    missing = [n for n in range(1, len(plan.subtasks) + 1) if n not in covered]
    text = final.raw_output if final is not None and final.status is OutcomeStatus.SUCCEEDED else None
    if text is not None and spec.reduce.output_schema is not None:
        value, unreadable = read_section_reply(text, spec.reduce.output_schema, None)  # checked when it succeeded
        text = json.dumps(value, ensure_ascii=False, indent=2) if unreadable is None else text
    done = sum(1 for o in workers if o.status is OutcomeStatus.SUCCEEDED)
    if text is None:
        status = RunStatus.FAILED
        if final is not None:
            reason = f"the final synthesis failed: {final.error}"
        elif done:
            reason = f"the synthesis never finished ({done} of {len(plan.subtasks)} workers had succeeded)"
        else:
            reason = f"no worker succeeded ({describe_missing(missing, titles)})"
    else:
        notes = [describe_missing(missing, titles), plan.note or ""]
        reason = "; ".join(n for n in notes if n)
        status = RunStatus.PARTIAL if reason else RunStatus.SUCCEEDED
    result = {"synthesis": text, **plan_json(plan), "workers": len(plan.subtasks), "workers_succeeded": done,
              "missing": missing, "synthesis_steps": len(steps), "levels": max((o.level or 0) for o in steps)
              if steps else 0, "status": status.value, "reason": reason}
    repo.finish_run(s, run, status=status, result=result, error=reason or None)
    return {"run_id": run.id, **result}


def _fail(run_id: str, reason: str) -> dict[str, Any]:
    def fail(s: OrmSession) -> None:
        run = repo.load_run(s, run_id)
        if run is not None and not run.status.terminal:
            repo.finish_run(s, run, status=RunStatus.FAILED, result={"reason": reason}, error=reason)

    in_session(fail)
    return {"run_id": run_id, "status": "failed", "error": reason}


def reap_orchestrate(app: Celery, run_id: str) -> dict[str, Any]:
    """For the reaper: a run whose slots are all done but whose callback never came goes on with its next
    step; one past its time (CHORUS_REAP_AFTER_S, a lane run CHORUS_LANE_EXPIRE_S; its open slots already
    failed by the reaper) is finished as it is."""
    db.bind()
    settings = get_settings()

    def expired(s: OrmSession) -> bool | None:
        run = repo.load_run(s, run_id)
        if run is None or run.status.terminal:
            return None
        began = repo.as_utc(run.submitted_at or run.created_at)
        after = settings.lane_expire_s if run.config.get("lane") == "batch" else settings.reap_after_s
        return began is None or utcnow() - began > dt.timedelta(seconds=after)

    late = in_session(expired, write=False)
    if late is None:
        return {"run_id": run_id, "status": "done"}
    return finish_orchestrate(run_id, bind=False) if late else advance(app, run_id, bind=False)


# ----- messages -------------------------------------------------------------------------------------
def send_orchestrate(app: Celery, run_id: str, config: dict[str, Any], callback_id: str | None = None
                     ) -> AsyncResult:
    """A stored run's first wave: the planner's call, then `advance`."""
    planner = dispatch.call_signature(app, OutcomeRole.PLANNER, run_id, PLANNER_SLOT, config["plan"]["model"],
                                      config.get("task_name", ""))
    callback = app.signature(ORCHESTRATE_ADVANCE, args=(run_id,), queue=CALLBACK_QUEUE)
    return dispatch.send_chord(app, run_id, [planner], callback)


def lane_advance(app: Celery, run_id: str) -> dict[str, Any]:
    """A lane run whose released calls are all done: its next step, released for the collector."""
    return advance(app, run_id, bind=False)


# ----- a slot's request and reply -----------------------------------------------------------------
def _document(spec: OrchestrateSpec, text: str) -> str | Attachment:
    doc = spec.document
    return spec.document_of(text, document_bytes(doc.blob, dict(doc.files)) if doc is not None else None)


def orchestrate_request(claim: repo.Claim, spec: OrchestrateSpec, text: str, tags: tuple[tuple[str, str], ...]
                        ) -> CallRequest:
    """The planner's call, a worker's (its subtask read from the planner's stored reply), or a synthesis
    step's over its inputs."""
    if claim.role is OutcomeRole.PLANNER:
        return spec.planner_request(_document(spec, text), tags)
    with Session() as s:
        by_slot = repo.outcomes_by_slot(s, claim.run_id)
    plan = _plan_of(spec, by_slot[PLANNER_SLOT])
    if plan is None:
        raise LookupError(f"run {claim.run_id} has no plan for slot {claim.slot}")
    if claim.role is OutcomeRole.WORKER:
        return spec.worker_request(plan, claim.slot - 1, _document(spec, text), tags, model=claim.model)
    return _synthesis_request(claim, spec, plan, by_slot, tags)


def _synthesis_request(claim: repo.Claim, spec: OrchestrateSpec, plan: SubtaskPlan,
                       by_slot: dict[int, WorkerOutcome], tags: tuple[tuple[str, str], ...]) -> CallRequest:
    row = by_slot[claim.slot]
    parts = []
    for i in row.inputs or []:
        item = by_slot[i]
        label = part_label(i - 1, item.title or "") if item.role is OutcomeRole.WORKER else item.title or f"part {i}"
        parts.append(Part(label, item.raw_output or "", item.output_tokens or 0))
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(row.inputs or [], _inputs_of(by_slot), _succeeded(by_slot)))
        missing = [n for n in range(1, len(plan.subtasks) + 1) if n not in covered]
    return spec.synthesis_request(claim.model, parts, missing, final=final, tags=tags)


def orchestrate_fields(claim: repo.Claim, spec: OrchestrateSpec, config: dict[str, Any], result: CallResult
                       ) -> dict[str, Any]:
    """A reply that is no result fails its slot with the reason (its usage kept: it was paid): a planner's
    reply that is no plan, a worker's or a synthesis' refusal, cut reply or one off its output schema."""
    if claim.role is OutcomeRole.PLANNER:
        _, problem = spec.read_plan(result.text, result.stop_reason, result.no_answer)
    else:
        schema = spec.work.output_schema if claim.role is OutcomeRole.WORKER else spec.reduce.output_schema
        _, problem = read_section_reply(result.text, schema, result.stop_reason, result.no_answer)
    return {} if problem is None else {"status": OutcomeStatus.FAILED, "error": problem}


patterns.register(patterns.PatternEntry(
    pattern=Pattern.ORCHESTRATE,
    roles=frozenset({OutcomeRole.PLANNER, OutcomeRole.WORKER, OutcomeRole.REDUCE}),
    call_task=ORCHESTRATE_CALL,
    spec=orchestrate_spec,
    build_request=orchestrate_request,
    interpret=orchestrate_fields,
    send=send_orchestrate,
    finish=reap_orchestrate,
    lane_callback=lane_advance,
    call_noun="call",
    shows="plan",
))
