"""Real documents end to end: a folder of PDFs, scans, images, Word, HTML and files chorus cannot read, as a
user runs it (embedded and offline), and against the stub with real workers (every supported kind read);
single-document commands refuse what they cannot read with exit 2. Every file is made by tests/docfiles.py."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest
from pypdf import PdfReader

from chorus import SectionTask, Step, cancel, load_document, load_settings, submit_section, submit_vote, wait_for_run
from chorus.costing import shared_prefixes, token_counter
from chorus.documents import read_document
from chorus.native import as_input
from tests import docfiles
from tests.clirunner import chorus as fresh_chorus
from tests.clirunner import session_chorus as chorus
from tests.conftest import ROOT, clean_env, user_store
from workflows.cost import TokenUsage, cost_of, total

pytestmark = pytest.mark.integration

POSITIVE = "I love it. Excellent quality, works great, highly recommend it."
NEGATIVE = "Awful. It broke after a day, terrible and useless, a waste of money."


def embedded(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A fresh user's chorus: embedded mode, offline provider (no key), in its own folder."""
    return fresh_chorus(*args, cwd=cwd, timeout=timeout)


def mixed_folder(folder: Path) -> dict[str, str]:
    """Every kind, good and bad; returns the label each readable document deserves."""
    folder.mkdir()
    docfiles.write(folder, "review.pdf", docfiles.text_pdf([POSITIVE]))
    docfiles.write(folder, "scan.pdf", docfiles.scanned_pdf([NEGATIVE]))
    docfiles.write(folder, "photo.png", docfiles.png(POSITIVE))
    docfiles.write(folder, "letter.docx", docfiles.docx([("h1", "My review"), ("p", NEGATIVE)]))
    docfiles.write(folder, "page.html", docfiles.html("Review", f"<main><h1>Review</h1><p>{POSITIVE}</p></main>",
                                                      script="document.write('negative negative')"))
    docfiles.write(folder, "note.txt", NEGATIVE.encode())
    docfiles.write(folder, "sheet.xlsx", b"PK\x03\x04" + bytes(range(200)))  # a zip that is no Word file
    docfiles.write(folder, "locked.pdf", docfiles.encrypted_pdf())
    docfiles.write(folder, "broken.pdf", docfiles.corrupt_pdf())
    return {"review.pdf": "positive", "scan.pdf": "negative", "photo.png": "positive", "letter.docx": "negative",
            "page.html": "positive", "note.txt": "negative"}


UNREADABLE = {"sheet.xlsx": "not a kind chorus reads", "locked.pdf": "encrypted", "broken.pdf": "cannot be read"}


def test_offline_a_folder_of_every_kind_is_read_whole_and_nothing_is_skipped_in_silence(tmp_path):
    expected = mixed_folder(tmp_path / "inbox")

    ran = embedded("batch", "inbox", "--labels", "positive,negative", "--voters", "3", "--json", cwd=tmp_path)

    assert ran.returncode == 1, ran.stderr  # some documents failed; the rest ran
    summary = json.loads(ran.stdout)
    exported = embedded("export", summary["batch_id"], "--format", "jsonl", cwd=tmp_path)
    assert summary["read"] == 9 and summary["counts"]["total"] == 9
    assert summary["kinds"] == {"pdf": 4, "image": 1, "docx": 1, "html": 1, "text": 1, "xlsx": 1}
    reasons = {d["id"]: d["reason"] for d in summary["bad_documents"]}
    for name, why in UNREADABLE.items():
        assert name in reasons and why in reasons[name] and reasons[name].startswith(name), reasons
    rows = {r["id"]: r for r in map(json.loads, exported.stdout.splitlines())}
    assert set(rows) == set(expected) | set(UNREADABLE)
    # Offline, every document with a text layer is answered, and rightly; a scan or a picture says why not.
    for name in ("review.pdf", "letter.docx", "page.html", "note.txt"):
        assert rows[name]["status"] == "succeeded" and rows[name]["answer"] == expected[name], rows[name]
    for name in ("scan.pdf", "photo.png"):
        assert rows[name]["status"] == "failed", rows[name]
        assert "no text layer" in json.dumps(rows[name]), rows[name]
    for name in UNREADABLE:
        assert rows[name]["status"] == "failed"


@pytest.mark.parametrize(("make", "why"), [
    (lambda: docfiles.encrypted_pdf(), "the PDF is encrypted"),
    (lambda: docfiles.corrupt_pdf(), "the PDF cannot be read"),
    (lambda: b"\x00\x01\x02binary" * 50, "not a kind chorus reads"),
])
def test_a_file_chorus_cannot_read_is_refused_by_name_with_exit_2_and_nothing_is_written(tmp_path, make, why):
    path = docfiles.write(tmp_path, "contract.pdf" if b"%PDF" in make()[:1024] else "blob.dat", make())

    voted = embedded("vote", path.name, "--labels", "a,b", cwd=tmp_path)
    sectioned = embedded("section", path.name, cwd=tmp_path)

    for proc in (voted, sectioned):
        assert proc.returncode == 2, proc.stderr
        assert path.name in proc.stderr and why in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (user_store(tmp_path) / "chorus.db").exists() or "inline" not in embedded(
        "runs", "--json", cwd=tmp_path).stdout


def test_offline_a_pdf_vote_and_a_word_section_run_from_the_command_line(tmp_path):
    docfiles.write(tmp_path, "review.pdf", docfiles.text_pdf([POSITIVE, "More words.\n" + POSITIVE]))
    docfiles.write(tmp_path, "notes.docx", docfiles.docx([("h1", "Install"), ("p", "Run the installer."),
                                                          ("h1", "Use"), ("p", "Open the app and sign in.")]))

    voted = embedded("vote", "review.pdf", "--labels", "positive,negative", "--voters", "3", "--json", cwd=tmp_path)
    sectioned = embedded("section", "notes.docx", "--json", cwd=tmp_path)

    assert voted.returncode == 0, voted.stderr
    assert json.loads(voted.stdout)["answer"] == "positive"
    assert sectioned.returncode == 0, sectioned.stderr
    run = json.loads(sectioned.stdout)
    assert [o["title"] for o in run["outcomes"] if o["role"] == "section"] == ["Install", "Use"]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    return text[start:text.index("\n## ", start + 3)]


def test_the_readmes_documents_snippets_run_as_shown(tmp_path):
    section = readme_section("Documents")
    python_block = re.search(r"```python\n(.*?)```", section, re.S)
    shell_block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert python_block and shell_block
    docfiles.write(tmp_path, "review.pdf", docfiles.text_pdf([POSITIVE]))
    docfiles.write(tmp_path, "contract.pdf", docfiles.text_pdf(["This non-disclosure agreement binds both parties."]))
    docfiles.write(tmp_path, "annual-report.pdf", docfiles.text_pdf(
        [f"Risk {i}: a supplier may fail to deliver in quarter {i}." for i in range(1, 4)]))
    mixed_folder(tmp_path / "inbox")
    shutil.copy(ROOT / "examples" / "ticket-urgency.toml", tmp_path / "triage.toml")

    ran = subprocess.run([sys.executable, "-c", python_block.group(1)], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=240)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["succeeded", "positive"]
    for line in shell_block.group(1).strip().splitlines():
        args = shlex.split(line.split("#")[0])
        assert args[0] == "chorus"
        proc = embedded(*args[1:], cwd=tmp_path)
        # A batch of the mixed folder has documents that fail (exit 1); nothing may crash or be refused.
        assert proc.returncode in (0, 1, 3), (line, proc.stderr)
        assert "Traceback" not in proc.stderr


# ----- against the stub, with real workers on Redis and PostgreSQL -----------------------------------
def calls_of(stub, run_id: str) -> list[dict]:
    return sorted((r for r in stub.requests() if r.get("run") == run_id and r["status"] == 200),
                  key=lambda r: r["seq"])


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_against_the_stub_every_supported_kind_is_read_and_answered(workers, stub, tmp_path):
    expected = mixed_folder(tmp_path / "inbox")

    ran = chorus("batch", str(tmp_path / "inbox"), "--labels", "positive,negative", "--voters", "3",
                 "--name", "every-kind", "--json")
    exported = chorus("export", "every-kind", "--format", "jsonl")

    assert ran.returncode == 1, ran.stderr  # the three unreadable files fail; every other kind is read
    rows = {r["id"]: r for r in map(json.loads, exported.stdout.splitlines())}
    for name, label in expected.items():
        assert rows[name]["status"] == "succeeded" and rows[name]["answer"] == label, rows[name]
    assert {name for name, row in rows.items() if row["status"] == "failed"} == set(UNREADABLE)


def test_a_pdf_vote_sends_the_pdf_to_every_voter_and_pays_for_it_once(workers, stub, tmp_path):
    stub.reset()
    pdf = docfiles.text_pdf([POSITIVE, "Second page. " + POSITIVE, "Third page. " + POSITIVE])
    document = load_document(docfiles.write(tmp_path, "review.pdf", pdf))
    voters = 5

    run = wait_for_run(submit_vote(document, labels="positive,negative", voters=voters,
                                   models=["claude-haiku-5-5"]), timeout=120)

    assert run.status == "succeeded" and run.answer == "positive", run.error
    calls = calls_of(stub, run.id)
    assert len(calls) == voters
    for call in calls:
        block = call["body"]["messages"][0]["content"][0]
        assert block["type"] == "document" and base64.b64decode(block["source"]["data"]) == pdf
        assert block["cache_control"] == {"type": "ephemeral"}
    # The shared prefix (system + the document), as the stub counts it: independent of chorus's estimate.
    first = calls[0]["body"]
    client = anthropic.Anthropic(api_key="test-key", base_url=stub.base_url, max_retries=0)
    document_block = {k: v for k, v in first["messages"][0]["content"][0].items() if k != "cache_control"}
    message: Any = {"role": "user", "content": [document_block]}
    prefix = client.messages.count_tokens(model=first["model"], system=first["system"],
                                          messages=[message]).input_tokens
    writes = [c for c in calls if c["cache_write_tokens"] > 0]
    assert len(writes) == 1 and sum(c["cache_read_tokens"] > 0 for c in calls) == voters - 1
    actual = total(cost_of(c["body"]["model"], TokenUsage(c["input_tokens"], c["output_tokens"],
                                                          c["cache_write_tokens"], c["cache_read_tokens"]))
                   for c in calls)
    minimum = total([cost_of("claude-haiku-5-5", TokenUsage(0, 0, prefix, 0)),
                     *(cost_of("claude-haiku-5-5", TokenUsage(0, 0, 0, prefix)) for _ in range(voters - 1)),
                     *(cost_of("claude-haiku-5-5", TokenUsage(
                         c["input_tokens"] + c["cache_write_tokens"] + c["cache_read_tokens"] - prefix,
                         c["output_tokens"])) for c in calls)])
    assert actual.total_usd <= 1.05 * minimum.total_usd, (actual, minimum)
    assert run.outcomes and sum(o.cache_read_tokens for o in run.outcomes) == (voters - 1) * writes[0][
        "cache_write_tokens"]


PAGES_SCHEMA = {"type": "object", "required": ["summary"], "additionalProperties": False,
                "properties": {"summary": {"type": "string"}}}


def test_a_pdf_longer_than_the_page_limit_is_sectioned_into_pdfs_that_cover_every_page(workers, stub):
    stub.reset()
    pages = 130  # claude-haiku-4-5 reads at most 100 PDF pages a request (a 200K context window)
    pdf = docfiles.text_pdf(pages)
    task = SectionTask(name="summary", map=Step("Summarize these pages.", model="claude-haiku-4-5",
                                                output_schema=PAGES_SCHEMA),
                       reduce=Step("Combine the summaries into one.", model="claude-haiku-4-5"))
    document = as_input(read_document(pdf, "long.pdf"))

    run = wait_for_run(submit_section(document, task=task, pages_per_section=500), timeout=180)

    assert run.status == "succeeded", [o.error for o in run.outcomes]
    assert run.result is not None
    jsonschema.validate(json.loads(run.result["synthesis"]), PAGES_SCHEMA)
    calls = [c for c in calls_of(stub, run.id) if c["body"]["messages"][0]["content"][0]["type"] == "document"]
    assert len(calls) == 2  # the two map calls (at most 100 pages each); then one synthesis over their replies
    ranges = []
    for call in calls:  # in the order the stub answered them: the two map calls run at once
        block = call["body"]["messages"][0]["content"][0]
        section = PdfReader(io.BytesIO(base64.b64decode(block["source"]["data"])))
        assert len(section.pages) <= 100
        ranges.append([int(p.extract_text().split("Page ", 1)[1].split(" of", 1)[0]) for p in section.pages])
    # Each section is its pages in order, and together they cover every page once.
    assert [page for pages_of in sorted(ranges) for page in pages_of] == list(range(1, pages + 1))
    assert [o.title for o in run.outcomes if o.role == "section"] == ["pages 1-65", "pages 66-130"]


@pytest.mark.slow
def test_a_pdf_too_big_for_one_request_is_uploaded_once_and_deleted_when_the_run_ends(workers, stub, tmp_path):
    stub.reset()
    pdf = docfiles.big_pdf(34 * 1024 * 1024)  # over the 32 MB of a request, even before base64
    document = load_document(docfiles.write(tmp_path, "scan-archive.pdf", pdf))

    run = wait_for_run(submit_vote(document, labels="positive,negative", voters=3, models=["claude-haiku-5-5"]),
                       timeout=180)

    calls = calls_of(stub, run.id)
    assert len(calls) == 3, run.error
    file_ids = {c["body"]["messages"][0]["content"][0]["source"].get("file_id") for c in calls}
    assert len(file_ids) == 1 and None not in file_ids
    wait_until(lambda: stub.files()["deletes"] == 1)
    files = stub.files()
    assert files["uploads"] == 1 and files["live"] == 0
    assert [f["id"] for f in files["files"]] == list(file_ids)


def test_a_cancelled_runs_upload_is_deleted(workers, stub, tmp_path):
    stub.reset()
    stub.set_latency(3000)
    try:
        document = load_document(docfiles.write(tmp_path, "review.pdf", docfiles.text_pdf([POSITIVE])))
        uploading = load_settings(files_api="always")
        run_id = submit_vote(document, labels="positive,negative", voters=3, models=["claude-haiku-5-5"],
                             settings=uploading)
        assert stub.files()["uploads"] == 1 and stub.files()["live"] == 1
        cancel(run_id, settings=uploading)
        assert stub.files()["deletes"] == 1 and stub.files()["live"] == 0
    finally:
        stub.set_latency(0)
    run = wait_for_run(run_id, timeout=60)
    assert run.status in ("cancelled", "succeeded", "partial", "failed")


def test_jsonl_and_csv_rows_may_name_a_file_and_a_folder_is_read_recursively_on_request(tmp_path):
    files = tmp_path / "files"
    (files / "2026" / "12").mkdir(parents=True)
    (files / ".git").mkdir()
    docfiles.write(files, "top.pdf", docfiles.text_pdf([POSITIVE]))
    docfiles.write(files / "2026" / "12", "deep.docx", docfiles.docx([("p", NEGATIVE)]))
    docfiles.write(files / ".git", "HEAD", b"ref: refs/heads/main\n")
    docfiles.write(files, ".DS_Store", b"\x00\x00\x00\x01Bud1")
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"id": "p", "path": "files/top.pdf", "label": "positive"}) + "\n"
        + json.dumps({"id": "d", "path": "files/2026/12/deep.docx"}) + "\n"
        + json.dumps({"id": "m", "path": "files/missing.pdf"}) + "\n")
    (tmp_path / "rows.csv").write_text("id,path\np,files/top.pdf\nd,files/2026/12/deep.docx\n")

    flat = embedded("batch", "files", "--labels", "positive,negative", "--voters", "3", "--dry-run", "--json",
                    cwd=tmp_path)
    deep = embedded("batch", "files", "--recursive", "--labels", "positive,negative", "--voters", "3", "--json",
                    cwd=tmp_path)
    rows = embedded("batch", "rows.jsonl", "--labels", "positive,negative", "--voters", "3", "--json", cwd=tmp_path)
    table = embedded("batch", "rows.csv", "--labels", "positive,negative", "--voters", "3", "--json", cwd=tmp_path)

    assert json.loads(flat.stdout)["documents"] == 1  # top.pdf; the subfolder waits for --recursive
    summary = json.loads(deep.stdout)
    assert deep.returncode == 0, deep.stderr
    assert summary["kinds"] == {"pdf": 1, "docx": 1} and summary["left_out"] == 2
    assert "left out 2 file(s)" in deep.stderr
    assert rows.returncode == 1  # the missing file fails with its reason; the others ran
    by_id = {d["id"]: d["reason"] for d in json.loads(rows.stdout)["bad_documents"]}
    assert list(by_id) == ["m"] and "no such file" in by_id["m"]
    assert json.loads(rows.stdout)["counts"]["succeeded"] == 2
    assert table.returncode == 0, table.stderr
    assert json.loads(table.stdout)["kinds"] == {"pdf": 1, "docx": 1}


def test_the_minimum_of_a_run_that_uploaded_its_pdf_counts_the_pdf_from_its_bytes(workers, stub, tmp_path):
    stub.reset()
    uploading = load_settings(files_api="always")
    document = load_document(docfiles.write(tmp_path, "review.pdf", docfiles.text_pdf([POSITIVE, POSITIVE])))
    run = wait_for_run(submit_vote(document, labels="positive,negative", voters=3, models=["claude-haiku-5-5"],
                                   settings=uploading), timeout=120, settings=uploading)
    assert run.status == "succeeded" and run.config["files"], run.error

    prefixes = shared_prefixes(run, run.config, "\f".join([POSITIVE, POSITIVE]), token_counter(uploading))

    # count_tokens takes a document only as base64: the prefix is counted from the stored bytes, by the stub.
    tokens, estimated = prefixes["claude-haiku-5-5"]
    assert not estimated and tokens > 2 * 1500  # two page images and their text
