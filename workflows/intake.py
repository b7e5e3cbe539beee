"""Checking batch input, one document at a time. Pure: bytes and strings in, text or a reason out.

Every check names the problem so that a user can fix that one document; the rest of the batch goes
on without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from workflows.calls import Attachment


@dataclass(frozen=True)
class Record:
    """One input document: its id, its text (None when it failed a check) and why it failed.

    A file of another kind (a PDF, an image, Word, HTML) has its `kind`; a PDF or an image also its
    bytes as `native` (read natively by Claude; `text` is then its text layer). A JSONL/CSV row that
    names a file (`path`) instead of carrying `text` has `path` until the file is read."""

    key: str
    text: str | None
    label: str | None = None
    error: str | None = None
    size: int | None = None
    kind: str = "text"
    native: Attachment | None = None
    path: str | None = None

    @property
    def document(self) -> str | Attachment | None:
        """What a plan reads: the PDF or image itself, else the text (None when the record failed)."""
        if self.text is None:
            return None
        return self.native if self.native is not None else self.text

    @property
    def content_key(self) -> str | None:
        """What identifies the content (a re-run skips a document whose content is unchanged): the
        bytes' sha256 for a document read natively, else None (the text's hash is taken)."""
        return self.native.sha256 if self.native is not None else None


def check_text(text: str, max_bytes: int) -> tuple[str | None, str | None]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return None, too_big(size, max_bytes)
    if "\x00" in text:
        return None, "binary content (NUL characters); only plain text can be processed"
    if not text:
        return None, "empty document"
    if not text.strip():
        return None, "the document is only whitespace"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None, "invalid UTF-8 (a lone surrogate escape in the text)"
    return text, None


def too_big(size: int, max_bytes: int) -> str:
    return f"{size} bytes is over the size cap of {max_bytes} bytes (CHORUS_MAX_DOCUMENT_BYTES)"


def parse_jsonl(line: str, lineno: int, max_bytes: int) -> Record:
    """One JSONL line: an object with a string `id`, a string `text` and an optional `label`."""
    where = f"line {lineno}"
    fallback = f"line-{lineno}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(fallback, None, error=f"{where}: malformed JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return Record(fallback, None, error=f"{where}: expected a JSON object with \"id\" and \"text\"")
    return record_from(data, where, fallback, max_bytes)


def record_from(data: dict[str, object], where: str, fallback: str, max_bytes: int) -> Record:
    """A record from a JSONL object or a CSV row, checked the same way."""
    raw_id, raw_text, raw_label = data.get("id"), data.get("text"), data.get("label")
    raw_path = data.get("path")
    if raw_text is None and isinstance(raw_path, str) and raw_path.strip():
        raw_text = ""  # the file it names is the document (chorus.inputs reads it)
    else:
        raw_path = None
    missing = [name for name, value in (("id", raw_id), ("text", raw_text)) if value is None]
    key = str(raw_id).strip() if isinstance(raw_id, str | int) and str(raw_id).strip() else fallback
    if missing:
        what = " and ".join(repr(m) for m in missing).replace("'text'", "'text' (or 'path', a file)")
        return Record(key, None, error=f"{where}: missing {what}")
    if not isinstance(raw_id, str | int) or not str(raw_id).strip():
        return Record(key, None, error=f"{where}: \"id\" must be a non-empty string or number")
    if len(key) > 200:
        return Record(fallback, None, error=f"{where}: \"id\" is longer than 200 characters")
    if not isinstance(raw_text, str):
        return Record(key, None, error=f"{where}: \"text\" must be a string, not {type(raw_text).__name__}")
    label = str(raw_label).strip() or None if raw_label is not None else None
    if raw_path is not None:
        return Record(key, None, label, None, None, path=str(raw_path).strip())
    text, reason = check_text(raw_text, max_bytes)
    size = len(raw_text.encode("utf-8", "surrogatepass"))
    if reason:
        return Record(key, None, label, f"{where}: {reason}", size)
    return Record(key, text, label, None, size)


def duplicate(record: Record, first_where: str, where: str, lineno: int) -> Record:
    """A later record with an id already seen: failed, stored under a key of its own."""
    return Record(f"{record.key}#dup-{lineno}", None, record.label,
                  f"{where}: duplicate id {record.key!r} (first at {first_where})", record.size)
