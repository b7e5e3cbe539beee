"""Voting tasks: `chorus.vote.call` (one per voter, chord header) and `chorus.vote.tally` (callback),
the vote's messages, how a voter's request is built and its reply read, and the vote's entry in the
pattern registry (`tasks.patterns`, registered at the end of this module)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, Task, shared_task
from celery.canvas import Signature
from celery.result import AsyncResult
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeRole, OutcomeStatus, Pattern, Run, RunStatus, WorkerOutcome, in_session, repo
from tasks import db, dispatch, patterns
from tasks.calls import run_slot
from tasks.requests import document_bytes
from workflows.adaptive import decide
from workflows.calls import CallRequest, CallResult
from workflows.dispatch import expects_cache_read
from workflows.escalation import (
    ESCALATION_NAME,
    Escalated,
    decide_with_escalation,
    escalation_reason,
    escalation_request,
)
from workflows.queues import CALLBACK_QUEUE
from workflows.registry import supports_structured_outputs
from workflows.runspec import VoteSpec, vote_spec
from workflows.voting import Tally, TiePolicy, VoteStatus, default_quorum, read_answer, tally, task_of

VOTE_CALL = "chorus.vote.call"
VOTE_TALLY = "chorus.vote.tally"

TALLY_WAIT_S = 1.0
MAX_TALLY_WAITS = 3600


@shared_task(name=VOTE_CALL, bind=True, max_retries=None)  # attempts: see tasks.calls
def call(self: Task, run_id: str, slot: int, model: str, task: str = "") -> dict[str, Any]:
    """One voter. `model` and `task` (the task's name) are only labels so Flower shows who this is; the
    slot row is the truth."""
    return run_slot(self, run_id, slot)


@shared_task(name=VOTE_TALLY, bind=True, max_retries=None)  # bounded by MAX_TALLY_WAITS
def tally_votes(self: Task, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    # A header task redelivered after it had already stored its result (a lost ack) is counted twice
    # by the chord's join, so the callback can fire while a sibling is still running: wait for it.
    # Bounded: after CHORUS_REAP_AFTER_S the reaper fails the open slots and this tally goes ahead.
    db.bind()
    status, still_open = in_session(lambda s: repo.run_progress(s, run_id), write=False)
    if status is not None and status.terminal:
        return finish_vote(run_id)  # cancelled (or reaped) meanwhile: it keeps what it has
    if still_open and self.request.retries < MAX_TALLY_WAITS:
        raise self.retry(countdown=TALLY_WAIT_S)
    return advance_vote(self.app, run_id, bind=False)


# What a tally sends next: the role of the calls, their (slot, model)s, and the run's config.
Wave = tuple[OutcomeRole, list[tuple[int, str]], dict[str, Any]]


def advance_vote(app: Celery, run_id: str, *, bind: bool = True) -> dict[str, Any]:
    """Every sent voter has answered: finish the vote; or for an adaptive vote whose voters not yet
    asked could still change the result, send the next wave; or for a close vote of a task that
    escalates, send the one escalated call (either's own tally comes back here). In the batch lane the
    calls are only released: the lane's collector sends them."""
    if bind:
        db.bind()
    step = in_session(lambda s: _advance(s, run_id))
    if isinstance(step, dict):
        return step  # tallied, in the same transaction that read the run
    role, slots, config = step
    if config.get("lane") == "batch":
        return {"run_id": run_id, "status": "running", "released": [slot for slot, _ in slots]}
    header, callback = wave_messages(app, run_id, slots, config.get("task_name", ""), role=role)
    dispatch.send_chord(app, run_id, header, callback)
    return {"run_id": run_id, "status": "running", "sent": [slot for slot, _ in slots]}


def _advance(s: OrmSession, run_id: str) -> dict[str, Any] | Wave:
    """The vote's tally (a dict), or the calls to send next (an adaptive vote's next wave, or the
    escalated call): one read of the run for a vote that is not adaptive."""
    run = repo.load_run(s, run_id)
    if run is not None and not run.status.terminal and run.config.get("adaptive"):
        wave = _next_wave(s, run_id)
        if wave is not None:
            return OutcomeRole.VOTER, *wave
        run = repo.load_run_locked(s, run_id)  # as the decision left it (voters skipped)
    return _tally_run(s, run_id, run, escalate=True)


def _next_wave(s: OrmSession, run_id: str) -> tuple[list[tuple[int, str]], dict[str, Any]] | None:
    """Decide an adaptive vote after a wave, under a lock on the run: the next wave's (slot, model)s,
    released; or None when the vote is to be tallied now (held voters, if any, are skipped)."""
    run = repo.load_run_locked(s, run_id)
    if run is None or run.status.terminal or not run.config.get("adaptive"):
        return None
    config = run.config
    voters = [o for o in run.outcomes if o.role is OutcomeRole.VOTER]
    held = [o for o in voters if o.status is OutcomeStatus.PENDING and o.queued_at is None]
    if not held:
        return None
    answers = [o.answer if o.status is OutcomeStatus.SUCCEEDED else None for o in voters if o.status.terminal]
    decision = decide(answers, config["labels"], remaining=len(held), panel=len(voters),
                      quorum=config.get("quorum") or default_quorum(len(voters)),
                      tie_policy=TiePolicy(config.get("tie_policy", TiePolicy.NONE)),
                      stop_when_agree=config["adaptive"].get("stop_when_agree"))
    if decision.decided:
        repo.skip_slots(s, run_id, f"not asked: {decision.reason}")
        return None
    wave = held[: decision.next_wave]
    released = set(repo.release_slots(s, run_id, [o.slot for o in wave]))
    return [(o.slot, o.model) for o in wave if o.slot in released], config


def finish_vote(run_id: str, *, bind: bool = True) -> dict[str, Any]:
    """Tally what the run's outcomes hold and store the result. Safe to call twice (and, after a
    transient database error, it is: in_session runs it again). `bind=False`: on the database the
    caller has bound (a client with settings of its own)."""
    if bind:
        db.bind()
    return in_session(lambda s: _finish_vote(s, run_id))


def _finish_vote(s: OrmSession, run_id: str) -> dict[str, Any]:
    done = _tally_run(s, run_id, repo.load_run(s, run_id))  # escalate=False: never a wave
    assert isinstance(done, dict)
    return done


def _tally_run(s: OrmSession, run_id: str, run: Run | None, *, escalate: bool = False) -> dict[str, Any] | Wave:
    """Tally the panel and finish the run, or (`escalate`: the vote's own tally, the reaper's, the lane's)
    add the escalated call when the task escalates and the tally is close (`Wave`: the caller sends it).
    A run whose escalated call has ended is decided with it; one whose call is still open waits for it."""
    if run is None:
        return {"run_id": run_id, "status": "failed", "error": "unknown run"}
    if run.status.terminal:
        return {"run_id": run_id, "status": run.status.value, **(run.result or {})}
    result, unfinished = _panel_tally(run)
    escalated = next((o for o in run.outcomes if o.role is OutcomeRole.ESCALATION), None)
    if escalated is not None and not escalated.status.terminal:
        return {"run_id": run_id, "status": "running", "escalating": escalated.slot}
    rules = task_of(run.config).vote
    why = escalation_reason(result, rules)
    if escalated is None and escalate and why is not None:
        return _escalate(s, run, why) or {"run_id": run_id, "status": "running", "escalating": "added by another"}
    if escalated is not None:
        return _finish_escalated(s, run, result, escalated, why or escalated.title or "escalated", unfinished)
    return _finish_panel(s, run, result, unfinished)


def _panel_tally(run: Run) -> tuple[Tally, int]:
    """The panel's tally (voters only: a pre-warm call and the escalated call are none), and how many of
    its voters never finished (counted as failed)."""
    config = run.config
    voters = [o for o in run.outcomes if o.role is OutcomeRole.VOTER]
    answers = [o.answer for o in voters if o.status is OutcomeStatus.SUCCEEDED]
    unfinished = sum(1 for o in voters if not o.status.terminal)
    failed = sum(1 for o in voters if o.status is OutcomeStatus.FAILED) + unfinished
    skipped = sum(1 for o in voters if o.status is OutcomeStatus.SKIPPED)
    result = tally(
        answers,
        config["labels"],
        failed=failed,
        skipped=skipped,
        quorum=config.get("quorum"),
        tie_policy=TiePolicy(config.get("tie_policy", TiePolicy.NONE)),
        low_agreement_below=config.get("low_agreement_below", 0.6),
    )
    return result, unfinished


def _never_finished(summary: dict[str, Any], unfinished: int) -> dict[str, Any]:
    if unfinished:
        summary["reason"] = (summary["reason"] + "; " if summary["reason"] else "") + (
            f"{unfinished} voter(s) never finished"
        )
    return summary


def _finish_panel(s: OrmSession, run: Run, result: Tally, unfinished: int) -> dict[str, Any]:
    summary = _never_finished(result.to_json(), unfinished)
    status = RunStatus(result.status.value)
    error = summary["reason"] or None if result.status is not VoteStatus.SUCCEEDED else None
    repo.finish_run(s, run, status=status, result=summary, answer=result.winner,
                    confidence=result.confidence, low_agreement=result.low_agreement, error=error)
    return {"run_id": run.id, **summary}


def _escalate(s: OrmSession, run: Run, why: str) -> Wave | None:
    """Add the escalated call's slot (after every voter's and pre-warm's), once: the slot number is fixed
    and `repo.add_slots` adds a slot the run already has never again, so of two tallies racing only the
    one whose insert went in sends the call. None when another tally added it."""
    model = task_of(run.config).vote.escalate_to
    assert model is not None  # escalation_reason is None without escalate_to
    slot = max((o.slot for o in run.outcomes), default=-1) + 1
    added = repo.add_slots(s, run.id, [repo.SlotSpec(slot, OutcomeRole.ESCALATION, model, ESCALATION_NAME,
                                                     title=why)])
    return (OutcomeRole.ESCALATION, [(slot, model)], run.config) if added else None


def _finish_escalated(s: OrmSession, run: Run, panel: Tally, call: WorkerOutcome, why: str, unfinished: int
                      ) -> dict[str, Any]:
    """Finish a vote whose escalated call has ended: its label decides, or the panel's result stands."""
    answer = call.answer if call.status is OutcomeStatus.SUCCEEDED else None
    decision = decide_with_escalation(panel, Escalated(call.model, answer, None if answer else call.error), why=why)
    summary = _never_finished(decision.to_json(), unfinished)
    status = RunStatus(decision.status.value)
    error = None if status is RunStatus.SUCCEEDED else summary["reason"] or None
    repo.finish_run(s, run, status=status, result=summary, answer=decision.winner, confidence=panel.confidence,
                    low_agreement=panel.low_agreement, error=error)
    return {"run_id": run.id, **summary}


# ----- messages ---------------------------------------------------------------------------------
def vote_messages(app: Celery, run_id: str, config: dict[str, Any], callback_id: str
                  ) -> tuple[list[Signature], list[Signature], Signature]:
    """(leaders, header, tally) of a stored vote. Leaders (cache-aware dispatch) go first, so the
    rest of the panel reads the prompt cache they wrote."""
    calls = {v["slot"]: dispatch.call_signature(app, OutcomeRole.VOTER, run_id, v["slot"], v["model"],
                                                config.get("task_name", ""))
             for v in config["voters"]}
    tally = app.signature(VOTE_TALLY, args=(run_id,), queue=CALLBACK_QUEUE, task_id=callback_id)
    # Pre-warm calls (`max_tokens: 0`) write each model's prefix before any voter goes.
    prewarm = [dispatch.call_signature(app, OutcomeRole.PREWARM, run_id, slot, model, config.get("task_name", ""))
               for slot, model in (config.get("dispatch") or {}).get("prewarm") or ()]
    adaptive = config.get("adaptive")
    if adaptive:
        # Only the first wave goes now (it holds the cache leaders, if any); the tally sends the rest
        # in waves for as long as they can change the result (advance_vote).
        return prewarm, [calls[slot] for slot in adaptive["first_wave"]], tally
    leaders = tuple((config.get("dispatch") or {}).get("leaders") or ())
    header = [sig for slot, sig in calls.items() if slot not in leaders]
    return prewarm + [calls[slot] for slot in leaders], header, tally


def wave_messages(app: Celery, run_id: str, slots: Sequence[tuple[int, str]], task: str = "", *,
                  role: OutcomeRole = OutcomeRole.VOTER) -> tuple[list[Signature], Signature]:
    """An adaptive vote's next wave, or the escalated call: the calls of `slots` ((slot, model) each,
    of `role`) and a tally after them."""
    header = [dispatch.call_signature(app, role, run_id, slot, model, task) for slot, model in slots]
    return header, app.signature(VOTE_TALLY, args=(run_id,), queue=CALLBACK_QUEUE)


def send_vote(app: Celery, run_id: str, config: dict[str, Any], callback_id: str | None) -> AsyncResult:
    assert callback_id is not None  # a vote's tally has the id its run row names (chord_id)
    first, header, tally = vote_messages(app, run_id, config, callback_id)
    return dispatch.send_chord(app, run_id, header, tally, first=first)


# ----- a voter's request and reply -----------------------------------------------------------------
def voter_request(claim: repo.Claim, spec: VoteSpec, text: str, tags: tuple[tuple[str, str], ...]) -> CallRequest:
    """A voter's request (or a pre-warm's): the document is the text, or the PDF or image itself."""
    doc = spec.document
    document = doc.attachment(text, document_bytes(doc.blob, dict(doc.files))) if doc is not None else text
    if claim.role is OutcomeRole.PREWARM:
        return spec.prewarm_request(claim.model, document, tags)
    if claim.role is OutcomeRole.ESCALATION:
        request = escalation_request(spec, document, tags, slot=claim.slot)
        if request is None:
            raise ValueError("an escalation slot in a run whose task has no escalate_to")
        return request
    voter = spec.voter(claim.slot, claim.model, claim.prompt_variant, claim.temperature)
    return spec.voter_request(voter, document, tags)


def voter_fields(claim: repo.Claim, spec: VoteSpec, config: dict[str, Any], result: CallResult) -> dict[str, Any]:
    """A voter's answer (or why it abstained), and whether a follower of cache-aware dispatch missed the
    cache; the escalated call's answer, read as a voter's; a pre-warm's reply means nothing."""
    if claim.role is OutcomeRole.PREWARM:
        return {}
    answer, abstained = read_answer(result.text, config["labels"], stop_reason=result.stop_reason,
                                    no_answer=result.no_answer, structured=supports_structured_outputs(claim.model))
    fields: dict[str, Any] = {"answer": answer, "error": abstained}
    follower = claim.role is OutcomeRole.VOTER and expects_cache_read(config, claim.slot, claim.model)
    if follower and not result.usage.estimated:
        # A follower of cache-aware dispatch: it was sent after its leader so as to read the prefix.
        fields["cache_miss"] = result.usage.cache_read_input_tokens == 0
    return fields


def lane_advance(app: Celery, run_id: str) -> dict[str, Any]:
    """A lane vote whose released voters are all done: finish it, or for an adaptive vote release its next
    wave (`"released"`: the lane then asks for a collect)."""
    return advance_vote(app, run_id, bind=False)


patterns.register(patterns.PatternEntry(
    pattern=Pattern.VOTE,
    roles=frozenset({OutcomeRole.VOTER, OutcomeRole.PREWARM, OutcomeRole.ESCALATION}),
    call_task=VOTE_CALL,
    spec=vote_spec,
    build_request=voter_request,
    interpret=voter_fields,
    send=send_vote,
    callback_ends_run=True,
    finish=advance_vote,  # an adaptive vote may still have a wave to send
    lane_callback=lane_advance,
    settle=lambda run_id: finish_vote(run_id, bind=False),
    call_noun="voter",
    shows="tally",
    shares_prefix=True,
))
