"""The tables: a Batch holds Documents; each Document gets a Run; each Run has WorkerOutcomes."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


StrId = Annotated[str, mapped_column(String(32), primary_key=True, default=new_id)]
IntId = Annotated[int, mapped_column(primary_key=True, autoincrement=True)]
Created = Annotated[dt.datetime, mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())]
Stamp = Annotated[dt.datetime | None, mapped_column(DateTime(timezone=True))]


class Pattern(StrEnum):
    VOTE = "vote"
    SECTION = "section"
    ORCHESTRATE = "orchestrate"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    # Stopped by `chorus cancel` or a batch's budget before it finished; `error` holds the reason.
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN


TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.CANCELLED})


class OutcomeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Never called: its run was cancelled before the slot was taken (`error` holds the reason).
    CANCELLED = "cancelled"
    # Never called: an adaptive vote was decided before this voter's turn (`error` holds the reason).
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.CANCELLED, OutcomeStatus.SKIPPED)


class OutcomeRole(StrEnum):
    VOTER = "voter"
    SECTION = "section"
    SYNTHESIS = "synthesis"
    # A `max_tokens: 0` call that only writes a vote's shared prefix to the prompt cache before the
    # voters go (cache-aware dispatch with --cache-warm prewarm); not a voter, never tallied.
    PREWARM = "prewarm"
    # A vote's escalated call (`[vote] escalate_to`): one call to the stronger model, added once the panel
    # is tallied and close; its answer decides (workflows.escalation). Not a voter, never tallied.
    ESCALATION = "escalation"
    # Orchestrator-worker (tasks/orchestrate.py): the planner's call (slot 0), one worker per subtask of its
    # plan (slots 1..N, added once the plan is read), and the synthesis steps over the workers' results.
    PLANNER = "planner"
    WORKER = "worker"
    REDUCE = "reduce"


# Roles of slots that are one provider call each, sent by a message of their own (or carried by the batch
# lane): the reaper re-sends such a slot when its message or its holder is lost, and the lane collects it.
# A pattern that adds a role of this kind adds it here (a section run's synthesis and the pre-warm call are
# not; an orchestrate run's synthesis steps are: they are sent, re-sent and carried one slot each).
CALL_ROLES: tuple[OutcomeRole, ...] = (OutcomeRole.VOTER, OutcomeRole.SECTION, OutcomeRole.ESCALATION,
                                       OutcomeRole.PLANNER, OutcomeRole.WORKER, OutcomeRole.REDUCE)


def _enum(cls: type[StrEnum], name: str) -> Enum:
    # Stored as plain strings (no native PG enum) so adding a value never needs an ALTER TYPE.
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Batch(Base):
    __tablename__ = "batch"

    id: Mapped[StrId]
    name: Mapped[str] = mapped_column(String(200), unique=True)
    pattern: Mapped[Pattern] = mapped_column(_enum(Pattern, "pattern"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where the documents came from (a folder, a JSONL or CSV file); a re-run reads it again.
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[Created]
    updated_at: Mapped[Stamp]

    documents: Mapped[list[Document]] = relationship(back_populates="batch")


class Document(Base):
    __tablename__ = "document"
    __table_args__ = (UniqueConstraint("batch_id", "external_id", name="uq_document_batch_external"),)

    id: Mapped[StrId]
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    gold_label: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "document_status"), default=RunStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int | None]  # order in the batch's input, for exports
    size_bytes: Mapped[int | None]
    # What the document is (workflows.documents.Kind: text, pdf, image, docx, html). `text` holds the
    # text chorus read from it (a PDF's pages separated by form feeds; "" for an image); a PDF or an
    # image is also kept whole as a Blob, which Claude reads natively.
    kind: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    blob_sha256: Mapped[str | None] = mapped_column(String(64))
    pages: Mapped[int | None]
    created_at: Mapped[Created]

    batch: Mapped[Batch | None] = relationship(back_populates="documents")
    runs: Mapped[list[Run]] = relationship(back_populates="document")


class Run(Base):
    __tablename__ = "run"
    __table_args__ = (Index("ix_run_status_created", "status", "created_at"),)

    id: Mapped[StrId]
    document_id: Mapped[str] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"), index=True)
    pattern: Mapped[Pattern] = mapped_column(_enum(Pattern, "pattern"))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"), default=RunStatus.PENDING)
    provider: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    answer: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None]
    low_agreement: Mapped[bool | None]
    error: Mapped[str | None] = mapped_column(Text)
    chord_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[Created]
    submitted_at: Mapped[Stamp]
    finished_at: Mapped[Stamp]

    document: Mapped[Document] = relationship(back_populates="runs")
    outcomes: Mapped[list[WorkerOutcome]] = relationship(
        back_populates="run", order_by="WorkerOutcome.slot", cascade="all, delete-orphan"
    )


class WorkerOutcome(Base):
    __tablename__ = "worker_outcome"
    # (run_id, slot) is the idempotency key: a redelivered task updates its row, never adds one.
    __table_args__ = (UniqueConstraint("run_id", "slot", name="uq_outcome_run_slot"),)

    id: Mapped[IntId]
    run_id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    slot: Mapped[int]
    role: Mapped[OutcomeRole] = mapped_column(_enum(OutcomeRole, "outcome_role"))
    model: Mapped[str] = mapped_column(String(64))
    prompt_variant: Mapped[str | None] = mapped_column(String(32))
    temperature: Mapped[float | None]
    status: Mapped[OutcomeStatus] = mapped_column(
        _enum(OutcomeStatus, "outcome_status"), default=OutcomeStatus.PENDING
    )
    raw_output: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cache_write_tokens: Mapped[int] = mapped_column(default=0)
    cache_read_tokens: Mapped[int] = mapped_column(default=0)
    usage_estimated: Mapped[bool] = mapped_column(default=False)
    queued_at: Mapped[Stamp]
    started_at: Mapped[Stamp]
    finished_at: Mapped[Stamp]
    # A running slot is held by its task until then (renewed while the call runs): a redelivered copy
    # of the task does not call the provider again while the lease is live.
    lease_until: Mapped[Stamp]
    attempts: Mapped[int] = mapped_column(default=0)
    hostname: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Sectioning: a section's title, or the span a synthesis step covers ("sections 1-4");
    # a synthesis step's input slots in order and its level in the tree (0 = the final one's inputs).
    title: Mapped[str | None] = mapped_column(String(200))
    inputs: Mapped[list[int] | None] = mapped_column(JSON)
    level: Mapped[int | None]
    # A follower of cache-aware dispatch whose call should have read the shared prefix: True when it
    # read nothing (a miss), False when it read it; None for every other call.
    cache_miss: Mapped[bool | None]
    # The batch lane: the provider's message batch that carries this slot's call (its custom_id names
    # run and slot), None for a call sent on its own.
    provider_batch: Mapped[str | None] = mapped_column(String(64), index=True)

    run: Mapped[Run] = relationship(back_populates="outcomes")

    @property
    def latency_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class ProviderBatch(Base):
    """A Message Batches API batch of the batch lane: the calls of many slots in one provider request.
    `status` is the provider's processing_status (in_progress, canceling, ended); `collected_at` is set
    once every result has been written into its outcome."""

    __tablename__ = "provider_batch"
    __table_args__ = (Index("ix_provider_batch_open", "collected_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the provider's batch id
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    requests: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[Created]
    ended_at: Mapped[Stamp]
    collected_at: Mapped[Stamp]
    polled_at: Mapped[Stamp]
    error: Mapped[str | None] = mapped_column(Text)


class Blob(Base):
    """The bytes of a document Claude reads natively (a PDF, an image, a section's pages), kept in the
    database so that every worker on any machine reads them; one row per content (sha256)."""

    __tablename__ = "blob"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[Created]


class UploadedFile(Base):
    """A Files API upload of a run: its calls reference `file_id`; the file is deleted once the run is
    terminal (`deleted_at`). No foreign key: a file must stay tracked until deleted, whatever happens
    to its run's rows."""

    __tablename__ = "uploaded_file"
    __table_args__ = (Index("ix_uploaded_file_open", "deleted_at"),)

    file_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    blob_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Created]
    deleted_at: Mapped[Stamp]
    error: Mapped[str | None] = mapped_column(Text)
