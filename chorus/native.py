"""Documents Claude reads natively (PDFs, images) in a run: what a read file becomes in a plan, the
checks against the model's limits before anything is sent, what is stored for the workers, and the
Files API upload of bytes too large for one request (once per run; deleted when the run ends,
`tasks.files`).

    from chorus import load_document, submit_vote
    run_id = submit_vote(load_document("contract.pdf"), labels="nda,msa,other")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from chorus.documents import ReadDocument, read_path
from models import RunStatus, Session, in_session, repo
from models.tables import utcnow
from providers import get_provider, provider_capabilities
from settings import Settings, get_settings
from tasks.files import release_files
from workflows.attachments import join_pages
from workflows.calls import Attachment
from workflows.documents import Kind, base64_size, image_tokens_upper, pdf_page_image_tokens_upper
from workflows.errors import ChorusError, ConfigError
from workflows.registry import document_limits, pdf_page_limit

log = logging.getLogger("chorus.native")

# What a request carries besides the document's base64 (system prompt, instructions, JSON framing):
# a margin kept below the request size limit when deciding whether the bytes fit inline.
REQUEST_MARGIN_BYTES = 256 * 1024


def as_input(doc: ReadDocument) -> str | Attachment:
    """A read document as a plan takes it: text (text, Word and HTML, converted to Markdown), or an
    Attachment for a PDF or an image, which Claude reads natively."""
    if doc.kind is Kind.PDF and doc.data is not None:
        return Attachment(kind="pdf", media_type=doc.media_type, data=doc.data, title=doc.name,
                          text=join_pages(doc.page_texts), pages=doc.pages,
                          image_tokens=doc.pages * pdf_page_image_tokens_upper(), sha256=doc.sha256)
    if doc.kind is Kind.IMAGE and doc.data is not None:
        tokens = image_tokens_upper(doc.width or 1, doc.height or 1) if doc.width and doc.height else 1600
        return Attachment(kind="image", media_type=doc.media_type, data=doc.data, title=doc.name,
                          image_tokens=tokens, sha256=doc.sha256)
    return doc.text


def load_document(path: str | Path, *, settings: Settings | None = None) -> str | Attachment:
    """Read a file of any kind chorus reads (PDF, PNG/JPEG/GIF/WebP, DOCX, HTML, text) for submit_vote
    or submit_section; a file it cannot read raises ConfigError naming the file and the reason."""
    settings = settings or get_settings()
    return as_input(read_path(Path(path), settings.max_file_bytes))


def check_pages(attachment: Attachment, models: Sequence[str], *, hint: str) -> None:
    """A PDF goes whole into each call: refuse it (before anything is sent) when it has more pages than
    a model reads in one request."""
    if attachment.kind != "pdf":
        return
    for model in dict.fromkeys(models):
        limit = pdf_page_limit(model)
        if attachment.pages > limit:
            raise ConfigError(f"{attachment.title or 'the PDF'} has {attachment.pages} pages and {model} reads at "
                              f"most {limit} PDF pages a request; {hint}")


def check_readable(attachment: Attachment, settings: Settings) -> None:
    """A provider that reads text only (offline) reads a document's text layer: a scan or a picture is refused
    before anything is stored, with the reason, rather than sent to voters who can only fail on it."""
    if provider_capabilities(settings).reads_documents or attachment.has_text:
        return
    raise ConfigError(f"{attachment.title or 'the document'}: {attachment.blind_reason}")


def needs_upload(size: int, settings: Settings) -> bool:
    """Whether bytes of this size go through the Files API rather than inline (base64) in each call.
    Only a provider with a Files API uploads (the offline provider reads the text layer)."""
    if not provider_capabilities(settings).files_api or settings.files_api == "never":
        return False
    if settings.files_api == "always":
        return True
    return not fits_inline(size)


def fits_inline(size: int) -> bool:
    """Whether bytes of this size, base64-encoded with a margin for the prompt, fit one request."""
    return base64_size(size) + REQUEST_MARGIN_BYTES <= document_limits().request_max_bytes


def check_size(attachment: Attachment, settings: Settings) -> None:
    """Bytes too large for one request need the Files API; refuse them when it is switched off. A provider
    that reads text only is sent the text layer, not the bytes."""
    if attachment.data is None or not provider_capabilities(settings).reads_documents:
        return
    limits = document_limits()
    if not fits_inline(len(attachment.data)) and settings.files_api == "never":
        raise ConfigError(f"{attachment.title or 'the document'} is {len(attachment.data):,} bytes: base64-encoded "
                          f"it does not fit one request ({limits.request_max_bytes // (1024 * 1024)} MB); set "
                          f"CHORUS_FILES_API=auto to upload it once through the Files API")
    if len(attachment.data) > limits.file_max_bytes:
        raise ConfigError(f"{attachment.title or 'the document'} is {len(attachment.data):,} bytes, over the Files "
                          f"API's {limits.file_max_bytes // (1024 * 1024)} MB a file; split it")


def blob_of(attachment: Attachment) -> repo.BlobSpec:
    assert attachment.data is not None, "a stored attachment has its bytes"
    return repo.BlobSpec(attachment.sha256, attachment.media_type, attachment.data)


def document_spec(document: str | Attachment, extra: Sequence[repo.BlobSpec] = ()) -> repo.DocumentSpec | None:
    if not isinstance(document, Attachment):
        return None
    return repo.DocumentSpec(kind=document.kind, blob=blob_of(document), pages=document.pages or None,
                             blobs=tuple(extra))


def start_run(run_id: str, uploads: Sequence[repo.BlobSpec], settings: Settings, *, mark_running: bool = True
              ) -> bool:
    """Upload the bytes the run's calls reference by file id (once each), record them (deleted when the
    run ends) and (with `mark_running`) mark the run running. False when an upload failed: the run is
    then failed with the reason, and what was already uploaded is deleted."""
    files: dict[str, str] = {}
    try:
        provider = get_provider(settings)
        for blob in uploads:
            if blob.sha256 in files:
                continue
            suffix = "pdf" if blob.media_type == "application/pdf" else blob.media_type.split("/")[-1]
            file_id = provider.upload_file(blob.data, f"{blob.sha256[:16]}.{suffix}", blob.media_type)  # type: ignore[attr-defined]
            in_session(lambda s, f=file_id, h=blob.sha256: repo.record_upload(s, f, run_id, h))  # type: ignore[misc]
            files[blob.sha256] = file_id
    except ChorusError as exc:
        reason = f"uploading the document through the Files API failed: {exc}"
        log.warning("run %s: %s", run_id, reason)
        with Session.begin() as s:
            run = repo.load_run(s, run_id)
            if run is not None:
                repo.fail_open_slots(s, run_id, reason)
                repo.finish_run(s, run, status=RunStatus.FAILED, result={"reason": reason}, error=reason)
        release_files([run_id], settings)
        return False
    with Session.begin() as s:
        run = repo.load_run(s, run_id)
        assert run is not None
        run.config = {**run.config, "files": files}
        if mark_running:
            run.status = RunStatus.RUNNING
            run.submitted_at = utcnow()
    return True
