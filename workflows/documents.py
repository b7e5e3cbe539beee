"""Document kinds and the arithmetic around them: what a file is (by content first), an image's
size from its header, whether Claude accepts an image, how a long PDF is cut into page ranges,
and upper bounds on what images and PDF pages cost in tokens.

Pure: bytes in, values out; the readers that parse PDFs, Word and HTML are in `chorus.documents`.

Limits and token rules are Anthropic's, from the vision guide (docs.anthropic.com/en/docs/build-with-claude/vision)
and the PDF support guide (docs.anthropic.com/en/docs/build-with-claude/pdf-support):
- an image may be at most 8000x8000 px and 5 MB (the API checks the base64 text) per image;
- an image costs about width*height/750 tokens after it is resized so that its long edge is at
  most 1568 px and it has at most ~1.15 megapixels, i.e. ~1,534 tokens at most; chorus bounds it by 1,600;
- each PDF page is sent as an image of the page as well as its text, so a page costs its text
  plus at most one image's worth of tokens.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TEXT = "text"
    PDF = "pdf"
    IMAGE = "image"
    DOCX = "docx"
    HTML = "html"


SUFFIXES: dict[str, Kind] = {
    ".txt": Kind.TEXT,
    ".md": Kind.TEXT,
    ".pdf": Kind.PDF,
    ".png": Kind.IMAGE,
    ".jpg": Kind.IMAGE,
    ".jpeg": Kind.IMAGE,
    ".gif": Kind.IMAGE,
    ".webp": Kind.IMAGE,
    ".docx": Kind.DOCX,
    ".html": Kind.HTML,
    ".htm": Kind.HTML,
}

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
PDF_MEDIA_TYPE = "application/pdf"
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_MEDIA_TYPE = "text/html"
TEXT_MEDIA_TYPE = "text/plain"
MARKDOWN_MEDIA_TYPE = "text/markdown"

READABLE = "PDF, PNG/JPEG/GIF/WebP image, DOCX, HTML, text"

# Anthropic's limits for one image (vision guide).
IMAGE_MAX_SIDE = 8000
IMAGE_MAX_BASE64_BYTES = 5 * 1024 * 1024
# An image is scaled down until its long edge is at most this many pixels ...
IMAGE_MAX_LONG_EDGE = 1568
# ... and to at most ~1.15 megapixels: ceil(1.15e6 / 750) ~ 1,534 tokens; 1,600 is chorus' bound.
IMAGE_TOKENS_MAX = 1600
IMAGE_PIXELS_PER_TOKEN = 750

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_ZIP = b"PK\x03\x04"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc, .xls, .ppt of Office 97-2003
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class Sniffed:
    """What a file is: a kind and its media type, or no kind and the reason (with the fix)."""

    kind: Kind | None
    media_type: str | None
    reason: str | None = None


def _suffix(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base.strip(".") else ""


def _image_media_type(data: bytes) -> str | None:
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(_JPEG):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _zip_kind(data: bytes, name: str) -> Sniffed:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        # A damaged zip: keep it a Word file if it says so (its reader then names the damage).
        names = {"word/document.xml"} if b"word/document.xml" in data else set()
    if "word/document.xml" in names:
        return Sniffed(Kind.DOCX, DOCX_MEDIA_TYPE)
    office = (
        "an Excel workbook" if any(n.startswith("xl/") for n in names)
        else "a PowerPoint deck" if any(n.startswith("ppt/") for n in names)
        else None
    )
    if office:
        return Sniffed(None, None, f"{name}: {office}, an Office file other than Word; chorus reads {READABLE}: "
                                   "save it as PDF")
    return Sniffed(None, None, f"{name}: a ZIP archive, not a kind chorus reads ({READABLE}); "
                               "unpack it and give the files inside")


def _decoded_head(data: bytes) -> str:
    """The first 2 KB as text, using a BOM when there is one (UTF-8 otherwise, errors replaced)."""
    head = data[:2048]
    if head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff"):
        return head.decode("utf-16", errors="replace")
    return head.decode("utf-8-sig", errors="replace")


def _looks_like_html(data: bytes) -> bool:
    text = _decoded_head(data).lstrip("\ufeff \t\r\n\f")
    # Skip an XML declaration and leading comments: <?xml ...?> <!-- ... --> <!DOCTYPE html>
    while True:
        if text.startswith("<?xml") and "?>" in text:
            text = text.split("?>", 1)[1].lstrip()
        elif text.startswith("<!--") and "-->" in text:
            text = text.split("-->", 1)[1].lstrip()
        else:
            break
    lowered = text[:20].lower()
    return lowered.startswith("<!doctype html") or lowered.startswith("<html")


def _utf8_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sniff(data: bytes, name: str) -> Sniffed:
    """The kind of a file, recognised by its CONTENT first and by its name's suffix only after.

    Magic bytes decide: `%PDF-` in the first 1024 bytes, PNG, JPEG, GIF, WebP, a zip holding
    `word/document.xml` (DOCX), and a page starting with `<!doctype html` or `<html`. When content
    and suffix disagree, content wins: a PDF named `notes.txt` is a PDF.

    Then text: valid UTF-8 without NUL bytes is TEXT whatever the suffix (unknown or none
    included: a `.csv`, `.log` or `README` is read as text), HTML when the suffix is .html/.htm.
    A .txt/.md/.html/.htm file that is not valid UTF-8 but has no NUL bytes keeps its suffix's
    kind, so that its reader names the offending byte (or, for HTML, uses the page's charset).

    Anything else has no kind and a reason that names the file and says what to do: other Office
    files (save as PDF), archives, UTF-16 text, unknown binary, an empty file.
    """
    suffix = _suffix(name)
    if not data:
        return Sniffed(None, None, f"{name}: empty file")
    if b"%PDF-" in data[:1024]:
        return Sniffed(Kind.PDF, PDF_MEDIA_TYPE)
    media_type = _image_media_type(data)
    if media_type:
        return Sniffed(Kind.IMAGE, media_type)
    if data.startswith(_ZIP):
        return _zip_kind(data, name)
    if data.startswith(_OLE2):
        return Sniffed(None, None, f"{name}: an old-style Office file (.doc/.xls/.ppt), not a kind chorus reads "
                                   f"({READABLE}); save it as DOCX or PDF")
    if _looks_like_html(data):
        return Sniffed(Kind.HTML, HTML_MEDIA_TYPE)
    suffix_kind = SUFFIXES.get(suffix)
    if _utf8_text(data):
        if suffix_kind is Kind.HTML:
            return Sniffed(Kind.HTML, HTML_MEDIA_TYPE)
        return Sniffed(Kind.TEXT, MARKDOWN_MEDIA_TYPE if suffix == ".md" else TEXT_MEDIA_TYPE)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        if suffix_kind is Kind.HTML:
            return Sniffed(Kind.HTML, HTML_MEDIA_TYPE)
        return Sniffed(None, None, f"{name}: text in UTF-16, which chorus does not read; save it as UTF-8")
    if b"\x00" not in data:
        if suffix_kind is Kind.TEXT:
            return Sniffed(Kind.TEXT, MARKDOWN_MEDIA_TYPE if suffix == ".md" else TEXT_MEDIA_TYPE)
        if suffix_kind is Kind.HTML:
            return Sniffed(Kind.HTML, HTML_MEDIA_TYPE)
    if suffix_kind in (Kind.PDF, Kind.IMAGE, Kind.DOCX):
        what = {Kind.PDF: "a PDF", Kind.IMAGE: "a PNG/JPEG/GIF/WebP image", Kind.DOCX: "a Word (DOCX) file"}
        return Sniffed(None, None, f"{name}: named {suffix} but its content is not {what[suffix_kind]} "
                                   "(damaged, or another format); re-export it from its source")
    return Sniffed(None, None, f"{name}: not a kind chorus reads ({READABLE}); convert it to PDF or text")


# --- images --------------------------------------------------------------------------------------

def _be16(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 2], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            return None  # lost the marker chain
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # standalone markers carry no length
        if marker in (0xD9, 0xDA):
            return None  # end of image, or scan data before any frame header
        if i + 2 > n:
            return None
        length = _be16(data, i)
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 7 > n:
                return None
            height, width = _be16(data, i + 3), _be16(data, i + 5)
            return (width, height) if width and height else None
        i += length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w = int.from_bytes(data[26:28], "little") & 0x3FFF
        h = int.from_bytes(data[28:30], "little") & 0x3FFF
    elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
    else:
        return None
    return (w, h) if w and h else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG, JPEG, GIF or WebP header; None if it cannot be read."""
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return (w, h) if w and h else None
    if data.startswith(_JPEG):
        return _jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            return None
        w, h = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
        return (w, h) if w and h else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


def base64_size(n: int) -> int:
    """Length of the base64 text of n bytes."""
    return 4 * math.ceil(n / 3)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def image_problem(
    data: bytes,
    media_type: str,
    *,
    max_side: int = IMAGE_MAX_SIDE,
    max_base64_bytes: int = IMAGE_MAX_BASE64_BYTES,
) -> str | None:
    """Why Claude would refuse this image (with the fix), or None when it is fine."""
    if media_type not in IMAGE_MEDIA_TYPES:
        return f"{media_type} is not an image type Claude reads (PNG, JPEG, GIF, WebP); save it as PNG or JPEG"
    size = image_size(data)
    if size is None:
        return "the image header cannot be read (truncated or damaged); re-save it as PNG or JPEG"
    width, height = size
    if width > max_side or height > max_side:
        return (f"the image is {width}×{height} px, over the {max_side}×{max_side} px limit; "
                f"resize it below {max_side}×{max_side} px")
    encoded = base64_size(len(data))
    if encoded > max_base64_bytes:
        return (f"the image is {len(data):,} bytes, {encoded:,} once base64-encoded, over the "
                f"{_mb(max_base64_bytes)} limit per image; resize or recompress it (JPEG) "
                f"below {max_base64_bytes * 3 // 4:,} bytes")
    return None


def image_tokens_upper(width: int, height: int) -> int:
    """An upper bound on the input tokens of one image: ceil(w*h/750) after scaling the long edge
    down to 1568 px (rounding the sides up), capped at IMAGE_TOKENS_MAX."""
    if width < 1 or height < 1:
        raise ValueError(f"an image has positive sides, not {width}x{height}")
    long_edge = max(width, height)
    if long_edge > IMAGE_MAX_LONG_EDGE:
        scale = IMAGE_MAX_LONG_EDGE / long_edge
        width, height = math.ceil(width * scale), math.ceil(height * scale)
    return min(IMAGE_TOKENS_MAX, math.ceil(width * height / IMAGE_PIXELS_PER_TOKEN))


def pdf_page_image_tokens_upper() -> int:
    """An upper bound on the tokens of the image Claude makes of each PDF page (on top of its text)."""
    return IMAGE_TOKENS_MAX


# --- page ranges ---------------------------------------------------------------------------------

def _greedy(tokens: Sequence[int], max_pages: int, max_tokens: int) -> list[tuple[int, int]]:
    """Ranges filled in order up to max_pages and max_tokens; a page over max_tokens stands alone."""
    ranges: list[tuple[int, int]] = []
    start, total = 1, 0
    for page, t in enumerate(tokens, 1):
        count = page - start
        if count and (count >= max_pages or total + t > max_tokens):
            ranges.append((start, page - 1))
            start, total = page, 0
        total += t
    ranges.append((start, len(tokens)))
    return ranges


def _chunks(pages: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size - 1, pages)) for s in range(1, pages + 1, size)]


def page_ranges(
    pages: int,
    max_pages: int,
    *,
    per_page_tokens: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> list[tuple[int, int]]:
    """Cut pages 1..pages into 1-based inclusive ranges, in order, each of at most `max_pages`
    pages and, when `per_page_tokens` and `max_tokens` are given, at most `max_tokens` tokens
    (a single page over that budget is a range of its own).

    The ranges are balanced: 250 pages at 100 a range give 84, 84, 82 rather than 100, 100, 50
    (the size is ceil(pages / ceil(pages / max_pages))). When tokens bind, the fewest ranges the
    budget allows are kept and their token sums are evened out, then their page counts.
    """
    if pages < 1:
        raise ValueError(f"pages must be at least 1, not {pages}")
    if max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, not {max_pages}")
    if (per_page_tokens is None) != (max_tokens is None):
        raise ValueError("give per_page_tokens and max_tokens together, or neither")
    if per_page_tokens is None or max_tokens is None:
        return _chunks(pages, math.ceil(pages / math.ceil(pages / max_pages)))
    tokens = list(per_page_tokens)
    if len(tokens) != pages:
        raise ValueError(f"per_page_tokens has {len(tokens)} entries for {pages} pages")
    if any(t < 0 for t in tokens):
        raise ValueError("per_page_tokens cannot be negative")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")

    k = len(_greedy(tokens, max_pages, max_tokens))  # the fewest ranges possible
    plain = _chunks(pages, math.ceil(pages / k))
    if all(a == b or sum(tokens[a - 1 : b]) <= max_tokens for a, b in plain):
        return plain  # tokens do not bind: the same ranges as without them

    def fits(cap_pages: int, cap_tokens: int) -> bool:
        return len(_greedy(tokens, cap_pages, cap_tokens)) <= k

    lo, hi = 1, max_tokens  # the smallest token cap that still gives k ranges: tokens even out first
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(max_pages, mid) else (mid + 1, hi)
    cap_tokens = lo
    lo, hi = math.ceil(pages / k), max_pages  # then the smallest page cap
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid, cap_tokens) else (mid + 1, hi)
    return _greedy(tokens, lo, cap_tokens)
