"""Real PDFs and images for the stub's document tests (pypdf, reportlab and Pillow write them), and an
in-process stub with a client of the real anthropic SDK."""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import pypdf
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from chorus.testing.stub.server import make_server, serve_forever
from chorus.testing.stub.testing import StubHandle

LETTER = (612.0, 792.0)
A4 = (595.0, 842.0)
SYSTEM = ("You classify documents.\n<labels>\n<label name=\"positive\">praise</label>\n"
          "<label name=\"negative\">complaint</label>\n</labels>")
ASK = {"type": "text", "text": "<focus>whole</focus>\nReply with one line: Answer: <label>"}


@contextmanager
def in_process_stub(**options: Any) -> Iterator[StubHandle]:
    """A stub served on a thread of this process (`make_server` options), stopped on exit."""
    server = make_server(**options)
    stop = threading.Event()
    thread = threading.Thread(target=serve_forever, args=(server, stop), daemon=True)
    thread.start()
    try:
        yield StubHandle(server.host, server.port, os.getpid())
    finally:
        stop.set()
        thread.join(5)


def client_for(stub: StubHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=stub.base_url, max_retries=0)


def text_pdf(pages: list[str], size: tuple[float, float] = LETTER) -> bytes:
    """A PDF with one line of text on each page (reportlab)."""
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=size)
    for text in pages:
        c.drawString(72, size[1] - 72, text)
        c.showPage()
    c.save()
    return out.getvalue()


def blank_pdf(pages: int, size: tuple[float, float] = LETTER) -> bytes:
    """A PDF of blank pages (pypdf)."""
    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=size[0], height=size[1])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(text_pdf(["A secret kettle."]))))
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def png(size: tuple[int, int] = (400, 300), description: str | None = None, keyword: str = "Description") -> bytes:
    """A PNG; `description` is written in a tEXt chunk (Pillow's PngInfo)."""
    info = PngInfo()
    if description is not None:
        info.add_text(keyword, description)
    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (300, 200), comment: str | None = None) -> bytes:
    """A JPEG; `comment` is written in a COM segment."""
    out = io.BytesIO()
    extra = {"comment": comment.encode()} if comment is not None else {}
    Image.new("RGB", size, "white").save(out, "JPEG", **extra)
    return out.getvalue()


def scanned_pdf(image: bytes, size: tuple[float, float] = LETTER) -> bytes:
    """A page without a text layer: only an image (a JPEG embedded as DCTDecode by reportlab)."""
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=size)
    c.drawImage(ImageReader(io.BytesIO(image)), 50, 50, width=300, height=200)
    c.showPage()
    c.save()
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pdf_block(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
            **extra}


def image_block(data: bytes, media_type: str = "image/png", **extra: Any) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}, **extra}


def file_block(file_id: str, kind: str = "document") -> dict[str, Any]:
    return {"type": kind, "source": {"type": "file", "file_id": file_id}}


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The `error` object of an error answer's body."""
    assert isinstance(exc.body, dict) and exc.body.get("type") == "error", exc.body
    error = exc.body["error"]
    assert isinstance(error, dict)
    return error


def vote(*blocks: dict[str, Any], model: str = "claude-haiku-4-5", **overrides: Any) -> dict[str, Any]:
    """A classification request whose document is `blocks` (the labels are in the system prompt)."""
    body: dict[str, Any] = {"model": model, "max_tokens": 64, "system": SYSTEM,
                            "messages": [{"role": "user", "content": [*blocks, ASK]}]}
    body.update(overrides)
    return body
