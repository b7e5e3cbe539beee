"""The Files API for the stub, written from Anthropic's documentation and the anthropic SDK 2.17.

Sources, read 2026-12: "Files API" (https://platform.claude.com/docs/en/build-with-claude/files: GA since
2026-08-20, so the `anthropic-beta: files-api-2025-04-14` header may or may not be sent and changes
nothing; 500 MB per file), "Request size limits" (Files API 500 MB, 413 `request_too_large`), and the
SDK's `resources/files.py` and `resources/beta/files.py` (the paths, the multipart `file` part, the
`expires_in_seconds` field, `FileMetadata`, `DeletedFile`, the `SyncPageCursor` page with `next_page`,
the `ids[]` / `limit` / `page` query) and its `file_not_downloadable` / `file_expired` error details.

* `POST /v1/files` (multipart/form-data, a `file` part; optional `expires_in_seconds`, 3600..7776000)
  -> `{"id": "file_...", "type": "file", "filename", "mime_type", "size_bytes", "created_at": "...Z",
  "downloadable": false, "expires_at"}`. The mime type is sniffed from the bytes (PDF, PNG, JPEG, GIF,
  WebP), else the part's Content-Type, else the filename's extension.
* `GET /v1/files` -> `{"data": [...], "has_more", "first_id", "last_id", "next_page"}`, newest first;
  `limit` 1..1000 (default 20), `page` (the `next_page` cursor of the previous page), `ids[]` (at most
  100; unknown or deleted ids are left out), and `after_id` / `before_id` for older clients.
* `GET /v1/files/{id}` -> the metadata; `DELETE /v1/files/{id}` -> `{"id", "type": "file_deleted"}`;
  `GET /v1/files/{id}/content` -> 400 `file_not_downloadable` (an uploaded file is never downloadable).
  An unknown, deleted or expired id is 404 `not_found_error`.

The files live in memory; `POST /_stub/reset` forgets them. Every upload and delete is counted:
`GET /_stub/files` (the stub's admin API) lists each file ever uploaded since the last reset, live or
deleted, with `sha256`, `deleted_at`, and the `uploads` / `deletes` / `live` counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import mimetypes
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from chorus.testing.stub.documents import PDF, StoredBytes, sniff_image

MAX_UPLOAD_BYTES = 500 * 1024 * 1024
MIN_EXPIRES_S, MAX_EXPIRES_S = 3600, 7_776_000
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 1000
MAX_IDS = 100


class FileError(Exception):
    """An HTTP error answer of the Files API."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class StoredFile:
    id: str
    seq: int
    filename: str
    mime_type: str
    data: bytes
    created_at: float
    expires_at: float | None = None
    deleted_at: float | None = None

    def metadata(self) -> dict[str, Any]:
        return {"id": self.id, "type": "file", "filename": self.filename, "mime_type": self.mime_type,
                "size_bytes": len(self.data), "created_at": _rfc3339(self.created_at), "downloadable": False,
                "expires_at": _rfc3339(self.expires_at)}


def mime_type_of(data: bytes, declared: str | None, filename: str) -> str:
    """What the stub stores as a file's mime_type: sniffed, else declared, else by extension."""
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return PDF
    sniffed = sniff_image(data)
    if sniffed:
        return sniffed
    declared = (declared or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _params(header: str) -> dict[str, str]:
    out = {}
    for key, value in _PARAM.findall(header):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.lower()] = value
    return out


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts of a multipart/form-data body by name (ValueError when it is not one)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError(f"Content-Type must be multipart/form-data, got {content_type or 'none'!r}")
    boundary = _params(content_type).get("boundary")
    if not boundary:
        raise ValueError("the multipart/form-data Content-Type has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ValueError("the multipart body has no parts")
    parts: dict[str, Part] = {}
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no blank line after its headers")
        data = data[:-2] if data.endswith(b"\r\n") else data
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = _params(";" + disposition.partition(";")[2])
        name = params.get("name")
        if name is None:
            continue
        filename = params.get("filename*") or params.get("filename")
        if filename and filename.lower().startswith("utf-8''"):
            filename = unquote(filename[7:])
        parts[name] = Part(name, filename, headers.get("content-type"), data)
    return parts


class FileStore:
    """Every uploaded file of the stub, live or deleted; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._seq = 0
        self._uploads = 0
        self._deletes = 0

    # ----- the API -----------------------------------------------------------------------------------
    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        try:
            parts = parse_multipart(content_type, body)
        except ValueError as exc:
            raise FileError(400, str(exc)) from None
        part = parts.get("file")
        if part is None:
            raise FileError(400, "file: Field required (send the file as the multipart part named 'file')")
        expires_in = None
        if "expires_in_seconds" in parts:
            raw = parts["expires_in_seconds"].data.decode("ascii", "replace").strip()
            if not raw.isdigit() or not MIN_EXPIRES_S <= int(raw) <= MAX_EXPIRES_S:
                raise FileError(400, f"expires_in_seconds: must be an integer from {MIN_EXPIRES_S} to "
                                     f"{MAX_EXPIRES_S}, got {raw!r}")
            expires_in = int(raw)
        filename = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        mime_type = mime_type_of(part.data, part.content_type, filename)
        if not filename:
            filename = "unnamed" + (mimetypes.guess_extension(mime_type) or "")
        with self._lock:
            self._seq += 1
            self._uploads += 1
            now = self._clock()
            stored = StoredFile(id=f"file_{uuid.uuid4().hex[:24]}", seq=self._seq, filename=filename,
                                mime_type=mime_type, data=part.data, created_at=now,
                                expires_at=None if expires_in is None else now + expires_in)
            self._files[stored.id] = stored
            return stored.metadata()

    def retrieve(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._get(file_id).metadata()

    def content(self, file_id: str) -> bytes:
        with self._lock:
            self._get(file_id)
        raise FileError(400, f"file {file_id} is not downloadable: only files that a tool created can be "
                             "downloaded, not uploaded ones", {"error_code": "file_not_downloadable"})

    def delete(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._get(file_id)
            stored.deleted_at = self._clock()
            self._deletes += 1
            return {"id": stored.id, "type": "file_deleted"}

    def page(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """`GET /v1/files`: a page of live files, newest first."""
        limit = LIST_LIMIT_DEFAULT
        if "limit" in query:
            raw = query["limit"][-1]
            if not raw.isdigit() or not 1 <= int(raw) <= LIST_LIMIT_MAX:
                raise FileError(400, f"limit: must be an integer from 1 to {LIST_LIMIT_MAX}, got {raw!r}")
            limit = int(raw)
        ids = [*query.get("ids[]", []), *query.get("ids", [])]
        if len(set(ids)) > MAX_IDS:
            raise FileError(400, f"ids: at most {MAX_IDS} ids, got {len(set(ids))}")
        page = query.get("page", [None])[-1]
        after, before = query.get("after_id", [None])[-1], query.get("before_id", [None])[-1]
        with self._lock:
            now = self._clock()
            live = sorted((f for f in self._files.values() if self._live(f, now)), key=lambda f: f.seq, reverse=True)
            if ids:
                wanted = set(ids)
                data = [f.metadata() for f in live if f.id in wanted]
                return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None, "next_page": None}
            order = [f.id for f in live]
            cursor = page[len("page_"):] if page and page.startswith("page_") else (page or after)
            if cursor is not None and cursor not in self._files:
                raise FileError(400, f"page: {page or after!r} is not a cursor this API returned")
            if before:
                end = order.index(before) if before in order else 0
                start = max(0, end - limit)
                chosen, has_more = live[start:end], start > 0
            else:
                start = 0
                if cursor is not None:  # after the cursor's file, by upload order (it may have been deleted since)
                    seq = self._files[cursor].seq
                    start = next((k for k, f in enumerate(live) if f.seq < seq), len(live))
                chosen, has_more = live[start:start + limit], len(live) > start + limit
            data = [f.metadata() for f in chosen]
        return {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "next_page": f"page_{data[-1]['id']}" if has_more and data else None}

    # ----- for messages --------------------------------------------------------------------------------
    def for_message(self, file_id: str) -> StoredBytes | None:
        """The bytes of a live file, or None (unknown, deleted or expired)."""
        with self._lock:
            stored = self._files.get(file_id)
            if stored is None or not self._live(stored, self._clock()):
                return None
            return StoredBytes(stored.id, stored.mime_type, stored.data)

    # ----- admin -------------------------------------------------------------------------------------
    def admin(self) -> dict[str, Any]:
        """Every file uploaded since the last reset, oldest first, and the upload / delete counts."""
        with self._lock:
            now = self._clock()
            files = [{**f.metadata(), "sha256": hashlib.sha256(f.data).hexdigest(),
                      "deleted_at": _rfc3339(f.deleted_at), "live": self._live(f, now)}
                     for f in sorted(self._files.values(), key=lambda f: f.seq)]
            return {"uploads": self._uploads, "deletes": self._deletes,
                    "live": sum(1 for f in files if f["live"]), "files": files}

    def reset(self) -> None:
        with self._lock:
            self._files.clear()
            self._seq = self._uploads = self._deletes = 0

    # ----- under the lock ------------------------------------------------------------------------------
    @staticmethod
    def _live(stored: StoredFile, now: float) -> bool:
        return stored.deleted_at is None and (stored.expires_at is None or now < stored.expires_at)

    def _get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None or not self._live(stored, self._clock()):
            raise FileError(404, f"File not found: {file_id}")
        return stored
