"""The stub's Files API, driven through the real anthropic SDK (`client.files` and `client.beta.files`):
upload, list, retrieve, delete; `file` sources in messages bill like their base64 form; count_tokens
refuses them; the admin API counts uploads and deletes."""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import time
from collections.abc import Iterator

import anthropic
import pytest

from chorus.testing.stub.files import MAX_UPLOAD_BYTES, parse_multipart
from chorus.testing.stub.testing import StubHandle
from tests.chorus.testing.stub.media import (
    client_for,
    error_of,
    file_block,
    image_block,
    in_process_stub,
    pdf_block,
    png,
    text_pdf,
    vote,
)

LINE = "The kettle is excellent and quiet, and I love it."
BETA = ["files-api-2025-04-14"]


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


def test_upload_retrieve_list_and_delete_through_the_sdk(client, stub):
    pdf = text_pdf([LINE])
    before = dt.datetime.now(dt.UTC)
    uploaded = client.files.upload(file=("review.pdf", pdf, "application/pdf"))
    assert uploaded.id.startswith("file_") and uploaded.type == "file"
    assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes) == ("review.pdf", "application/pdf", len(pdf))
    assert uploaded.downloadable is False and uploaded.expires_at is None
    assert before - dt.timedelta(seconds=1) <= uploaded.created_at <= dt.datetime.now(dt.UTC)
    beta = client.beta.files.upload(file=("pixel.png", png((3, 3)), "image/png"), betas=BETA)  # the beta header
    assert beta.mime_type == "image/png"
    third = client.files.upload(file=("notes.txt", b"plain words", "text/plain"))
    assert client.files.retrieve_metadata(uploaded.id) == uploaded
    assert client.beta.files.retrieve_metadata(beta.id, betas=BETA).size_bytes == beta.size_bytes
    # newest first, two a page: the SDK follows next_page to the end
    assert [f.id for f in client.files.list(limit=2)] == [third.id, beta.id, uploaded.id]
    first_page = client.files.list(limit=2)
    assert first_page.has_next_page() and len(first_page.data) == 2
    assert [f.id for f in client.beta.files.list(betas=BETA)] == [third.id, beta.id, uploaded.id]
    assert [f.id for f in client.files.list(ids=[uploaded.id, "file_unknown"])] == [uploaded.id]
    deleted = client.files.delete(beta.id)
    assert (deleted.id, deleted.type) == (beta.id, "file_deleted")
    with pytest.raises(anthropic.NotFoundError) as gone:
        client.files.retrieve_metadata(beta.id)
    assert error_of(gone.value)["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.files.delete(beta.id)  # a second delete: it is gone
    with pytest.raises(anthropic.NotFoundError):
        client.files.retrieve_metadata("file_never_uploaded")
    assert [f.id for f in client.files.list()] == [third.id, uploaded.id]
    seen = stub.files()
    assert (seen["uploads"], seen["deletes"], seen["live"]) == (3, 1, 2)
    assert [(f["id"], f["live"], f["deleted_at"] is not None) for f in seen["files"]] == [
        (uploaded.id, True, False), (beta.id, False, True), (third.id, True, False)]
    stub.reset()
    assert stub.files() == {"uploads": 0, "deletes": 0, "live": 0, "files": []}
    assert list(client.files.list()) == []


def test_an_uploaded_file_cannot_be_downloaded(client):
    uploaded = client.files.upload(file=("review.pdf", text_pdf([LINE]), "application/pdf"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.files.download(uploaded.id)
    assert caught.value.error_code == "file_not_downloadable"


def test_the_mime_type_is_sniffed_and_expiry_is_kept(client):
    uploaded = client.files.upload(file=("scan.bin", text_pdf([LINE]), "application/octet-stream"))
    assert uploaded.mime_type == "application/pdf"
    expiring = client.files.upload(file=("a.pdf", text_pdf([LINE]), "application/pdf"), expires_in_seconds=3600)
    assert expiring.expires_at is not None and expiring.expires_at - expiring.created_at == dt.timedelta(hours=1)
    with pytest.raises(anthropic.BadRequestError, match="expires_in_seconds"):
        client.files.upload(file=("a.pdf", text_pdf([LINE]), "application/pdf"), expires_in_seconds=10)


def test_a_message_with_a_file_id_works_and_bills_like_its_base64_form(client, stub):
    pdf = text_pdf([LINE, "It boils quickly."])
    uploaded = client.files.upload(file=("review.pdf", pdf, "application/pdf"))
    by_file = client.messages.create(**vote(file_block(uploaded.id)))
    by_bytes = client.messages.create(**vote(pdf_block(pdf)))
    assert by_file.usage.input_tokens == by_bytes.usage.input_tokens > 2 * 1500
    assert by_file.content[0].text == by_bytes.content[0].text
    assert by_file.content[0].text.endswith("Answer: positive")
    picture = png((800, 600), "Terrible, broken and awful.")
    image = client.beta.files.upload(file=("photo.png", picture, "image/png"), betas=BETA)
    by_image_file = client.messages.create(**vote(file_block(image.id, "image")))
    assert by_image_file.usage.input_tokens == client.messages.create(**vote(image_block(picture))).usage.input_tokens
    assert by_image_file.content[0].text.endswith("Answer: negative")
    text = client.files.upload(file=("notes.txt", b"Terrible service and a broken kettle.", "text/plain"))
    assert client.messages.create(**vote(file_block(text.id))).content[0].text.endswith("Answer: negative")
    assert [e["pdf_pages"] for e in stub.requests(bodies=False)[:2]] == [2, 2]


def test_the_cache_entry_of_a_pdf_is_the_same_by_file_id_and_by_base64(client):
    pdf = text_pdf([LINE] * 3)
    uploaded = client.files.upload(file=("review.pdf", pdf, "application/pdf"))
    written = client.messages.create(**vote(pdf_block(pdf, cache_control={"type": "ephemeral"}))).usage
    block = {**file_block(uploaded.id), "cache_control": {"type": "ephemeral"}}
    read = client.messages.create(**vote(block)).usage
    assert written.cache_creation_input_tokens > 0
    assert (read.cache_creation_input_tokens, read.cache_read_input_tokens) == (0, written.cache_creation_input_tokens)


def test_count_tokens_refuses_a_file_source_and_counts_base64(client):
    pdf = text_pdf([LINE])
    uploaded = client.files.upload(file=("review.pdf", pdf, "application/pdf"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model="claude-haiku-4-5", messages=vote(file_block(uploaded.id))["messages"])
    assert "only as base64" in error_of(caught.value)["message"]
    counted = client.messages.count_tokens(model="claude-haiku-4-5", system=vote()["system"],
                                           messages=vote(pdf_block(pdf))["messages"])
    assert counted.input_tokens == client.messages.create(**vote(file_block(uploaded.id))).usage.input_tokens


def test_a_deleted_or_unknown_or_mismatched_file_is_refused_in_a_message(client):
    uploaded = client.files.upload(file=("review.pdf", text_pdf([LINE]), "application/pdf"))
    picture = client.files.upload(file=("photo.png", png(), "image/png"))
    client.files.delete(uploaded.id)
    for file_id in (uploaded.id, "file_never_uploaded"):
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(**vote(file_block(file_id)))
        assert f"file not found: {file_id}" in error_of(caught.value)["message"]
    with pytest.raises(anthropic.BadRequestError, match="image/png"):
        client.messages.create(**vote(file_block(picture.id, "document")))


def test_a_batch_request_may_reference_a_file(client, stub):
    stub.batch_config(delay_ms=0)
    pdf = text_pdf([LINE])
    uploaded = client.files.upload(file=("review.pdf", pdf, "application/pdf"))
    created = client.messages.batches.create(requests=[  # type: ignore[list-item]
        {"custom_id": "by-file", "params": vote(file_block(uploaded.id))}])
    deadline = time.monotonic() + 30
    while client.messages.batches.retrieve(created.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (result,) = list(client.messages.batches.results(created.id))
    assert result.result.type == "succeeded"
    assert result.result.message.usage.input_tokens == client.messages.create(  # type: ignore[union-attr]
        **vote(pdf_block(pdf))).usage.input_tokens


def test_an_upload_over_500_mb_gets_413_from_its_content_length(stub):
    with socket.create_connection((stub.host, stub.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: stub\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     + f"Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)  # the body never comes: the answer must not wait for it
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
    assert stub.files()["uploads"] == 0


def test_a_multipart_body_is_parsed_by_the_stub_itself():
    body = (b"--b0\r\nContent-Disposition: form-data; name=\"expires_in_seconds\"\r\n\r\n3600\r\n"
            b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.pdf\"\r\n"
            b"Content-Type: application/pdf\r\n\r\n%PDF-1.7\r\n\r\nbinary\x00\xff\r\n--b0--\r\n")
    parts = parse_multipart("multipart/form-data; boundary=b0", body)
    assert parts["file"].filename == "a b.pdf" and parts["file"].content_type == "application/pdf"
    assert parts["file"].data == b"%PDF-1.7\r\n\r\nbinary\x00\xff"
    assert parts["expires_in_seconds"].data == b"3600"
    with pytest.raises(ValueError, match="multipart/form-data"):
        parse_multipart("application/json", body)


def test_an_upload_without_a_file_part_is_a_400(stub):
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=10)
    try:
        body = b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b--"
        conn.request("POST", "/v1/files", body=body, headers={"content-type": "multipart/form-data; boundary=b"})
        response = conn.getresponse()
        assert response.status == 400 and b"file: Field required" in response.read()
    finally:
        conn.close()
