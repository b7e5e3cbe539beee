"""The stub reads document (PDF, plain text) and image blocks like Anthropic does: its own token rule
(page text plus a page image; ceil(w*h/750) per image after resizing), the request, page and image
limits, the prompt cache over documents, and its stand-in for vision (text written in the image's own
metadata). Real PDFs and images, made here, go through the real anthropic SDK to a stub in this process."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pypdf
import pytest
from PIL import Image

from chorus.testing.stub.documents import (
    MAX_IMAGE_BYTES,
    MAX_PDF_PAGES,
    MAX_PDF_PAGES_UNDER_1M,
    MAX_REQUEST_BYTES,
    NO_TEXT,
    ImageInfo,
    MediaReader,
    fitted_size,
    image_tokens,
    max_pdf_pages,
    page_image_size,
    read_image,
    read_pdf,
)
from chorus.testing.stub.server import build_parser
from chorus.testing.stub.testing import StubHandle, running_stub
from chorus.testing.stub.tokenizer import MESSAGE_FRAMING, SYSTEM_FRAMING, count_request, count_text
from tests.chorus.testing.stub.media import (
    A4,
    ASK,
    LETTER,
    SYSTEM,
    blank_pdf,
    client_for,
    encrypted_pdf,
    error_of,
    image_block,
    in_process_stub,
    jpeg,
    pdf_block,
    png,
    scanned_pdf,
    text_pdf,
    vote,
)

LINE = "The kettle is excellent and quiet, and I love it."
PAGE_IMAGE_TOKENS = 1532  # a Letter or A4 page: 1568 px long edge, then 1.15 MP at most -> ceil(area / 750)


@pytest.fixture(scope="module")
def stub() -> Iterator[StubHandle]:
    with in_process_stub() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(stub: StubHandle) -> None:
    stub.reset()


@pytest.fixture
def client(stub: StubHandle) -> anthropic.Anthropic:
    return client_for(stub)


def answer_line(message: Any) -> str:
    return message.content[0].text.strip().splitlines()[-1]


def bad_request(client: anthropic.Anthropic, body: dict[str, Any]) -> anthropic.BadRequestError:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**body)
    error = caught.value
    assert error.status_code == 400 and error_of(error)["type"] == "invalid_request_error"
    return error


# ----- the token rule -----------------------------------------------------------------------------------
def test_an_image_is_resized_to_a_1568_px_long_edge_and_1_15_megapixels_then_costs_area_over_750():
    assert fitted_size(400, 300) == (400, 300) and image_tokens(400, 300) == 160  # small: as is
    assert image_tokens(1000, 1000) == 1334  # 1 MP, under both caps
    assert fitted_size(3000, 500) == (1568, 261)  # the long edge binds
    assert fitted_size(2000, 1000) == (1516, 758)  # then the area binds: 1,149,128 px
    assert image_tokens(2000, 1000) == 1533
    assert image_tokens(8000, 8000) == image_tokens(1072, 1072) == 1533  # any large square: 1.15 MP


@pytest.mark.parametrize("size", [LETTER, A4])
def test_a_letter_or_a4_page_image_costs_about_1500_tokens(size):
    assert max(page_image_size(*size)) == 1568
    assert image_tokens(*page_image_size(*size)) == PAGE_IMAGE_TOKENS


def test_the_image_headers_are_read_without_pillow_png_jpeg_gif_webp():
    assert read_image(png((640, 480), "hello")) == ImageInfo("image/png", 640, 480, "hello")
    assert read_image(png((5, 7), "a comment", keyword="Comment")).text == "a comment"
    assert read_image(png((5, 7))).text is None
    info = read_image(jpeg((321, 123), "written in COM"))
    assert (info.media_type, info.width, info.height, info.text) == ("image/jpeg", 321, 123, "written in COM")
    gif = io.BytesIO()
    Image.new("P", (33, 44)).save(gif, "GIF", comment=b"gif comment")
    assert (read_image(gif.getvalue()).width, read_image(gif.getvalue()).height) == (33, 44)
    assert read_image(gif.getvalue()).text == "gif comment"
    seen = set()
    for mode, lossless in (("RGB", False), ("RGB", True), ("RGBA", False)):
        out = io.BytesIO()
        Image.new(mode, (1001, 77)).save(out, "WEBP", lossless=lossless)
        data = out.getvalue()
        seen.add(data[12:16])
        assert (read_image(data).width, read_image(data).height) == (1001, 77)
    assert seen == {b"VP8 ", b"VP8L", b"VP8X"}  # each of the three WebP headers was read
    with pytest.raises(ValueError):
        read_image(b"GIF89a")  # cut short
    with pytest.raises(ValueError):
        read_image(b"not an image at all")


def test_the_page_limit_follows_the_models_context_window():
    assert max_pdf_pages("claude-haiku-4-5") == MAX_PDF_PAGES_UNDER_1M == 100
    assert max_pdf_pages("claude-sonnet-4-5-20250929") == 100
    assert max_pdf_pages("stub-model") == 100  # an id the stub cannot read: the smaller window
    for model in ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-2", "claude-haiku-5-5"):
        assert max_pdf_pages(model) == MAX_PDF_PAGES == 600, model  # 1M-token windows (the model pages)


def test_the_tokenizer_refuses_to_guess_a_document_without_a_reader():
    body = vote(pdf_block(text_pdf([LINE])))
    with pytest.raises(ValueError, match="MediaReader"):
        count_request(body)


def test_the_model_reads_each_block_in_its_place():
    body = vote({"type": "text", "text": "before\n"}, pdf_block(text_pdf(["first page", "second page"])),
                {"type": "text", "text": "between\n"}, image_block(png((12, 34))))
    reader = MediaReader()
    reader.check(body)
    assert (reader.pdf_pages, reader.images) == (2, 1)
    read = reader.reading(body["messages"][0]["content"])
    assert read.startswith("before\n<document>\nfirst page\n\nsecond page\n</document>\nbetween\n<document>\n")
    assert NO_TEXT.format(w=12, h=34) in read and read.endswith(ASK["text"])


# ----- usage --------------------------------------------------------------------------------------------
def test_a_pdfs_usage_grows_with_its_pages_by_page_text_plus_a_page_image(client):
    model = "claude-haiku-4-5"
    usage = {n: client.messages.create(**vote(pdf_block(text_pdf([LINE] * n)), model=model)).usage.input_tokens
             for n in (1, 2, 5)}
    per_page = count_text(LINE, model) + PAGE_IMAGE_TOKENS
    assert usage[2] - usage[1] == per_page and usage[5] - usage[1] == 4 * per_page
    rest = SYSTEM_FRAMING + count_text(SYSTEM, model) + MESSAGE_FRAMING + count_text(ASK["text"], model)
    assert usage[1] == rest + per_page
    counted = client.messages.count_tokens(model=model, system=SYSTEM,
                                           messages=vote(pdf_block(text_pdf([LINE] * 5)))["messages"])
    assert counted.input_tokens == usage[5]


def test_the_newer_tokenizer_counts_the_page_text_more_but_the_page_image_the_same(client):
    old = client.messages.create(**vote(pdf_block(text_pdf([LINE])), model="claude-haiku-4-5")).usage
    new = client.messages.create(**vote(pdf_block(text_pdf([LINE])), model="claude-haiku-5-5")).usage
    assert new.input_tokens > old.input_tokens
    rest_new = SYSTEM_FRAMING + count_text(SYSTEM, "claude-haiku-5-5") + MESSAGE_FRAMING + count_text(
        ASK["text"], "claude-haiku-5-5")
    assert new.input_tokens == rest_new + count_text(LINE, "claude-haiku-5-5") + PAGE_IMAGE_TOKENS


def test_an_images_usage_is_its_resized_area_over_750(client):
    small = client.messages.create(**vote(image_block(png((400, 300))))).usage.input_tokens
    large = client.messages.create(**vote(image_block(png((3000, 2000))))).usage.input_tokens
    assert large - small == image_tokens(3000, 2000) - 160 and image_tokens(3000, 2000) == 1532


def test_a_plain_text_document_costs_its_text_and_is_read_by_the_model(client):
    doc = "Terrible service. The kettle arrived broken and the support was rude."
    block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": doc},
             "title": "review"}
    response = client.messages.create(**vote(block))
    assert answer_line(response) == "Answer: negative"
    bare = client.messages.create(**vote()).usage.input_tokens
    assert response.usage.input_tokens - bare == count_text(doc) + count_text("review")


# ----- the prompt cache -----------------------------------------------------------------------------------
def test_the_same_pdf_with_cache_control_is_written_once_then_read(client, stub):
    pdf = text_pdf([LINE] * 3)  # 3 pages: above claude-haiku-4-5's 4,096-token minimum
    cached = pdf_block(pdf, cache_control={"type": "ephemeral"})
    first = client.messages.create(**vote(cached)).usage
    assert first.cache_creation_input_tokens >= 3 * PAGE_IMAGE_TOKENS and first.cache_read_input_tokens == 0
    for focus in ("whole", "opening", "closing"):  # the question after the document may change
        ask = {"type": "text", "text": f"<focus>{focus}</focus>\nReply with one line: Answer: <label>"}
        body = vote(pdf_block(pdf, cache_control={"type": "ephemeral"}))
        body["messages"][0]["content"][-1] = ask
        later = client.messages.create(**body).usage
        assert (later.cache_creation_input_tokens, later.cache_read_input_tokens) == (
            0, first.cache_creation_input_tokens)
    other = client.messages.create(**vote(pdf_block(text_pdf([LINE] * 2 + [LINE + "!"]),
                                                    cache_control={"type": "ephemeral"}))).usage
    assert other.cache_read_input_tokens == 0 and other.cache_creation_input_tokens > 0  # another PDF, another entry
    assert [e["pdf_pages"] for e in stub.requests(bodies=False)] == [3, 3, 3, 3, 3]


# ----- limits ---------------------------------------------------------------------------------------------
def test_more_than_100_pages_is_refused_below_a_1m_context_window_and_taken_at_1m(client):
    message = str(bad_request(client, vote(pdf_block(blank_pdf(101)), model="claude-haiku-4-5")).message)
    assert "100 PDF pages" in message and "101" in message
    split = vote(pdf_block(blank_pdf(60)), pdf_block(blank_pdf(41)), model="claude-haiku-4-5")
    assert "100 PDF pages" in str(bad_request(client, split).message)  # the limit is per request
    assert client.messages.create(**vote(pdf_block(blank_pdf(100)), model="claude-haiku-4-5")).usage
    big = client.messages.create(**vote(pdf_block(blank_pdf(101)), model="claude-sonnet-5-5"))
    assert big.usage.input_tokens > 101 * PAGE_IMAGE_TOKENS
    assert "600 PDF pages" in str(bad_request(client, vote(pdf_block(blank_pdf(601)), model="claude-opus-5-5")).message)


def test_a_body_over_the_request_limit_gets_413_request_too_large_before_it_is_parsed(client, stub):
    stub.set_limits(1024 * 1024)
    huge = "kettle " * 220_000  # 1.5 MB of JSON
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": huge}])
    assert caught.value.status_code == 413 and error_of(caught.value)["type"] == "request_too_large"
    with pytest.raises(anthropic.APIStatusError) as counted:
        client.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": huge}])
    assert counted.value.status_code == 413
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=10)
    try:  # not JSON at all: the size decides first (a parse would have answered 400)
        conn.request("POST", "/v1/messages", body=b"{" * 1_500_000, headers={"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]["type"] == "request_too_large"
    finally:
        conn.close()
    assert client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                  messages=[{"role": "user", "content": "kettle " * 1000}]).usage
    assert all(e["status"] == 200 for e in stub.requests(bodies=False))  # the refused bodies were never logged
    stub.reset()
    assert MAX_REQUEST_BYTES == 32 * 1024 * 1024
    assert stub._admin("GET", "/_stub/limits") == {"max_request_bytes": MAX_REQUEST_BYTES}  # reset restores it


def test_the_command_line_sets_the_request_limit_and_the_per_page_delay():
    args = build_parser().parse_args(["--max-request-bytes", "2048", "--ms-per-page", "7.5"])
    assert (args.max_request_bytes, args.ms_per_page) == (2048, 7.5)
    assert build_parser().parse_args([]).max_request_bytes == 32 * 1024 * 1024
    with running_stub(extra_args=("--max-request-bytes", "4096", "--ms-per-page", "40")) as stub:
        client = client_for(stub)
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                   messages=[{"role": "user", "content": "kettle " * 1000}])
        assert caught.value.status_code == 413
        started = time.monotonic()
        client.messages.create(**vote(pdf_block(blank_pdf(3))))
        assert time.monotonic() - started >= 0.12
        assert stub.requests(bodies=False)[-1]["page_delay_ms"] == 120


def test_each_pdf_page_adds_ms_per_input_page_to_the_delay_and_it_is_logged(client, stub):
    stub.set_latency(0, ms_per_input_page=30)
    try:
        started = time.monotonic()
        client.messages.create(**vote(pdf_block(blank_pdf(4))))
        elapsed = time.monotonic() - started
        client.messages.create(**vote())  # no PDF: no page delay
    finally:
        stub.set_latency(0)
    with_pdf, without = stub.requests(bodies=False)
    assert with_pdf["page_delay_ms"] == 120 and with_pdf["delay_ms"] >= 120 and with_pdf["latency_ms"] >= 120
    assert elapsed >= 0.12
    assert "page_delay_ms" not in without and without["delay_ms"] == 0


@pytest.mark.parametrize(("pdf", "expected"), [
    (encrypted_pdf(), "encrypted"),
    (b"%PDF-1.7\nthis is not a PDF body\n%%EOF", "not valid"),
    (b"plain text, no PDF header", "not valid"),
], ids=["encrypted", "no-body", "no-header"])  # fixed ids: the encrypted file differs at each collection
def test_a_pdf_that_does_not_parse_or_is_encrypted_is_refused(client, pdf, expected):
    message = str(bad_request(client, vote(pdf_block(pdf))).message)
    assert "The PDF specified was not valid" in message and expected in message


def test_bad_base64_and_media_types_the_block_does_not_take_are_refused(client):
    broken = pdf_block(text_pdf([LINE]))
    broken["source"]["data"] = broken["source"]["data"][:-3] + "*=="
    assert "base64" in str(bad_request(client, vote(broken)).message)
    as_png = pdf_block(text_pdf([LINE]))
    as_png["source"]["media_type"] = "image/png"
    assert "application/pdf" in str(bad_request(client, vote(as_png)).message)
    tiff = image_block(png(), media_type="image/tiff")
    assert "image/jpeg" in str(bad_request(client, vote(tiff)).message)
    lying = image_block(png(), media_type="image/jpeg")
    assert "does not match the provided media type image/jpeg" in str(bad_request(client, vote(lying)).message)
    url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    assert "URL" in str(bad_request(client, vote(url)).message)


def test_an_image_with_a_side_over_8000_px_is_refused_with_the_sdks_error_details(client):
    assert client.messages.create(**vote(image_block(png((8000, 8))))).usage
    error = bad_request(client, vote(image_block(png((8001, 8)))))
    assert "8000 pixels" in str(error.message)
    assert error_of(error)["details"] == {"error_code": "image_dimensions_too_large",
                                              "max_side_length_pixels": 8000, "paths": ["messages.0.content.0"]}
    assert error.error_code == "image_dimensions_too_large"  # what the SDK exposes


def test_more_than_20_images_each_take_at_most_2000_px(client):
    twenty = [image_block(png((2001, 8))) for _ in range(20)]
    assert client.messages.create(**vote(*twenty)).usage
    error = bad_request(client, vote(*twenty, image_block(png((10, 10)))))
    details = error_of(error)["details"]
    assert details["max_side_length_pixels"] == 2000 and len(details["paths"]) == 20


def test_an_image_over_5_mb_of_base64_is_refused(client):
    noise = Image.frombytes("RGB", (1400, 1000), os.urandom(1400 * 1000 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG", compress_level=0)
    assert len(base64.b64encode(out.getvalue())) > MAX_IMAGE_BYTES
    assert "exceeds 5 MB maximum" in str(bad_request(client, vote(image_block(out.getvalue()))).message)


def test_citations_and_structured_outputs_do_not_combine(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["label"],
              "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}}}
    cited = pdf_block(text_pdf([LINE]), citations={"enabled": True})
    message = str(bad_request(client, vote(cited, output_config={"format": {"type": "json_schema",
                                                                            "schema": schema}})).message)
    assert "citations" in message and "structured outputs" in message
    assert answer_line(client.messages.create(**vote(cited))) == "Answer: positive"  # citations alone: fine
    plain = pdf_block(text_pdf([LINE]))
    structured = client.messages.create(**vote(plain, output_config={"format": {"type": "json_schema",
                                                                               "schema": schema}}))
    assert json.loads(structured.content[0].text)["label"] == "positive"


def test_documents_and_images_go_in_user_messages_only(client):
    body = vote(pdf_block(text_pdf([LINE])))
    body["messages"] = [{"role": "user", "content": "Here is a picture."},
                        {"role": "assistant", "content": [image_block(png())]},
                        {"role": "user", "content": [ASK]}]
    assert "only allowed in user messages" in str(bad_request(client, body).message)


# ----- what the model reads -------------------------------------------------------------------------------
def test_the_pdfs_page_text_reaches_the_model(client):
    assert answer_line(client.messages.create(**vote(pdf_block(text_pdf([LINE]))))) == "Answer: positive"
    rude = text_pdf(["Terrible service.", "The kettle arrived broken and the support was rude."])
    assert answer_line(client.messages.create(**vote(pdf_block(rude)))) == "Answer: negative"


@pytest.mark.parametrize(("make", "media_type"), [
    (lambda text: png(description=text), "image/png"),
    (lambda text: png(description=text, keyword="Comment"), "image/png"),
    (lambda text: jpeg(comment=text), "image/jpeg"),
])
def test_the_label_written_only_in_an_images_metadata_reaches_the_model(client, make, media_type):
    praise = client.messages.create(**vote(image_block(make("I love this kettle, it is excellent."), media_type)))
    complaint = client.messages.create(**vote(image_block(make("Terrible, broken and awful."), media_type)))
    assert (answer_line(praise), answer_line(complaint)) == ("Answer: positive", "Answer: negative")


def test_an_image_without_text_gives_the_model_nothing_to_vote_on(client):
    blank = client.messages.create(**vote(image_block(png((640, 480)))))
    assert "positive" not in answer_line(blank) and "negative" not in answer_line(blank)


def test_a_scanned_page_is_read_through_its_jpegs_comment(client):
    scan = scanned_pdf(jpeg((300, 200), "Terrible, broken and awful."))
    page = pypdf.PdfReader(io.BytesIO(scan)).pages[0]
    assert not page.extract_text().strip()  # no text layer
    (embedded,) = page.images  # pypdf hands back the JPEG bytes, COM segment included
    assert embedded.name.endswith(".jpg") and b"Terrible, broken and awful." in embedded.data
    assert read_pdf(scan)[0].images == ((300, 200, "Terrible, broken and awful."),)
    assert answer_line(client.messages.create(**vote(pdf_block(scan)))) == "Answer: negative"
    unreadable = scanned_pdf(jpeg((300, 200)))
    assert read_pdf(unreadable)[0].reading() == NO_TEXT.format(w=300, h=200)


# ----- the Message Batches API ----------------------------------------------------------------------------
def test_a_batch_request_takes_the_same_blocks_and_bills_the_same(client, stub):
    stub.batch_config(delay_ms=0)
    params = vote(pdf_block(text_pdf([LINE] * 2)), image_block(png((800, 600), "excellent")))
    direct = client.messages.create(**params).usage.input_tokens
    created = client.messages.batches.create(requests=[  # type: ignore[list-item]
        {"custom_id": "doc-1", "params": params},
        {"custom_id": "too-long", "params": vote(pdf_block(blank_pdf(101)))},
    ])
    deadline = time.monotonic() + 30
    while client.messages.batches.retrieve(created.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert results["doc-1"].type == "succeeded"
    assert results["doc-1"].message.usage.input_tokens == direct  # type: ignore[union-attr]
    assert answer_line(results["doc-1"].message) == "Answer: positive"  # type: ignore[union-attr]
    assert results["too-long"].type == "errored"
    assert results["too-long"].error.error.type == "invalid_request_error"  # type: ignore[union-attr]
