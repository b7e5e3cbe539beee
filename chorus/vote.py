"""Voting in the Python API: one document, N voters, a tally.

    from chorus import submit_vote, wait_for_run
    run_id = submit_vote("The battery died in a day.", labels="positive,negative,neutral", voters=5)
    run = wait_for_run(run_id, timeout=60)
    print(run.status, run.answer, run.confidence)

Submitting needs workers consuming the queues: `celery -A worker worker` against your broker, or
`chorus.embedded.embedded_worker(settings)` when no broker is configured (the CLI does that for you).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chorus.runs import celery_app, prepare, remember
from models import Pattern, RunStatus, Session, repo
from models.tables import OutcomeRole, utcnow
from settings import Settings, get_settings
from tasks import dispatch
from workflows.dispatch import Dispatch, cacheable_prefix_tokens, plan_dispatch
from workflows.errors import ConfigError
from workflows.voting import TiePolicy, Voter, build_panel, default_quorum, normalize_labels, vote_request


@dataclass(frozen=True)
class VotePlan:
    """A validated vote, ready to store and send. Building one writes nothing."""

    text: str
    labels: tuple[str, ...]
    panel: tuple[Voter, ...]
    quorum: int
    tie_policy: TiePolicy
    low_agreement_below: float
    external_id: str | None = None
    batch_id: str | None = None
    gold_label: str | None = None
    dispatch: Dispatch | None = None  # None: every voter at once

    def config(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "voters": [asdict(v) for v in self.panel],
            "quorum": self.quorum,
            "tie_policy": self.tie_policy.value,
            "low_agreement_below": self.low_agreement_below,
            **({"dispatch": self.dispatch.to_json()} if self.dispatch else {}),
        }


def plan_vote(
    text: str,
    labels: str | Sequence[str],
    *,
    voters: int = 5,
    models: Sequence[str] | None = None,
    quorum: int | None = None,
    tie_policy: str = TiePolicy.NONE.value,
    low_agreement_below: float = 0.6,
    external_id: str | None = None,
    batch_id: str | None = None,
    gold_label: str | None = None,
    cache_aware: bool = True,
    settings: Settings | None = None,
) -> VotePlan:
    """Check a vote's inputs; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    try:
        label_set = normalize_labels(labels)
        panel = build_panel(voters, list(models or [settings.default_model]))
        policy = TiePolicy(tie_policy)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not text or not text.strip():
        raise ConfigError("the document is empty (nothing but whitespace); give some text to vote on")
    unknown = sorted({v.model for v in panel} - set(settings.model_list))
    if unknown:
        raise ConfigError(
            f"model(s) {', '.join(unknown)} have no queue; add them to CHORUS_MODELS (now: {settings.models})"
        )
    if quorum is not None and not 1 <= quorum <= voters:
        raise ConfigError(f"quorum must be between 1 and {voters} (the number of voters), got {quorum}")
    gold = gold_label.strip().lower() if gold_label else None
    if gold is not None and gold not in label_set:
        raise ConfigError(f"gold label {gold_label!r} is not one of the labels {', '.join(label_set)}")
    # The offline provider has no prompt cache: making voters wait for a leader would only cost time.
    prefix = cacheable_prefix_tokens(vote_request(panel[0], label_set, text))
    dispatch = plan_dispatch(panel, prefix, cache_aware=cache_aware and settings.provider_name == "anthropic")
    return VotePlan(text, label_set, tuple(panel), quorum or default_quorum(voters), policy, low_agreement_below,
                    external_id, batch_id, gold, dispatch)


def submit_vote(text: str, labels: str | Sequence[str], *, settings: Settings | None = None, **options: Any) -> str:
    """Validate, store and send a vote; returns the run id at once (`wait_for_run` waits).

    Options are those of `plan_vote`: voters, models, quorum, tie_policy, low_agreement_below,
    external_id, batch_id, gold_label.
    """
    settings = settings or get_settings()
    return submit_plan(plan_vote(text, labels, settings=settings, **options), settings=settings)


def submit_plan(plan: VotePlan, *, settings: Settings | None = None) -> str:
    """Store the run (document, run, one pending outcome per voter) and send its chord."""
    settings = settings or get_settings()
    prepare(settings)
    callback_id = uuid.uuid4().hex
    with Session.begin() as s:
        run = repo.create_run(
            s,
            text=plan.text,
            external_id=plan.external_id or f"inline-{callback_id[:8]}",
            pattern=Pattern.VOTE,
            provider=settings.provider_name,
            config=plan.config(),
            slots=[repo.SlotSpec(v.slot, OutcomeRole.VOTER, v.model, v.variant, v.temperature) for v in plan.panel],
            batch_id=plan.batch_id,
            gold_label=plan.gold_label,
        )
        run.status = RunStatus.RUNNING
        run.submitted_at = utcnow()
        run.chord_id = callback_id
        run_id = run.id

    remember(run_id, dispatch.send_vote(celery_app(settings), run_id, plan.config(), callback_id))
    return run_id
