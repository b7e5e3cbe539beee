"""SQLAlchemy 2.0 models, the engine and the one sessionmaker."""

from models.db import Session, dispose_engine, engine_for, ensure_schema, get_engine, in_session, is_transient
from models.tables import (
    Base,
    Batch,
    Document,
    OutcomeRole,
    OutcomeStatus,
    Pattern,
    ProviderBatch,
    Run,
    RunStatus,
    WorkerOutcome,
)

__all__ = [
    "Base",
    "Batch",
    "Document",
    "OutcomeRole",
    "OutcomeStatus",
    "Pattern",
    "ProviderBatch",
    "Run",
    "RunStatus",
    "Session",
    "WorkerOutcome",
    "dispose_engine",
    "engine_for",
    "ensure_schema",
    "get_engine",
    "in_session",
    "is_transient",
]
