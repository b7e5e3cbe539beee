"""A natively read document in a run's stored config (pure): what a vote or a page-range section run
records of its PDF or image, and the `Attachment` a call sends, rebuilt from that record, the stored
bytes (or a Files API id) and the document's text.

A run's config holds, for a PDF or an image, `document` = {kind, media_type, blob (sha256), pages,
title, image_tokens}; a page-range section run also holds `page_sections` = [{first, last, blob,
image_tokens}] (one PDF per section) and `files` = {blob sha256: file_id} for bytes uploaded once
through the Files API. A PDF's text is stored with its pages separated by form feeds, so a section's
text layer is the text of its pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workflows.calls import Attachment

PAGE_SEPARATOR = "\f"


def join_pages(page_texts: Sequence[str]) -> str:
    return PAGE_SEPARATOR.join(t.replace(PAGE_SEPARATOR, " ") for t in page_texts)


def page_texts(text: str) -> list[str]:
    return text.split(PAGE_SEPARATOR)


def pages_text(text: str, first: int, last: int) -> str:
    """The text layer of pages first..last (1-based, inclusive) of a stored PDF text."""
    return join_pages(page_texts(text)[first - 1:last])


def document_config(attachment: Attachment) -> dict[str, Any]:
    return {"kind": attachment.kind, "media_type": attachment.media_type, "blob": attachment.sha256,
            "pages": attachment.pages, "title": attachment.title, "image_tokens": attachment.image_tokens}


def stored_document(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    document = config.get("document")
    return document if isinstance(document, Mapping) and document.get("blob") else None


def attachment_of(entry: Mapping[str, Any], *, text: str, data: bytes | None, file_id: str | None = None
                  ) -> Attachment:
    """The Attachment a call sends for a stored `document` (or a `page_sections` entry with the
    document's kind and media type merged in): by file id when the run uploaded it, else its bytes."""
    return Attachment(kind=str(entry["kind"]), media_type=str(entry["media_type"]),
                      data=None if file_id else data, file_id=file_id, title=entry.get("title"), text=text,
                      pages=int(entry.get("pages") or 0), image_tokens=int(entry.get("image_tokens") or 0),
                      sha256=str(entry["blob"]))

