"""Voting tasks: `chorus.vote.call` (one per voter, chord header) and `chorus.vote.tally` (callback)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from sqlalchemy.orm import Session as OrmSession

from models import OutcomeStatus, RunStatus, in_session, repo
from tasks import db, dispatch
from tasks.calls import run_slot
from workflows.voting import TiePolicy, VoteStatus, tally

TALLY_WAIT_S = 1.0
MAX_TALLY_WAITS = 3600


@shared_task(name=dispatch.VOTE_CALL, bind=True, max_retries=None)  # attempts: see tasks.calls
def call(self: Task, run_id: str, slot: int, model: str, task: str = "") -> dict[str, Any]:
    """One voter. `model` and `task` (the task's name) are only labels so Flower shows who this is; the
    slot row is the truth."""
    return run_slot(self, run_id, slot)


@shared_task(name=dispatch.VOTE_TALLY, bind=True, max_retries=None)  # bounded by MAX_TALLY_WAITS
def tally_votes(self: Task, results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    # A header task redelivered after it had already stored its result (a lost ack) is counted twice
    # by the chord's join, so the callback can fire while a sibling is still running: wait for it.
    # Bounded: after CHORUS_REAP_AFTER_S the reaper fails the open slots and this tally goes ahead.
    db.bind()
    status = in_session(lambda s: repo.run_status(s, run_id), write=False)
    if status is not None and status.terminal:
        return finish_vote(run_id)  # cancelled (or reaped) meanwhile: it keeps what it has
    still_open = in_session(lambda s: repo.count_open_slots(s, run_id), write=False)
    if still_open and self.request.retries < MAX_TALLY_WAITS:
        raise self.retry(countdown=TALLY_WAIT_S)
    return finish_vote(run_id)


def finish_vote(run_id: str, *, bind: bool = True) -> dict[str, Any]:
    """Tally what the run's outcomes hold and store the result. Safe to call twice (and, after a
    transient database error, it is: in_session runs it again). `bind=False`: on the database the
    caller has bound (a client with settings of its own)."""
    if bind:
        db.bind()
    return in_session(lambda s: _finish_vote(s, run_id))


def _finish_vote(s: OrmSession, run_id: str) -> dict[str, Any]:
    run = repo.load_run(s, run_id)
    if run is None:
        return {"run_id": run_id, "status": "failed", "error": "unknown run"}
    if run.status.terminal:
        return {"run_id": run_id, "status": run.status.value, **(run.result or {})}
    config = run.config
    answers = [o.answer for o in run.outcomes if o.status is OutcomeStatus.SUCCEEDED]
    unfinished = sum(1 for o in run.outcomes if not o.status.terminal)
    failed = sum(1 for o in run.outcomes if o.status is OutcomeStatus.FAILED) + unfinished
    result = tally(
        answers,
        config["labels"],
        failed=failed,
        quorum=config.get("quorum"),
        tie_policy=TiePolicy(config.get("tie_policy", TiePolicy.NONE)),
        low_agreement_below=config.get("low_agreement_below", 0.6),
    )
    summary = result.to_json()
    if unfinished:
        summary["reason"] = (summary["reason"] + "; " if summary["reason"] else "") + (
            f"{unfinished} voter(s) never finished"
        )
    status = RunStatus(result.status.value)
    error = summary["reason"] or None if result.status is not VoteStatus.SUCCEEDED else None
    repo.finish_run(s, run, status=status, result=summary, answer=result.winner,
                    confidence=result.confidence, low_agreement=result.low_agreement, error=error)
    return {"run_id": run_id, **summary}
