"""Voting in the Python API: one document, N voters, a tally.

    from chorus import load_task, submit_vote, wait_for_run
    run_id = submit_vote("The battery died in a day.", labels="positive,negative,neutral", voters=5)
    run_id = submit_vote("Locked out since the update!", task=load_task("examples/ticket-urgency.toml"))
    run = wait_for_run(run_id, timeout=60)
    print(run.status, run.answer, run.confidence)

Submitting needs workers consuming the queues: `celery -A worker worker` against your broker, or
`chorus.embedded.embedded_worker(settings)` when no broker is configured (the CLI does that for you).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chorus.budget import estimate_vote
from chorus.native import (
    blob_of,
    check_pages,
    check_readable,
    check_size,
    document_spec,
    load_document,
    needs_upload,
)
from chorus.plans import submit
from models import Pattern, repo
from models.tables import OutcomeRole
from providers import provider_capabilities
from providers.counting import count_tokens
from settings import Settings, get_settings
from workflows.adaptive import first_wave
from workflows.attachments import document_config
from workflows.calls import Attachment
from workflows.cost import Cost
from workflows.dispatch import WARM_MODES, Dispatch, cacheable_prefix_tokens, needs_count, plan_dispatch
from workflows.errors import ConfigError, ProviderError
from workflows.escalation import check_escalation
from workflows.intake import check_text
from workflows.registry import context_window, effort_levels, supports_structured_outputs, unknown_model
from workflows.runspec import VoteSpec, vote_spec
from workflows.taskfile import SectionTask, VoteTask, labels_task, task_hash, with_vote_overrides
from workflows.tokens import request_tokens
from workflows.voting import TiePolicy, Voter, default_quorum, resolve_panel, vote_request

log = logging.getLogger("chorus.vote")


@dataclass(frozen=True)
class VotePlan:
    """A validated vote, ready to store and send. Building one writes nothing."""

    text: str
    task: VoteTask
    panel: tuple[Voter, ...]
    quorum: int
    tie_policy: TiePolicy
    low_agreement_below: float
    external_id: str | None = None
    batch_id: str | None = None
    gold_label: str | None = None
    dispatch: Dispatch | None = None  # None: every voter at once
    native: Attachment | None = None  # a PDF or an image Claude reads natively (`text` is its text layer)

    # The `chorus.plans.Plan` protocol: what budgets, batches, --dry-run and status read.
    @property
    def pattern(self) -> Pattern:
        return Pattern.VOTE

    @property
    def noun(self) -> str:
        return "voter"

    @property
    def what(self) -> str:
        return "this vote"

    def calls(self) -> int:
        return len(self.panel)

    def models(self) -> set[str]:
        """The voters' models, and the model close calls escalate to (`[vote] escalate_to`)."""
        escalate_to = self.task.vote.escalate_to
        return {v.model for v in self.panel} | ({escalate_to} if escalate_to else set())

    def estimate(self, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
        return estimate_vote(self, settings, count=count, lane=lane)

    @property
    def document(self) -> str | Attachment:
        """What each voter reads: the text, or the PDF or image itself."""
        return self.native if self.native is not None else self.text

    @property
    def labels(self) -> tuple[str, ...]:
        return self.task.label_names

    @property
    def first_wave(self) -> tuple[int, ...]:
        """The voters sent at once: all of them, or for an adaptive vote its first wave (the cache
        leaders when there are any, else the fewest voters who could decide the vote)."""
        rules = self.task.vote
        if not rules.adaptive:
            return tuple(v.slot for v in self.panel)
        leaders = self.dispatch.leaders if self.dispatch else ()
        n = first_wave(len(self.panel), self.quorum, len(leaders), rules.stop_when_agree)
        return tuple(leaders) if leaders else tuple(v.slot for v in self.panel[:n])

    def slots(self) -> list[repo.SlotSpec]:
        """One outcome row per voter; an adaptive vote's voters after the first wave are held back."""
        first = set(self.first_wave)
        warm = [repo.SlotSpec(slot, OutcomeRole.PREWARM, model, "prewarm")
                for slot, model in (self.dispatch.prewarm if self.dispatch else ())]
        return [repo.SlotSpec(v.slot, OutcomeRole.VOTER, v.model, v.label, v.temperature, held=v.slot not in first)
                for v in self.panel] + warm

    def config(self) -> dict[str, Any]:
        rules = self.task.vote
        adaptive = ({"adaptive": {"stop": "decided", "stop_when_agree": rules.stop_when_agree,
                                  "first_wave": list(self.first_wave)}} if rules.adaptive else {})
        return {
            "labels": list(self.labels),
            "voters": [asdict(v) for v in self.panel],
            "quorum": self.quorum,
            "tie_policy": self.tie_policy.value,
            "low_agreement_below": self.low_agreement_below,
            "task_name": self.task.name,
            "task_hash": task_hash(self.task),
            "spec": self.task.to_json(),
            **({"dispatch": self.dispatch.to_json()} if self.dispatch else {}),
            **({"document": document_config(self.native)} if self.native is not None else {}),
            **adaptive,
        }

    def document_spec(self) -> repo.DocumentSpec | None:
        return document_spec(self.document)

    def spec(self) -> VoteSpec:
        """The run as its workers will read it back (`workflows.runspec`): what builds every request."""
        return vote_spec(self.config())

    def uploads(self, settings: Settings) -> list[repo.BlobSpec]:
        """The bytes to upload once through the Files API rather than send inline in every call."""
        if self.native is None or self.native.data is None or not needs_upload(len(self.native.data), settings):
            return []
        return [blob_of(self.native)]


def resolve_vote_task(
    labels: str | Sequence[str] | None = None,
    *,
    task: VoteTask | SectionTask | None = None,
    voters: int | None = None,
    models: Sequence[str] | str | None = None,
    quorum: int | None = None,
    tie_policy: str | None = None,
    low_agreement_below: float | None = None,
    adaptive: bool | None = None,
    escalate_to: str | None = None,
) -> VoteTask:
    """The task a vote runs: the given task (a file's, or `VoteTask(...)`) with the options applied over
    it, or, without one, the labels-only default task (today's `--labels a,b --voters N`)."""
    if isinstance(models, str):
        raise ConfigError(f"models must be a list of model ids, e.g. models=[{models!r}], not a string")
    if task is not None and not isinstance(task, VoteTask):
        raise ConfigError(f"task must be a VoteTask (chorus.load_task(path) reads a file), got {type(task).__name__}"
                          + (" — a section task runs with submit_section" if isinstance(task, SectionTask) else ""))
    if task is None:
        if labels is None:
            raise ConfigError("say what to decide: give labels (e.g. labels=\"positive,negative\") or a task file")
        task = labels_task(labels, voters=5 if voters is None else voters, models=models)
        # `voters` again (the panel already has that size, so it changes nothing): a quorum it contradicts
        # is then reported as the options', e.g. "options voters=3, quorum=4".
        return with_vote_overrides(task, voters=voters, quorum=quorum, tie_policy=tie_policy,
                                   low_agreement_below=low_agreement_below, adaptive=adaptive,
                                   escalate_to=escalate_to)
    return with_vote_overrides(task, labels=labels, voters=voters, models=models, quorum=quorum,
                               tie_policy=tie_policy, low_agreement_below=low_agreement_below, adaptive=adaptive,
                               escalate_to=escalate_to)


def plan_vote(
    text: str | Attachment | Path,
    labels: str | Sequence[str] | None = None,
    *,
    task: VoteTask | SectionTask | None = None,
    voters: int | None = None,
    models: Sequence[str] | None = None,
    quorum: int | None = None,
    tie_policy: str | None = None,
    low_agreement_below: float | None = None,
    external_id: str | None = None,
    batch_id: str | None = None,
    gold_label: str | None = None,
    cache_aware: bool = True,
    cache_warm: str = "leader",
    adaptive: bool | None = None,
    escalate_to: str | None = None,
    settings: Settings | None = None,
) -> VotePlan:
    """Check a vote's inputs; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    if isinstance(text, Path):
        text = load_document(text, settings=settings)
    if not isinstance(text, str | Attachment):
        raise ConfigError(f"the document must be text (str), got {type(text).__name__}; decode bytes first, or pass "
                          f"a file as pathlib.Path or chorus.load_document(path)")
    document: str | Attachment = text
    native = document if isinstance(document, Attachment) else None
    body: str = native.text if native is not None else text  # type: ignore[assignment]
    vote_task = resolve_vote_task(labels, task=task, voters=voters, models=models, quorum=quorum,
                                  tie_policy=tie_policy, low_agreement_below=low_agreement_below, adaptive=adaptive,
                                  escalate_to=escalate_to)
    panel = resolve_panel(vote_task, settings.default_model)
    if native is None:
        _, problem = check_text(body, settings.max_document_bytes)
        if problem is not None:
            raise ConfigError(f"the document cannot be voted on: {problem}")
    check_panel_models(panel, settings)
    check_escalation(vote_task, panel, settings.model_list)  # vote.escalate_to: known, with a queue, not the panel's
    if native is not None:
        check_pages(native, [v.model for v in panel],
                    hint="section it by pages (`chorus section FILE`), or vote with a 1M-context model")
        check_size(native, settings)
        check_readable(native, settings)
    check_fits(panel, vote_task, document)
    label_set = vote_task.label_names
    gold = vote_task.canonical_label(gold_label) if gold_label else None
    if gold_label and gold is None:
        raise ConfigError(f"gold label {gold_label!r} is not one of the labels {', '.join(label_set)}")
    # Without a prompt cache (offline) making voters wait for a leader would only cost time.
    with_cache = cache_aware and provider_capabilities(settings).caches_prompts
    estimates, counted = prefix_sizes(panel, vote_task, document, settings, count=with_cache)
    if cache_warm not in WARM_MODES:
        raise ConfigError(f"unknown cache warm-up {cache_warm!r}; use leader (one voter per model goes first) or "
                          "prewarm (a max_tokens: 0 call writes the prefix, then every voter goes)")
    dispatch = plan_dispatch(panel, estimates, cache_aware=with_cache, counted=counted, warm=cache_warm)
    rules = vote_task.vote
    return VotePlan(body, vote_task, tuple(panel), rules.quorum or default_quorum(len(panel)),
                    TiePolicy(rules.tie_policy), rules.low_agreement_below, external_id, batch_id, gold, dispatch,
                    native)


def check_panel_models(panel: Sequence[Voter], settings: Settings) -> None:
    """The panel is within CHORUS_MAX_VOTERS, every voter's model is in the registry (or the user's models
    file) and has a queue, and its effort (if any) is one the model offers."""
    if len(panel) > settings.max_voters:
        raise ConfigError(f"a vote of {len(panel)} voters is over the limit of {settings.max_voters} "
                          f"(CHORUS_MAX_VOTERS); use fewer voters, or raise the limit if you mean it")
    for model in dict.fromkeys(v.model for v in panel):
        check_model_known(model, settings)
    unknown = sorted({v.model for v in panel} - set(settings.model_list))
    if unknown:
        raise ConfigError(
            f"model(s) {', '.join(unknown)} have no queue; add them to CHORUS_MODELS (now: {settings.models})"
        )
    for v in panel:
        if v.effort is None:
            continue
        levels = effort_levels(v.model)
        if not levels:
            raise ConfigError(f"voter {v.label!r}: {v.model} takes no effort setting; remove `effort` from the voter")
        if v.effort not in levels:
            raise ConfigError(f"voter {v.label!r}: effort {v.effort!r} is not offered by {v.model}; "
                              f"use one of: {', '.join(levels)}")


def check_model_known(model: str, settings: Settings, where: str = "") -> None:
    """A model the registry does not know is refused with the closest names: a misspelt name must never
    reach a queue (no worker takes it) or a bill chorus cannot price."""
    problem = unknown_model(model, "CHORUS_DEFAULT_MODEL" if model == settings.default_model else None)
    if problem is not None:
        raise ConfigError(where + problem)


def prefix_sizes(panel: Sequence[Voter], task: VoteTask, text: str | Attachment, settings: Settings, *, count: bool
                 ) -> tuple[dict[str, int], dict[str, int]]:
    """(estimated, counted) tokens of the prefix the voters of each model share. Where the estimate is
    too close to the model's cache minimum to decide (`needs_count`), the API counts it (count_tokens:
    free, no generation): whether the prefix is cached, and so whether voters wait for a leader, must
    follow the API's count, not chorus's estimate. A failed count leaves the estimate to decide."""
    estimates: dict[str, int] = {}
    counted: dict[str, int] = {}
    for model, voters in Counter(v.model for v in panel).items():
        voter = next(v for v in panel if v.model == model)
        request = vote_request(voter, task, text, structured=supports_structured_outputs(model))
        estimates[model] = cacheable_prefix_tokens(request)
        if count and voters > 1 and needs_count(estimates[model], model):
            prefix = request.prefix_request()
            try:
                tokens, estimated = count_tokens(prefix, settings)
            except ProviderError as exc:
                log.warning("count_tokens failed (%s); the estimate decides whether %s caches the prefix", exc, model)
                continue
            if not estimated:
                counted[model] = tokens
    return estimates, counted


def check_fits(panel: Sequence[Voter], task: VoteTask, text: str | Attachment) -> None:
    """Every voter's whole request fits its model's context window (the registry's), by chorus's
    estimate in that model's tokenizer: a request that cannot fit would only come back as a 400."""
    for model in dict.fromkeys(v.model for v in panel):
        window = context_window(model)
        voter = next(v for v in panel if v.model == model)
        request = VoteSpec(task, tuple(panel), {}, None).voter_request(voter, text)
        tokens = request_tokens(request)
        if window is not None and tokens + request.max_tokens > window:
            raise ConfigError(
                f"the document is too long for {model}: about {tokens:,} tokens with the prompt, and the model "
                f"reads at most {window:,}; split it (`chorus section`) or shorten it")


def submit_vote(text: str | Attachment | Path, labels: str | Sequence[str] | None = None,
                *, task: VoteTask | SectionTask | None = None,
                settings: Settings | None = None, **options: Any) -> str:
    """Validate, store and send a vote; returns the run id at once (`wait_for_run` waits).

    Give the labels (`"positive,negative"`) for the default task, or `task=chorus.load_task(path)` for
    your own; options override the task's fields: voters, models, quorum, tie_policy,
    low_agreement_below, adaptive (True: ask voters in waves and stop once the rest cannot change the
    result), escalate_to (a close vote's one more call goes to this model, whose answer decides), and
    external_id, batch_id, gold_label.
    """
    settings = settings or get_settings()
    return submit(plan_vote(text, labels, task=task, settings=settings, **options), settings=settings)


def submit_plan(plan: VotePlan, *, settings: Settings | None = None) -> str:
    """Store and send a planned vote: `chorus.plans.submit`, under the name the API has always had."""
    return submit(plan, settings=settings)
