"""chorus.documents: the readers, on real files from tests/docfiles.py (nothing is mocked), and the
factory itself (a scanned PDF really has no text; a corrupt PDF really does not open)."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import random
import zipfile
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from chorus.documents import DocumentError, ReadDocument, read_document, read_path, split_pdf
from tests import docfiles
from workflows.documents import Kind, page_ranges
from workflows.errors import ConfigError

# --- the factory makes what it says --------------------------------------------------------------


def test_scanned_pdf_pages_are_the_jpegs_verbatim_with_no_text():
    texts = ["Invoice 42: total 1,250 EUR", "Second page of the scan"]
    reader = PdfReader(io.BytesIO(docfiles.scanned_pdf(texts)))
    assert len(reader.pages) == 2
    for page, text in zip(reader.pages, texts, strict=True):
        assert page.extract_text().strip() == ""
        image = page.images[0]
        assert image.data.startswith(b"\xff\xd8")
        assert text.encode() in image.data  # the JPEG's comment segment survived
        xobjects: Any = page["/Resources"]["/XObject"]  # type: ignore[index]
        (stream,) = [xobjects[key].get_object() for key in xobjects]
        assert stream.get_data() == docfiles.jpeg(text, size=(612, 792))  # embedded byte for byte


def test_text_pdf_has_the_text_on_each_page():
    reader = PdfReader(io.BytesIO(docfiles.text_pdf(3, title="Quarterly report")))
    texts = [page.extract_text() for page in reader.pages]
    assert texts[0].startswith("Quarterly report")
    assert [f"Page {i} of 3." in t for i, t in enumerate(texts, 1)] == [True, True, True]
    assert reader.metadata is not None and reader.metadata.title == "Quarterly report"


def test_corrupt_pdf_does_not_open_in_pypdf():
    data = docfiles.corrupt_pdf()
    assert data.startswith(b"%PDF-")
    with pytest.raises(Exception):  # noqa: B017 - any pypdf error: the point is that it fails
        reader = PdfReader(io.BytesIO(data))
        [page.extract_text() for page in reader.pages]


def test_encrypted_pdf_is_encrypted():
    assert PdfReader(io.BytesIO(docfiles.encrypted_pdf())).is_encrypted
    assert PdfReader(io.BytesIO(docfiles.encrypted_pdf(""))).is_encrypted


def test_big_pdf_is_big_and_valid():
    data = docfiles.big_pdf(35 * 1024 * 1024)
    assert len(data) >= 35 * 1024 * 1024
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 2
    assert "big on purpose" in reader.pages[0].extract_text()


# --- PDF -----------------------------------------------------------------------------------------


def test_a_text_pdf_is_read_page_by_page():
    data = docfiles.text_pdf(3)
    doc = read_document(data, "report.pdf")
    assert (doc.kind, doc.media_type, doc.pages) == (Kind.PDF, "application/pdf", 3)
    assert doc.data == data
    assert [t.startswith(f"Page {i} of 3.") for i, t in enumerate(doc.page_texts, 1)] == [True] * 3
    assert doc.text == "\n\n".join(doc.page_texts)
    assert doc.size == len(data) and doc.sha256 == hashlib.sha256(data).hexdigest()
    assert doc.has_text_layer and doc.pages_without_text == ()
    assert (doc.width, doc.height) == (None, None)


def test_a_pdf_named_txt_is_read_as_a_pdf():
    doc = read_document(docfiles.text_pdf(["Hello from a PDF"]), "notes.txt")
    assert doc.kind is Kind.PDF and doc.page_texts == ("Hello from a PDF",)


def test_a_scanned_pdf_has_no_text_layer():
    doc = read_document(docfiles.scanned_pdf(["one", "two"]), "scan.pdf")
    assert doc.pages == 2 and doc.text.strip() == ""
    assert not doc.has_text_layer and doc.pages_without_text == (1, 2)


def test_a_pdf_mixing_text_and_scanned_pages_names_the_scanned_ones():
    writer = PdfWriter()
    writer.append(io.BytesIO(docfiles.text_pdf(["typed page"])))
    writer.append(io.BytesIO(docfiles.scanned_pdf(["scanned page"])))
    writer.append(io.BytesIO(docfiles.text_pdf(["typed again"])))
    out = io.BytesIO()
    writer.write(out)
    doc = read_document(out.getvalue(), "mixed.pdf")
    assert doc.has_text_layer and doc.pages_without_text == (2,)


@pytest.mark.parametrize("password", ["secret", ""])
def test_an_encrypted_pdf_is_refused_with_the_fix(password):
    with pytest.raises(DocumentError) as caught:
        read_document(docfiles.encrypted_pdf(password), "locked.pdf")
    message = str(caught.value)
    assert message.startswith("locked.pdf: ")
    assert "encrypted" in message and "qpdf --decrypt" in message


CORRUPT = {
    "factory": docfiles.corrupt_pdf(),
    "header-only": b"%PDF-1.7\n",
    "noise": b"%PDF-1.4\n" + random.Random(1).randbytes(3000),
    "cut-at-90%": docfiles.text_pdf(3)[: int(len(docfiles.text_pdf(3)) * 0.9)],
}


@pytest.mark.parametrize("data", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_pdf_is_a_document_error_not_a_traceback(data):
    with pytest.raises(DocumentError) as caught:
        read_document(data, "broken.pdf")
    message = str(caught.value)
    assert message.startswith("broken.pdf: the PDF cannot be read (") and "re-export it" in message


def test_pypdf_warnings_are_silenced_during_the_call_only(caplog):
    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("pypdf")
    with pytest.raises(Exception):  # noqa: B017 - precondition: pypdf itself warns on this file
        PdfReader(io.BytesIO(docfiles.corrupt_pdf())).pages[0].extract_text()
    assert any(r.name.startswith("pypdf") for r in caplog.records)
    caplog.clear()
    before = logger.level
    with pytest.raises(DocumentError):
        read_document(docfiles.corrupt_pdf(), "broken.pdf")
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert logger.level == before


def test_a_pdf_without_pages_is_refused():
    out = io.BytesIO()
    PdfWriter().write(out)
    with pytest.raises(DocumentError, match=r"^empty\.pdf: the PDF has no pages"):
        read_document(out.getvalue(), "empty.pdf")


# --- split_pdf -----------------------------------------------------------------------------------


def test_a_250_page_pdf_splits_into_balanced_ranges():
    data = docfiles.text_pdf(250)
    ranges = page_ranges(250, 100)
    parts = split_pdf(data, ranges)
    readers = [PdfReader(io.BytesIO(part)) for part in parts]
    counts = [len(r.pages) for r in readers]
    assert counts == [84, 84, 82] and sum(counts) == 250
    for (first, last), reader in zip(ranges, readers, strict=True):
        assert reader.pages[0].extract_text().startswith(f"Page {first} of 250.")
        assert reader.pages[-1].extract_text().startswith(f"Page {last} of 250.")
    assert [read_document(part, "part.pdf").pages for part in parts] == [84, 84, 82]


def test_split_keeps_the_page_images():
    texts = ["scan one", "scan two", "scan three"]
    parts = split_pdf(docfiles.scanned_pdf(texts), [(1, 1), (2, 3)])
    second = PdfReader(io.BytesIO(parts[1]))
    assert len(second.pages) == 2
    assert b"scan two" in second.pages[0].images[0].data and b"scan three" in second.pages[1].images[0].data


@pytest.mark.parametrize("ranges", [[(0, 1)], [(2, 1)], [(1, 4)]])
def test_split_refuses_ranges_outside_the_pdf(ranges):
    with pytest.raises(ValueError):
        split_pdf(docfiles.text_pdf(3), ranges)


def test_split_refuses_an_encrypted_pdf():
    with pytest.raises(DocumentError, match="encrypted"):
        split_pdf(docfiles.encrypted_pdf(), [(1, 1)], name="locked.pdf")


# --- images --------------------------------------------------------------------------------------


def image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 0 if mode == "P" else "white").save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (docfiles.png("a diagram", size=(321, 123)), "image/png"),
        (docfiles.jpeg("a photo", size=(321, 123)), "image/jpeg"),
        (image("GIF", (321, 123), mode="P"), "image/gif"),
        (image("WEBP", (321, 123)), "image/webp"),
    ],
)
def test_images_are_kept_as_bytes_with_their_size(data, media_type):
    doc = read_document(data, "picture")
    assert (doc.kind, doc.media_type, doc.width, doc.height) == (Kind.IMAGE, media_type, 321, 123)
    assert doc.data == data and doc.text == "" and doc.pages == 0
    assert not doc.has_text_layer and doc.pages_without_text == ()


def test_an_image_too_large_is_refused_by_name():
    with pytest.raises(DocumentError) as caught:
        read_document(image("PNG", (9000, 20), mode="L"), "poster.png")
    assert str(caught.value).startswith("poster.png: ") and "resize it below 8000×8000 px" in str(caught.value)


def test_an_image_with_a_broken_header_is_refused():
    with pytest.raises(DocumentError, match=r"^cut\.png: the image header cannot be read"):
        read_document(docfiles.png()[:20], "cut.png")


# --- Word ----------------------------------------------------------------------------------------


def test_word_headings_lists_and_tables_become_markdown_in_order():
    data = docfiles.docx(
        [
            ("title", "Annual report"),
            ("h1", "Introduction"),
            ("p", "The year went well."),
            ("li", "sales up"),
            ("li", "costs down"),
            ("h2", "Figures"),
            ("table", "region|revenue;north|10;south|7"),
            ("p", "The end."),
        ]
    )
    doc = read_document(data, "report.docx")
    assert doc.kind is Kind.DOCX and doc.data is None and doc.pages == 0
    assert doc.text == (
        "# Annual report\n\n"
        "# Introduction\n\n"
        "The year went well.\n\n"
        "- sales up\n- costs down\n\n"
        "## Figures\n\n"
        "| region | revenue |\n| --- | --- |\n| north | 10 |\n| south | 7 |\n\n"
        "The end."
    )
    assert doc.has_text_layer


def test_a_corrupt_word_file_is_a_document_error():
    data = docfiles.docx([("p", "hello")])
    with pytest.raises(DocumentError, match=r"^cut\.docx: the Word file cannot be read"):
        read_document(data[: len(data) // 2], "cut.docx")


def test_a_zip_with_a_broken_word_document_is_a_document_error():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "not xml at all <<<")
        archive.writestr("word/document.xml", "<w:document")
    with pytest.raises(DocumentError, match=r"^bad\.docx: the Word file cannot be read"):
        read_document(out.getvalue(), "bad.docx")


# --- HTML ----------------------------------------------------------------------------------------

PAGE_BODY = """
<header><nav><a href="/">Home</a> <a href="/about">About us</a></nav></header>
<aside>Related: other stories</aside>
<main>
  <h2>Results</h2>
  <p>Revenue rose <b>12 %</b> this year.</p>



  <ul><li>north</li><li>south</li></ul>
  <form><input name="q"><button>Search</button></form>
  <noscript>Enable JavaScript</noscript>
  <script>document.write("SECRET-BODY-SCRIPT")</script>
  <style>.x { color: red; }</style>
</main>
<footer>Copyright 2026 Example Inc.</footer>
"""


def test_html_keeps_the_main_content_as_markdown():
    doc = read_document(docfiles.html("Annual results", PAGE_BODY, script="alert('SECRET-SCRIPT')"), "page.html")
    assert doc.kind is Kind.HTML and doc.data is None
    text = doc.text
    assert text.startswith("# Annual results\n\n## Results")  # the title, as the body has no h1
    assert "Revenue rose **12 %** this year." in text and "- north\n- south" in text
    dropped = ("SECRET-SCRIPT", "SECRET-BODY-SCRIPT", "color: red", "font-family", "Home", "About us", "Related",
               "Search", "Enable JavaScript", "Copyright")
    for gone in dropped:
        assert gone not in text
    assert "\n\n\n" not in text


def test_html_keeps_its_own_h1_and_prefers_the_article():
    body = "<div>sidebar junk</div><article><header><h1>Story</h1></header><p>Story text.</p></article>"
    doc = read_document(docfiles.html("Site name | Story", body), "story.htm")
    assert doc.text == "# Story\n\nStory text."


def test_html_without_main_uses_the_body():
    doc = read_document(docfiles.html("T", "<h1>Heading</h1><p>para</p>"), "x.html")
    assert doc.text == "# Heading\n\npara"


def test_html_is_decoded_with_its_meta_charset():
    page = '<html><head><meta charset="windows-1252"><title>Menu</title></head><body><p>Caf\u00e9 cr\u00e8me</p>'
    doc = read_document(page.encode("cp1252"), "menu.html")
    assert "Caf\u00e9 cr\u00e8me" in doc.text


# --- text ----------------------------------------------------------------------------------------


def test_text_is_read_as_utf8_without_its_bom():
    doc = read_document(b"\xef\xbb\xbfHello caf\xc3\xa9\n", "note.txt")
    assert (doc.kind, doc.media_type, doc.text, doc.data) == (Kind.TEXT, "text/plain", "Hello caf\u00e9\n", None)
    assert doc.has_text_layer
    assert read_document(b"# T\n", "a.md").media_type == "text/markdown"
    assert not read_document(b"  \n", "blank.txt").has_text_layer


def test_text_that_is_not_utf8_names_the_byte():
    with pytest.raises(DocumentError) as caught:
        read_document("na\u00efve".encode("latin-1"), "old.txt")
    assert str(caught.value) == "old.txt: not valid UTF-8 text (byte 0xef at offset 2); save it as UTF-8"


# --- refused kinds -------------------------------------------------------------------------------


def test_an_xlsx_is_refused_by_name():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DocumentError) as caught:
        read_document(out.getvalue(), "report.xlsx")
    message = str(caught.value)
    assert message.startswith("report.xlsx: an Excel workbook") and "save it as PDF" in message
    assert message.count("report.xlsx") == 1


@pytest.mark.parametrize(("data", "words"), [(b"", "empty file"), (bytes(range(256)) * 4, "not a kind chorus reads")])
def test_empty_and_unknown_files_are_refused(data, words):
    with pytest.raises(DocumentError, match=words) as caught:
        read_document(data, "thing.bin")
    assert str(caught.value).startswith("thing.bin: ")


def test_document_error_is_a_config_error_and_pickles():
    error = DocumentError("a.pdf", "the PDF is encrypted")
    assert isinstance(error, ConfigError)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.name, again.reason) == ("a.pdf: the PDF is encrypted", "a.pdf", "the PDF is encrypted")


# --- read_path -----------------------------------------------------------------------------------


def test_read_path_reads_the_file_under_its_name(tmp_path):
    path = docfiles.write(tmp_path / "in", "deck.pdf", docfiles.text_pdf(2))
    doc = read_path(path, max_bytes=10**6)
    assert isinstance(doc, ReadDocument) and doc.name == "deck.pdf" and doc.pages == 2


def test_read_path_refuses_a_file_over_the_limit_naming_the_setting(tmp_path):
    path = docfiles.write(tmp_path, "huge.pdf", docfiles.big_pdf(35 * 1024 * 1024))
    with pytest.raises(DocumentError) as caught:
        read_path(path, max_bytes=32 * 1024 * 1024)
    message = str(caught.value)
    assert message.startswith("huge.pdf: ") and f"{path.stat().st_size:,} bytes" in message
    assert "33,554,432" in message and "CHORUS_MAX_DOCUMENT_BYTES" in message
    doc = read_path(path, max_bytes=64 * 1024 * 1024)
    assert doc.pages == 2 and doc.pages_without_text == (2,)


def test_read_path_of_a_missing_file_is_a_document_error(tmp_path):
    with pytest.raises(DocumentError, match=r"^nothing\.pdf: cannot be read"):
        read_path(tmp_path / "nothing.pdf", max_bytes=100)
