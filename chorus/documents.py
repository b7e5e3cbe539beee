"""Reading documents of every kind chorus accepts: PDF (pypdf), image (header only), Word
(python-docx), HTML (BeautifulSoup + markdownify) and text.

A document keeps the bytes Claude reads natively (a PDF, an image) and the text chorus extracts
for everything else and for its own estimates. Any file that cannot be read ends in a
`DocumentError` naming the file, the reason and the fix: never a traceback, never a silent skip.
Which kind a file is comes from `workflows.documents.sniff` (content first, then suffix).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import logging
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docx
from bs4 import BeautifulSoup
from docx.table import Table
from markdownify import ATX, MarkdownConverter
from pypdf import PdfReader, PdfWriter

from workflows.documents import Kind, image_problem, image_size, sniff
from workflows.errors import ConfigError

MAX_DOCUMENT_BYTES_SETTING = "CHORUS_MAX_DOCUMENT_BYTES"

# HTML elements that are never the content of a page.
HTML_DROPPED = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg")


class DocumentError(ConfigError):
    """A document chorus cannot read; the message is "<name>: <reason and fix>"."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # survives pickling (Celery results, multiprocessing)
        return (type(self), (self.name, self.reason))


@dataclass(frozen=True)
class ReadDocument:
    """One read document. `data` is what Claude reads natively (the PDF or image bytes; None for
    text, Word and HTML); `text` is the extracted text (Markdown for Word and HTML; the pages
    joined by blank lines for a PDF; "" for an image)."""

    name: str
    kind: Kind
    media_type: str
    data: bytes | None = field(repr=False)
    text: str = field(repr=False)
    pages: int = 0
    page_texts: tuple[str, ...] = field(default=(), repr=False)
    width: int | None = None
    height: int | None = None
    size: int = 0
    sha256: str = ""

    @property
    def has_text_layer(self) -> bool:
        """True when there is text to read: a PDF with any page of text, non-blank text otherwise."""
        if self.kind is Kind.IMAGE:
            return False
        if self.kind is Kind.PDF:
            return any(t.strip() for t in self.page_texts)
        return bool(self.text.strip())

    @property
    def pages_without_text(self) -> tuple[int, ...]:
        """1-based numbers of the PDF pages with no text (scanned pages); () for other kinds."""
        return tuple(n for n, t in enumerate(self.page_texts, 1) if not t.strip())


def read_path(path: Path, max_bytes: int) -> ReadDocument:
    """Read the file at `path` (refused over `max_bytes`), named by its file name."""
    name = path.name
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_big(name, size, max_bytes)
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise DocumentError(name, f"cannot be read ({e.strerror or e}); check the path {path}") from e
    if len(data) > max_bytes:  # grew since stat
        raise _too_big(name, len(data), max_bytes)
    return read_document(data, name)


def _too_big(name: str, size: int, max_bytes: int) -> DocumentError:
    return DocumentError(name, f"{size:,} bytes, over the limit of {max_bytes:,} bytes per document; "
                               f"split the file, or raise {MAX_DOCUMENT_BYTES_SETTING}")


def read_document(data: bytes, name: str) -> ReadDocument:
    """Recognise and read one document; DocumentError (naming `name`) when it cannot be read."""
    sniffed = sniff(data, name)
    if sniffed.kind is None or sniffed.media_type is None:
        reason = sniffed.reason or "not a kind chorus reads"
        raise DocumentError(name, reason.removeprefix(f"{name}: "))
    kind, media_type = sniffed.kind, sniffed.media_type
    data_kept: bytes | None = None
    text = ""
    page_texts: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    if kind is Kind.PDF:
        page_texts = _pdf_page_texts(data, name)
        data_kept, text = data, "\n\n".join(page_texts)
    elif kind is Kind.IMAGE:
        problem = image_problem(data, media_type)
        if problem:
            raise DocumentError(name, problem)
        width, height = image_size(data) or (None, None)
        data_kept = data
    elif kind is Kind.DOCX:
        text = _docx_markdown(data, name)
    elif kind is Kind.HTML:
        text = _html_markdown(data)
    else:
        text = _utf8(data, name)
    return ReadDocument(name=name, kind=kind, media_type=media_type, data=data_kept, text=text,
                        pages=len(page_texts), page_texts=page_texts, width=width, height=height,
                        size=len(data), sha256=hashlib.sha256(data).hexdigest())


# --- PDF -----------------------------------------------------------------------------------------

_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved = logging.NOTSET


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs a warning for every oddity of a malformed file; chorus reports its own error
    instead. Raises the "pypdf" logger's level while any call is inside, and puts it back."""
    global _quiet_depth, _quiet_saved
    logger = logging.getLogger("pypdf")
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved = logger.level
            logger.setLevel(logging.ERROR + 10)
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.setLevel(_quiet_saved)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_ENCRYPTED = ("the PDF is encrypted (password-protected); remove the password "
              "(e.g. qpdf --decrypt in.pdf out.pdf) and try again")


def _open_pdf(data: bytes, name: str) -> Any:
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:  # even with an empty user password: Claude refuses encrypted PDFs
        raise DocumentError(name, _ENCRYPTED)
    return reader


def _pdf_page_texts(data: bytes, name: str) -> tuple[str, ...]:
    with _quiet_pypdf():
        try:
            reader = _open_pdf(data, name)
            count = len(reader.pages)
            texts = tuple((page.extract_text() or "").strip() for page in reader.pages)
        except DocumentError:
            raise
        except Exception as e:  # pypdf raises many kinds on a damaged file; none may escape as a traceback
            raise DocumentError(name, f"the PDF cannot be read ({_short(e)}); re-export it from its source") from e
    if count == 0 or not texts:
        raise DocumentError(name, "the PDF has no pages; re-export it from its source")
    return texts


def split_pdf(data: bytes, ranges: Sequence[tuple[int, int]], name: str = "document.pdf") -> list[bytes]:
    """One new PDF per 1-based inclusive page range, with the pages as they are (text and images)."""
    with _quiet_pypdf():
        try:
            reader = _open_pdf(data, name)
            count = len(reader.pages)
        except DocumentError:
            raise
        except Exception as e:
            raise DocumentError(name, f"the PDF cannot be read ({_short(e)}); re-export it from its source") from e
        for first, last in ranges:
            if not 1 <= first <= last <= count:
                raise ValueError(f"page range {first}-{last} is not within 1-{count}")
        parts = []
        try:
            for first, last in ranges:
                writer = PdfWriter()
                for index in range(first - 1, last):
                    writer.add_page(reader.pages[index])
                out = io.BytesIO()
                writer.write(out)
                parts.append(out.getvalue())
        except Exception as e:
            raise DocumentError(name, f"the PDF cannot be split ({_short(e)}); re-export it from its source") from e
    return parts


# --- Word ----------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table_markdown(table: Any) -> str:
    rows = [[_cell(cell.text) for cell in row.cells] for row in table.rows]
    rows = [r for r in rows if r]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _paragraph_markdown(paragraph: Any) -> str:
    text = paragraph.text.strip()
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return f"# {text}"
    match = re.fullmatch(r"Heading ([1-9])", style)
    if match:
        return "#" * int(match.group(1)) + " " + text
    p_pr = paragraph._p.pPr
    num_pr = p_pr.numPr if p_pr is not None else None
    if style.startswith("List") or num_pr is not None:
        level = 0
        if num_pr is not None and num_pr.ilvl is not None and num_pr.ilvl.val is not None:
            level = int(num_pr.ilvl.val)
        else:
            match = re.search(r" ([2-9])$", style)  # "List Bullet 2"
            level = int(match.group(1)) - 1 if match else 0
        return "  " * level + "- " + text
    return text


def _is_item(block: str) -> bool:
    return block.lstrip(" ").startswith("- ")


def _docx_markdown(data: bytes, name: str) -> str:
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for item in document.iter_inner_content():  # paragraphs and tables in body order
            block = _table_markdown(item) if isinstance(item, Table) else _paragraph_markdown(item)
            if not block:
                continue
            if blocks and _is_item(block) and _is_item(blocks[-1]):
                blocks[-1] += "\n" + block  # one list, not loose items
            else:
                blocks.append(block)
    except Exception as e:  # a damaged zip or XML: python-docx raises many kinds
        raise DocumentError(name, f"the Word file cannot be read ({_short(e)}); "
                                  "open and re-save it as DOCX, or save it as PDF") from e
    return _collapse("\n\n".join(blocks))


# --- HTML ----------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.IGNORECASE)


def _html_text(data: bytes) -> str:
    """Decoded by its BOM, else its <meta> charset, else UTF-8 (bad bytes replaced)."""
    boms = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
    for bom, codec in boms:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    match = _META_CHARSET.search(data[:4096])
    if match:
        try:
            codec = codecs.lookup(match.group(1).decode("ascii")).name
        except (LookupError, UnicodeDecodeError):
            codec = "utf-8"
        if codec.startswith("utf-16"):  # a page that says UTF-16 but was read as ASCII is not
            codec = "utf-8"
        return data.decode(codec, errors="replace")
    return data.decode("utf-8", errors="replace")


def _collapse(text: str) -> str:
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_markdown(data: bytes) -> str:
    soup = BeautifulSoup(_html_text(data), "html.parser")
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup.find_all(HTML_DROPPED):
        if tag.decomposed:
            continue  # inside a tag already dropped
        if tag.name in ("header", "footer") and tag.find_parent(("main", "article")) is not None:
            continue  # an article's own header keeps its heading
        tag.decompose()
    main = soup.find("main")
    roots = [main] if main is not None else soup.find_all("article") or [soup.body or soup]
    converter = MarkdownConverter(heading_style=ATX, bullets="-")
    markdown = _collapse("\n\n".join(converter.convert_soup(root) for root in roots))
    if title and not any(root.find("h1") for root in roots):
        markdown = f"# {title}\n\n{markdown}".strip()
    return markdown


# --- text ----------------------------------------------------------------------------------------

def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = e.start + (3 if data.startswith(codecs.BOM_UTF8) else 0)
        raise DocumentError(name, f"not valid UTF-8 text (byte 0x{data[offset]:02x} at offset {offset:,}); "
                                  "save it as UTF-8") from e
