"""A factory of REAL document files for the tests: PDFs (text, scanned, encrypted, corrupt, big),
images, Word and HTML, made with the same libraries people make them with (reportlab, Pillow,
python-docx, pypdf). No parser is mocked anywhere: a test reads what these functions write.

Pillow and reportlab are test-only dependencies: nothing outside tests/ imports them.

    from tests import docfiles
    pdf = docfiles.text_pdf(250)                        # "Page i of 250." on page i
    scan = docfiles.scanned_pdf(["Invoice 42"])         # image-only page; no text layer
    path = docfiles.write(tmp_path, "scan.pdf", scan)
"""

from __future__ import annotations

import io
import math
import random
import textwrap
from collections.abc import Sequence
from html import escape
from pathlib import Path

import docx as python_docx
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, NameObject, NumberObject, StreamObject
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

PAGE_W, PAGE_H = LETTER  # 612 x 792 points
_MARGIN = 72
_LINE = 14
_WRAP = 85  # characters per line at Helvetica 11 within the margins

FILLER = (
    "The committee met on Tuesday to review the quarterly figures. "
    "Revenue rose in the northern region while costs stayed flat. "
    "The next review is planned for the end of the month."
)


def _page_text(i: int, n: int) -> str:
    return f"Page {i} of {n}. {FILLER}"


def text_pdf(pages: int | Sequence[str], *, title: str | None = None) -> bytes:
    """A PDF with a real text layer. `pages` is the text of each page, or a count: page i then says
    "Page i of N." and a few sentences. `title` is drawn in bold on page 1 and set as the PDF's title."""
    texts = [_page_text(i, pages) for i in range(1, pages + 1)] if isinstance(pages, int) else list(pages)
    if not texts:
        raise ValueError("a PDF needs at least one page")
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=LETTER, invariant=True)  # invariant: same bytes on every run
    if title:
        c.setTitle(title)
    for n, text in enumerate(texts):
        y = PAGE_H - _MARGIN
        if title and n == 0:
            c.setFont("Helvetica-Bold", 16)
            c.drawString(_MARGIN, y, title)
            y -= 2 * _LINE
        c.setFont("Helvetica", 11)
        for paragraph in text.split("\n"):
            for line in textwrap.wrap(paragraph, _WRAP) or [""]:
                if y < _MARGIN:
                    break  # the rest of an overlong text does not fit on the page
                c.drawString(_MARGIN, y, line)
                y -= _LINE
        c.showPage()
    c.save()
    return out.getvalue()


def _text_image(text: str, size: tuple[int, int]) -> Image.Image:
    """Black text on white, wrapped, in Pillow's default font."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    y = 10
    for line in textwrap.wrap(text, max(10, size[0] // 7)) or [""]:
        draw.text((10, y), line, fill="black")
        y += 14
    return img


def jpeg(text: str = "", size: tuple[int, int] = (400, 200)) -> bytes:
    """A JPEG showing `text`; the text is also the JPEG's COM (comment) segment when given."""
    out = io.BytesIO()
    if text:
        _text_image(text, size).save(out, "JPEG", quality=85, comment=text.encode())
    else:
        _text_image(text, size).save(out, "JPEG", quality=85)
    return out.getvalue()


def png(text: str = "", size: tuple[int, int] = (400, 200)) -> bytes:
    """A PNG showing `text`; the text is also its tEXt "Description" chunk when given."""
    out = io.BytesIO()
    info = PngInfo()
    if text:
        info.add_text("Description", text)
    _text_image(text, size).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def scanned_pdf(texts: Sequence[str]) -> bytes:
    """An image-only PDF, like a scan: page i is one full-page JPEG showing texts[i] (the JPEG's
    comment segment carries the text too), and there is no text layer at all.

    reportlab embeds a JPEG as it is (a /DCTDecode stream, wrapped in ASCII85): the decoded image
    stream of each page is the JPEG byte for byte, comment included (tests/chorus/test_documents.py
    checks it)."""
    if not texts:
        raise ValueError("a PDF needs at least one page")
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=LETTER, invariant=True)
    for text in texts:
        page = jpeg(text, size=(612, 792))
        c.drawImage(ImageReader(io.BytesIO(page)), 0, 0, PAGE_W, PAGE_H)
        c.showPage()
    c.save()
    return out.getvalue()


def docx(blocks: Sequence[tuple[str, str]]) -> bytes:
    """A Word file from blocks in order: ("title", t), ("h1".."h9", heading), ("p", text),
    ("li", bullet item), ("ol", numbered item), ("table", "a|b;c|d") (rows split by ";", cells by "|")."""
    document = python_docx.Document()
    for kind, text in blocks:
        if kind == "title":
            document.add_heading(text, level=0)
        elif len(kind) == 2 and kind[0] == "h" and kind[1].isdigit():
            document.add_heading(text, level=int(kind[1]))
        elif kind == "p":
            document.add_paragraph(text)
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        elif kind == "ol":
            document.add_paragraph(text, style="List Number")
        elif kind == "table":
            rows = [row.split("|") for row in text.split(";")]
            table = document.add_table(rows=len(rows), cols=max(len(r) for r in rows))
            for r, row in enumerate(rows):
                for col, cell in enumerate(row):
                    table.cell(r, col).text = cell
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html(title: str, body_html: str, *, script: str = "alert('x')") -> bytes:
    """An HTML5 page (UTF-8) with `title`, a <script> holding `script` in the head, and `body_html`."""
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<script>{script}</script>\n"
        "<style>body { font-family: sans-serif; }</style>\n</head>\n"
        f"<body>\n{body_html}\n</body>\n</html>\n"
    )
    return page.encode("utf-8")


def encrypted_pdf(password: str = "secret") -> bytes:
    """A two-page text PDF encrypted with `password` as the user password ("" makes a PDF that
    opens without one yet is still encrypted)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(["Top secret page one.", "Page two."]))))
    writer.encrypt(user_password=password, owner_password="owner-" + password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def corrupt_pdf() -> bytes:
    """A three-page text PDF cut to its first 60 % of bytes, with every `xref`, `startxref` and
    `trailer` keyword left smashed: it still starts with %PDF- (so it is sniffed as a PDF) but
    pypdf cannot open it (tests check that)."""
    data = text_pdf(3)
    cut = data[: int(len(data) * 0.6)]
    for word in (b"startxref", b"xref", b"trailer", b"%%EOF"):
        cut = cut.replace(word, b"#" * len(word))
    return cut


def big_pdf(min_bytes: int) -> bytes:
    """A valid two-page PDF of at least `min_bytes` bytes: page 1 has text, page 2 is one big image
    of seeded random pixels stored raw (incompressible, so the size is real). 35 MB takes well
    under a second."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(["This PDF is big on purpose: page 2 is noise."]))))
    side = max(1, math.ceil(math.sqrt(max(0, min_bytes) / 3)))
    image = StreamObject()
    image.set_data(random.Random(0).randbytes(side * side * 3))
    image.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Image"),
            NameObject("/Width"): NumberObject(side),
            NameObject("/Height"): NumberObject(side),
            NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
            NameObject("/BitsPerComponent"): NumberObject(8),
        }
    )
    image_ref = writer._add_object(image)
    content = StreamObject()
    content.set_data(f"q {PAGE_W:.0f} 0 0 {PAGE_H:.0f} 0 0 cm /Im0 Do Q".encode())
    page = writer.add_blank_page(PAGE_W, PAGE_H)
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): image_ref})}
    )
    page[NameObject("/Contents")] = writer._add_object(content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(folder: Path, name: str, data: bytes) -> Path:
    """`data` written to folder/name (folders made as needed); the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
