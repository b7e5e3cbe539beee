"""Documents in a plan: the model's page limit, the Files API decision, page-range sections, what task check
shows of a document. Real files from tests/docfiles.py."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from chorus.documents import read_document
from chorus.native import as_input, needs_upload
from chorus.section import plan_section
from chorus.taskfile import describe_task
from chorus.vote import plan_vote
from settings import Settings
from tests import docfiles
from workflows.calls import Attachment
from workflows.errors import ConfigError
from workflows.taskfile import labels_task

OFFLINE = Settings(provider="offline")
CLAUDE = Settings(provider="anthropic", anthropic_api_key=SecretStr("k"), anthropic_base_url="http://127.0.0.1:9")


def pdf(pages: int, name: str = "doc.pdf") -> Attachment:
    document = as_input(read_document(docfiles.text_pdf(pages), name))
    assert isinstance(document, Attachment)
    return document


def test_a_pdf_over_the_models_page_limit_is_refused_for_a_vote_naming_the_limit_and_the_fix():
    long = pdf(101, "long.pdf")
    with pytest.raises(ConfigError, match=r"long.pdf has 101 pages and claude-haiku-4-5 reads at most 100 .*"
                                          r"chorus section"):
        plan_vote(long, "a,b", voters=2, models=["claude-haiku-4-5"], settings=OFFLINE)
    assert plan_vote(long, "a,b", voters=2, models=["claude-haiku-5-5"], settings=OFFLINE).native is long


def test_a_pdf_is_sectioned_by_pages_within_the_limit_and_a_text_cannot_be():
    plan = plan_section(pdf(250), settings=OFFLINE, model="claude-haiku-4-5", pages_per_section=500)
    spans = [(s.start, s.end) for s in plan.sections]
    assert spans == [(1, 84), (85, 168), (169, 250)]  # at most the model's 100 pages, balanced
    assert [p.pages for p in plan.page_parts] == [84, 84, 82]
    assert plan.config()["page_sections"][1]["first"] == 85
    # By default at most 50 pages a section (for speed), on a 1M-context model too.
    assert [(s.start, s.end) for s in plan_section(pdf(120), settings=OFFLINE, model="claude-sonnet-5-5").sections] \
        == [(1, 40), (41, 80), (81, 120)]
    assert [(s.start, s.end) for s in plan_section(pdf(30), settings=OFFLINE, pages_per_section=10).sections] \
        == [(1, 10), (11, 20), (21, 30)]
    with pytest.raises(ConfigError, match="needs a PDF"):
        plan_section("Some text.\n\nMore text.", how="pages", settings=OFFLINE)
    with pytest.raises(ConfigError, match="split by pages"):
        plan_section(pdf(3), how="headings", settings=OFFLINE)


def test_an_image_is_one_section_and_offline_a_scan_or_picture_is_refused_with_the_reason():
    picture = as_input(read_document(docfiles.png("A chart"), "chart.png"))
    assert isinstance(picture, Attachment)
    assert len(plan_section(picture, settings=CLAUDE).sections) == 1
    with pytest.raises(ConfigError, match="chart.png: no text layer"):
        plan_vote(picture, "a,b", voters=2, settings=OFFLINE)
    scan = as_input(read_document(docfiles.scanned_pdf(["A scanned page"]), "scan.pdf"))
    with pytest.raises(ConfigError, match="scan.pdf: no text layer: a PDF with no text layer"):
        plan_section(scan, settings=OFFLINE)


@pytest.mark.parametrize(("size", "mode", "provider", "expected"), [
    (1_000_000, "auto", CLAUDE, False),
    (25_000_000, "auto", CLAUDE, True),  # 33.3 MB once base64-encoded: over the 32 MB of a request
    (23_000_000, "auto", CLAUDE, False),
    (1_000, "always", CLAUDE, True),
    (25_000_000, "never", CLAUDE, False),
    (25_000_000, "auto", OFFLINE, False),  # the offline provider reads the text layer; nothing to upload
])
def test_bytes_go_through_the_files_api_only_when_they_would_not_fit_one_request(size, mode, provider, expected):
    settings = provider.model_copy(update={"files_api": mode})
    assert needs_upload(size, settings) is expected


def test_task_check_shows_what_a_pdf_turns_into():
    document = as_input(read_document(docfiles.text_pdf(2), "two.pdf"))
    described = describe_task(labels_task("a,b", voters=2), settings=CLAUDE, sample=document)
    assert described["sample_document"]["kind"] == "pdf" and described["sample_document"]["pages"] == 2
    assert described["sample_document"]["sent_as"] == "a document block (base64)"
    call = described["calls"][0]
    assert call["attachments"][0]["pages"] == 2 and call["attachments"][0]["tokens_at_most"] >= 3200
