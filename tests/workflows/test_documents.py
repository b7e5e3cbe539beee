"""workflows.documents: sniffing kinds by content, image headers and limits, token bounds and page
ranges. Every file here is real (made with Pillow, reportlab, python-docx or zipfile)."""

from __future__ import annotations

import io
import math
import random
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests import docfiles
from workflows.documents import (
    IMAGE_MEDIA_TYPES,
    IMAGE_TOKENS_MAX,
    SUFFIXES,
    Kind,
    Sniffed,
    base64_size,
    image_problem,
    image_size,
    image_tokens_upper,
    page_ranges,
    pdf_page_image_tokens_upper,
    sniff,
)


def pillow(fmt: str, size: tuple[int, int] = (123, 45), mode: str = "RGB", **options: object) -> bytes:
    """A blank image; RGBA ones are half transparent (so WebP keeps an alpha channel: VP8X)."""
    color: int | str | tuple[int, ...] = 0 if mode == "P" else (255, 255, 255, 128) if mode == "RGBA" else "white"
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **options)
    return out.getvalue()


def zip_of(*names: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return out.getvalue()


def jpeg_with_tables_first(size: tuple[int, int]) -> bytes:
    """A real JPEG whose Huffman tables (DHT, C4) come before the frame header (SOF0): a reader
    that takes any C0-CF marker for the frame reads the wrong size."""
    data = pillow("JPEG", size)
    segments, i = [], 2
    while data[i + 1] != 0xDA:
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segments.append(data[i : i + 2 + length])
        i += 2 + length
    tables = [s for s in segments if s[1] == 0xC4]
    others = [s for s in segments if s[1] != 0xC4]
    return data[:2] + b"".join(tables + others) + data[i:]


# --- sniff ---------------------------------------------------------------------------------------

PDF = docfiles.text_pdf(["Hello"])

SNIFF_TABLE = [
    # (data, name, kind, media_type)
    (PDF, "report.pdf", Kind.PDF, "application/pdf"),
    (PDF, "notes.txt", Kind.PDF, "application/pdf"),  # content wins over the suffix
    (PDF, "no-suffix", Kind.PDF, "application/pdf"),
    (b"garbage line\n" * 10 + PDF, "prefixed.pdf", Kind.PDF, "application/pdf"),  # %PDF- within 1024 bytes
    (docfiles.png("hi"), "a.png", Kind.IMAGE, "image/png"),
    (docfiles.png("hi"), "a.jpg", Kind.IMAGE, "image/png"),  # content decides the media type
    (docfiles.jpeg("hi"), "a.jpeg", Kind.IMAGE, "image/jpeg"),
    (pillow("GIF", mode="P"), "a.gif", Kind.IMAGE, "image/gif"),
    (pillow("WEBP"), "a.webp", Kind.IMAGE, "image/webp"),
    (docfiles.docx([("p", "x")]), "a.docx", Kind.DOCX,
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (docfiles.docx([("p", "x")]), "a.zip", Kind.DOCX,
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (docfiles.html("T", "<p>x</p>"), "page.html", Kind.HTML, "text/html"),
    (docfiles.html("T", "<p>x</p>"), "page.txt", Kind.HTML, "text/html"),
    (b"\xef\xbb\xbf  \n<HTML><body>x</body></HTML>", "page", Kind.HTML, "text/html"),
    (b"<!-- saved --><!DOCTYPE HTML><html></html>", "x.dat", Kind.HTML, "text/html"),
    (b"<p>fragment</p>", "frag.htm", Kind.HTML, "text/html"),  # by suffix: valid UTF-8 named .htm
    (b"<p>fragment</p>", "frag.txt", Kind.TEXT, "text/plain"),
    ("plain text, caf\u00e9\n".encode(), "a.txt", Kind.TEXT, "text/plain"),
    (b"# Title\n\nbody\n", "README.md", Kind.TEXT, "text/markdown"),
    (b"\xef\xbb\xbfwith a BOM", "bom.txt", Kind.TEXT, "text/plain"),
    (b"id,text\n1,hello\n", "data.csv", Kind.TEXT, "text/plain"),  # unknown suffix, UTF-8 text
    (b"just text", "README", Kind.TEXT, "text/plain"),  # no suffix
    ("caf\u00e9".encode("latin-1"), "latin.txt", Kind.TEXT, "text/plain"),  # the reader names the byte
]


@pytest.mark.parametrize(("data", "name", "kind", "media_type"), SNIFF_TABLE)
def test_sniff_recognises_the_kind_by_content_first(data, name, kind, media_type):
    assert sniff(data, name) == Sniffed(kind, media_type, None)


REFUSED_TABLE = [
    # (data, name, words the reason must contain)
    (zip_of("[Content_Types].xml", "xl/workbook.xml"), "report.xlsx", ["report.xlsx", "Excel", "save it as PDF"]),
    (zip_of("[Content_Types].xml", "ppt/presentation.xml"), "deck.pptx", ["deck.pptx", "PowerPoint", "save it as PDF"]),
    (zip_of("a.txt", "b.txt"), "bundle.zip", ["bundle.zip", "ZIP archive", "unpack"]),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.doc", ["old.doc", "old-style Office", "DOCX or PDF"]),
    ("text".encode("utf-16"), "wide.txt", ["wide.txt", "UTF-16", "UTF-8"]),
    (random.Random(3).randbytes(4096) + b"\x00", "blob.bin", ["blob.bin", "not a kind chorus reads", "PDF or text"]),
    (b"\x00\x01\x02" * 100, "photo.png", ["photo.png", "named .png", "not a PNG/JPEG/GIF/WebP image"]),
    (b"", "empty.txt", ["empty.txt", "empty file"]),
]


@pytest.mark.parametrize(("data", "name", "words"), REFUSED_TABLE)
def test_sniff_refuses_other_files_by_name_with_a_fix(data, name, words):
    sniffed = sniff(data, name)
    assert sniffed.kind is None and sniffed.media_type is None
    assert sniffed.reason is not None
    for word in words:
        assert word in sniffed.reason


def test_the_suffix_table_and_media_types():
    assert SUFFIXES[".md"] is Kind.TEXT and SUFFIXES[".htm"] is Kind.HTML and SUFFIXES[".jpeg"] is Kind.IMAGE
    assert set(SUFFIXES.values()) == set(Kind)
    assert IMAGE_MEDIA_TYPES == ("image/png", "image/jpeg", "image/gif", "image/webp")
    assert [k.value for k in Kind] == ["text", "pdf", "image", "docx", "html"]


# --- image_size ----------------------------------------------------------------------------------

SIZE_TABLE = [
    ("png", lambda s: pillow("PNG", s)),
    ("png-rgba", lambda s: pillow("PNG", s, mode="RGBA")),
    ("jpeg-baseline", lambda s: pillow("JPEG", s)),
    ("jpeg-progressive", lambda s: pillow("JPEG", s, progressive=True)),  # SOF2
    ("jpeg-cmyk", lambda s: pillow("JPEG", s, mode="CMYK")),
    ("jpeg-exif", lambda s: pillow("JPEG", s, exif=b"Exif\x00\x00" + bytes(200))),  # APP1 before the frame
    ("jpeg-dht-first", jpeg_with_tables_first),  # C4 before C0 must be skipped
    ("jpeg-comment", lambda s: docfiles.jpeg("a comment", size=s)),
    ("gif87", lambda s: pillow("GIF", s, mode="P")),
    ("webp-lossy-vp8", lambda s: pillow("WEBP", s)),
    ("webp-lossless-vp8l", lambda s: pillow("WEBP", s, lossless=True)),
    ("webp-alpha-vp8x", lambda s: pillow("WEBP", s, mode="RGBA")),
]


@pytest.mark.parametrize("size", [(123, 45), (1, 1), (4000, 3)])
@pytest.mark.parametrize(("fmt", "make"), SIZE_TABLE, ids=[row[0] for row in SIZE_TABLE])
def test_image_size_reads_every_format_header(fmt, make, size):
    data = make(size)
    assert image_size(data) == size
    assert Image.open(io.BytesIO(data)).size == size  # the file is real


def test_the_webp_variants_are_the_three_chunk_kinds():
    assert [pillow("WEBP")[12:16], pillow("WEBP", lossless=True)[12:16], pillow("WEBP", mode="RGBA")[12:16]] == [
        b"VP8 ", b"VP8L", b"VP8X"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        pillow("PNG")[:20],  # cut inside IHDR
        pillow("JPEG")[:100],  # cut before the frame header
        b"\xff\xd8\xff\xda" + bytes(20),  # scan data before any frame
        pillow("GIF", mode="P")[:8],
        pillow("WEBP")[:22],
        b"RIFF\x00\x00\x00\x00WEBPJUNK" + bytes(20),
        PDF,
    ],
)
def test_image_size_is_none_when_unreadable(data):
    assert image_size(data) is None


# --- image_problem -------------------------------------------------------------------------------

def test_a_normal_image_has_no_problem():
    for data, media_type in [(docfiles.png("x"), "image/png"), (docfiles.jpeg("x"), "image/jpeg")]:
        assert image_problem(data, media_type) is None


def test_an_image_over_8000_px_is_refused_with_the_fix():
    problem = image_problem(pillow("PNG", (8001, 10), mode="L"), "image/png")
    assert problem is not None
    assert "8001×10" in problem and "resize it below 8000×8000 px" in problem
    assert image_problem(pillow("PNG", (8000, 10), mode="L"), "image/png") is None


def test_the_base64_limit_is_exact():
    data = docfiles.png("limit")
    encoded = base64_size(len(data))
    assert encoded == len(__import__("base64").b64encode(data))
    assert image_problem(data, "image/png", max_base64_bytes=encoded) is None
    problem = image_problem(data, "image/png", max_base64_bytes=encoded - 1)
    assert problem is not None and "base64" in problem and "recompress" in problem


def test_an_image_over_5_mb_once_encoded_is_refused():
    side = 1200  # 4.3 MB of noise: under 5 MB raw, over it in base64
    noise = Image.frombytes("RGB", (side, side), random.Random(0).randbytes(side * side * 3))
    out = io.BytesIO()
    noise.save(out, "PNG", compress_level=1)
    data = out.getvalue()
    assert len(data) < 5 * 1024 * 1024 < base64_size(len(data))
    problem = image_problem(data, "image/png")
    assert problem is not None and "5 MB" in problem


@pytest.mark.parametrize(
    ("data", "media_type", "words"),
    [
        (pillow("PNG")[:20], "image/png", "cannot be read"),
        (pillow("PNG"), "image/tiff", "not an image type"),
    ],
)
def test_unreadable_or_unsupported_images_are_named(data, media_type, words):
    problem = image_problem(data, media_type)
    assert problem is not None and words in problem


# --- token bounds --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        ((1, 1), 1),
        ((200, 200), 54),  # ceil(40000 / 750)
        ((1000, 1000), 1334),
        ((1092, 1092), 1590),
        ((1568, 1568), 1600),  # capped
        ((4000, 3000), 1600),
        ((100, 10000), 34),  # long edge scaled to 1568: 16 x 1568 px
    ],
)
def test_image_tokens_upper_table(size, tokens):
    assert image_tokens_upper(*size) == tokens


def test_image_tokens_upper_refuses_empty_images():
    with pytest.raises(ValueError):
        image_tokens_upper(0, 10)


def anthropic_image_tokens(width: int, height: int) -> int:
    """The documented rule: shrink to a long edge of at most 1568 px and at most 1.15 megapixels."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    return math.ceil(w * h / 750)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 20000))
def test_image_tokens_upper_is_an_upper_bound(width, height):
    bound = image_tokens_upper(width, height)
    assert anthropic_image_tokens(width, height) <= bound <= IMAGE_TOKENS_MAX


def test_a_pdf_page_image_is_bounded_like_an_image():
    assert pdf_page_image_tokens_upper() == IMAGE_TOKENS_MAX == 1600


# --- page_ranges ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pages", "max_pages", "ranges"),
    [
        (250, 100, [(1, 84), (85, 168), (169, 250)]),  # balanced, not 100/100/50
        (1, 1, [(1, 1)]),
        (1, 100, [(1, 1)]),
        (100, 100, [(1, 100)]),
        (101, 100, [(1, 51), (52, 101)]),
        (5, 1, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
        (10, 4, [(1, 4), (5, 8), (9, 10)]),
    ],
)
def test_page_ranges_table(pages, max_pages, ranges):
    assert page_ranges(pages, max_pages) == ranges


@pytest.mark.parametrize(
    ("tokens", "max_pages", "max_tokens", "ranges"),
    [
        ([10] * 10, 100, 1000, [(1, 10)]),  # tokens do not bind
        ([10] * 250, 100, 10**6, [(1, 84), (85, 168), (169, 250)]),  # same as without tokens
        ([5, 100, 5], 10, 10, [(1, 1), (2, 2), (3, 3)]),  # a page over budget stands alone
        ([5, 5, 100, 5, 5], 10, 10, [(1, 2), (3, 3), (4, 5)]),
        ([10] * 12, 100, 40, [(1, 4), (5, 8), (9, 12)]),
        ([1, 1, 1, 1, 1, 1, 30, 30], 100, 60, [(1, 7), (8, 8)]),
    ],
)
def test_page_ranges_with_a_token_budget(tokens, max_pages, max_tokens, ranges):
    assert page_ranges(len(tokens), max_pages, per_page_tokens=tokens, max_tokens=max_tokens) == ranges


def test_page_ranges_even_out_when_tokens_bind():
    # 50 light pages then 50 heavy ones, 300 tokens a range: 7 ranges at least. Filling greedily
    # gives 300, 290, 300, 300, 300, 300 and a 210 tail; the balanced cut keeps 7 ranges and no
    # range under 250 tokens.
    tokens = [10] * 50 + [30] * 50
    ranges = page_ranges(100, 100, per_page_tokens=tokens, max_tokens=300)
    sums = [sum(tokens[a - 1 : b]) for a, b in ranges]
    assert len(ranges) == 7
    assert max(sums) <= 300 and min(sums) >= 250


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 10), {}),
        ((10, 0), {}),
        ((3, 10), {"per_page_tokens": [1, 2]}),
        ((3, 10), {"max_tokens": 5}),
        ((2, 10), {"per_page_tokens": [1, 2, 3], "max_tokens": 5}),
        ((2, 10), {"per_page_tokens": [1, -2], "max_tokens": 5}),
        ((2, 10), {"per_page_tokens": [1, 2], "max_tokens": 0}),
    ],
)
def test_page_ranges_refuses_bad_arguments(args, kwargs):
    with pytest.raises(ValueError):
        page_ranges(*args, **kwargs)


def check_ranges(ranges, pages, max_pages):
    assert ranges[0][0] == 1 and ranges[-1][1] == pages
    for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False):
        assert c == b + 1  # in order, no gap, no overlap
    for a, b in ranges:
        assert 1 <= a <= b <= pages and b - a + 1 <= max_pages


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1000), st.integers(1, 150))
def test_page_ranges_cover_all_pages_in_order_and_balanced(pages, max_pages):
    ranges = page_ranges(pages, max_pages)
    check_ranges(ranges, pages, max_pages)
    assert len(ranges) == math.ceil(pages / max_pages)  # no more ranges than needed
    assert max(b - a + 1 for a, b in ranges) == math.ceil(pages / len(ranges))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 3000), min_size=1, max_size=400),
    st.integers(1, 120),
    st.integers(1, 20000),
)
def test_page_ranges_keep_the_token_budget_and_the_fewest_ranges(tokens, max_pages, max_tokens):
    pages = len(tokens)
    ranges = page_ranges(pages, max_pages, per_page_tokens=tokens, max_tokens=max_tokens)
    check_ranges(ranges, pages, max_pages)
    for a, b in ranges:
        assert a == b or sum(tokens[a - 1 : b]) <= max_tokens
    # the fewest ranges: greedy filling is optimal for contiguous ranges under these caps
    greedy, start, total = 0, 1, 0
    for page, t in enumerate(tokens, 1):
        if page > start and (page - start >= max_pages or total + t > max_tokens):
            greedy, start, total = greedy + 1, page, 0
        total += t
    assert len(ranges) == greedy + 1
