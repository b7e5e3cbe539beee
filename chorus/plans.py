"""The client side of a pattern: a `Plan`, and the one `submit(plan)` that stores and sends any of them.

A plan is a validated run, ready to store and send; building one writes nothing. `chorus.vote.VotePlan`,
`chorus.section.SectionPlan` and `chorus.orchestrate.OrchestratePlan` are the ones there are. Budgets,
batches, `--dry-run`, cancel and status read a plan through this protocol only, never its type: they ask
its `pattern`, its `config()` (what the run stores and its workers read back), its `slots()` (one pending
outcome row each), its `estimate(...)` (an upper bound of its cost), its `calls()` and `noun` (for
`--dry-run`: "5 voter(s)"), its `models()` (who answers, for a batch's record) and `what` (the budget's
message: "this vote").

To add a pattern (say `orchestrate`):

1. write its worker side first (`tasks.patterns`: its entry in the worker's registry);
2. write `chorus/orchestrate.py`: a frozen dataclass with the members of `Plan` below, a
   `plan_orchestrate(document, *, ..., settings)` that checks its inputs, and a `submit_orchestrate`
   that is `submit(plan_orchestrate(...))`;
3. register its planner in `chorus.planners` (what a batch and a scheduled job call for each document).

Nothing else on the client side changes: `submit`, the budget, batches, cancel and `chorus status` work
from the protocol and from the worker's registry.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from chorus.budget import check_budget
from chorus.native import start_run
from chorus.runs import celery_app, ensure_workers, prepare, remember
from models import Pattern, RunStatus, Session, repo
from models.tables import utcnow
from settings import Settings, get_settings
from tasks import dispatch, patterns
from workflows.cost import Cost


class Plan(Protocol):
    """A validated run of one pattern, ready to store (`submit`)."""

    @property
    def pattern(self) -> Pattern:
        """The pattern its run is stored under; its worker side is `tasks.patterns.entry(pattern)`."""

    @property
    def noun(self) -> str:
        """What one of its calls is called in `--dry-run`'s count ("voter", "section")."""

    @property
    def what(self) -> str:
        """The run in a sentence about its budget ("this vote")."""

    @property
    def text(self) -> str:
        """The document's text (a PDF's or an image's text layer when it is read natively)."""

    @property
    def external_id(self) -> str | None: ...

    @property
    def batch_id(self) -> str | None: ...

    @property
    def gold_label(self) -> str | None:
        """The document's known answer, when the pattern has one (a vote's label); else None."""

    def config(self) -> dict[str, Any]:
        """What the run stores: its workers read it back as the pattern's spec (`workflows.runspec`)."""

    def slots(self) -> list[repo.SlotSpec]:
        """One pending outcome row per call known before it is sent (later ones are added by its callbacks)."""

    def document_spec(self) -> repo.DocumentSpec | None:
        """The document's kind and bytes to store (a PDF, an image), or None for plain text."""

    def uploads(self, settings: Settings) -> list[repo.BlobSpec]:
        """The bytes to upload once through the Files API before the run is sent."""

    def calls(self) -> int:
        """How many calls of `noun` it plans (`--dry-run`)."""

    def models(self) -> set[str]:
        """Every model its calls may use (who answers a batch)."""

    def estimate(self, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
        """An upper bound of what the run costs (`chorus.budget`); `lane="batch"`: at the lane's price."""


def submit(plan: Plan, *, settings: Settings | None = None) -> str:
    """Store the run (document, run, one pending outcome per slot) and send its messages; returns the run
    id at once (`wait_for_run` waits). With a budget (CHORUS_MAX_COST_USD) a run estimated above it is
    refused before anything is written; a document too large for one request is uploaded first; in
    embedded mode the worker that will run it is started (once per process)."""
    settings = settings or get_settings()
    if settings.max_cost_usd is not None:
        check_budget(plan.estimate(settings), settings.max_cost_usd, plan.what)
    prepare(settings)
    ensure_workers(settings)
    callback_id = uuid.uuid4().hex
    uploads = plan.uploads(settings)
    config = plan.config()
    with Session.begin() as s:
        run = repo.create_run(
            s, text=plan.text, external_id=plan.external_id or f"inline-{callback_id[:8]}", pattern=plan.pattern,
            provider=settings.provider_name, config=config, slots=plan.slots(), batch_id=plan.batch_id,
            gold_label=plan.gold_label, document=plan.document_spec(),
        )
        if not uploads:
            run.status = RunStatus.RUNNING
            run.submitted_at = utcnow()
        run.chord_id = callback_id
        run_id = run.id
    if uploads and not start_run(run_id, uploads, settings):
        return run_id  # failed with the upload's reason
    pending = dispatch.send_run(celery_app(settings), run_id, plan.pattern, config, callback_id)
    if patterns.entry(plan.pattern).callback_ends_run:
        remember(run_id, pending)  # `wait_for_run` hears of the end at once (a section's reduce is no end)
    return run_id
