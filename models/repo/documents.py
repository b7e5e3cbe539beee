"""Documents' bytes (content-addressed blobs) and the Files API uploads of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from models.tables import (
    TERMINAL_RUN,
    Blob,
    Run,
    UploadedFile,
    utcnow,
)


@dataclass(frozen=True)
class BlobSpec:
    """Bytes to keep for the workers (a PDF, an image, a section's pages), by content hash."""

    sha256: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class DocumentSpec:
    """What a document is beyond its text: its kind, and for a PDF or an image its bytes and pages;
    `blobs` are more bytes its run reads (the PDFs of a page-range section run)."""

    kind: str = "text"
    blob: BlobSpec | None = None
    pages: int | None = None
    blobs: tuple[BlobSpec, ...] = ()


def keep_blobs(s: OrmSession, blobs: Sequence[BlobSpec]) -> None:
    """Store each blob once (content-addressed; a concurrent writer of the same bytes is fine)."""
    for blob in {b.sha256: b for b in blobs}.values():
        values = {"sha256": blob.sha256, "media_type": blob.media_type, "size_bytes": len(blob.data),
                  "data": blob.data, "created_at": utcnow()}
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert  # dialect-specific upsert

            s.execute(pg_insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # dialect-specific upsert

            s.execute(sqlite_insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        elif s.get(Blob, blob.sha256) is None:
            s.add(Blob(**values))


def blob_data(s: OrmSession, sha256: str) -> bytes:
    data = s.scalar(select(Blob.data).where(Blob.sha256 == sha256))
    if data is None:
        raise LookupError(f"no stored bytes for document {sha256[:12]}")
    return bytes(data)


def record_upload(s: OrmSession, file_id: str, run_id: str, blob_sha256: str) -> None:
    s.add(UploadedFile(file_id=file_id, run_id=run_id, blob_sha256=blob_sha256))


def files_to_delete(s: OrmSession, run_ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(file_id, run_id) of uploads not yet deleted whose run is terminal (or gone); of `run_ids` only,
    when given."""
    query = (select(UploadedFile.file_id, UploadedFile.run_id)
             .outerjoin(Run, Run.id == UploadedFile.run_id)
             .where(UploadedFile.deleted_at.is_(None), (Run.id.is_(None)) | Run.status.in_(TERMINAL_RUN)))
    if run_ids is not None:
        query = query.where(UploadedFile.run_id.in_(list(run_ids)))
    return [(row.file_id, row.run_id) for row in s.execute(query)]


def mark_file_deleted(s: OrmSession, file_id: str, error: str | None = None) -> None:
    values: dict[str, Any] = {"error": error} if error else {"deleted_at": utcnow(), "error": None}
    s.execute(update(UploadedFile).where(UploadedFile.file_id == file_id).values(**values))


def uploads(s: OrmSession, run_id: str) -> list[UploadedFile]:
    return list(s.scalars(select(UploadedFile).where(UploadedFile.run_id == run_id)))
