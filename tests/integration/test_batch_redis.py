"""Batches through real Celery workers on Redis, stored in PostgreSQL, the real anthropic SDK
calling the stub server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from chorus.analysis.export import batch_summary, rows
from chorus.batch import batch_counts, find_batch, run_batch, wait_for_batch
from models import Document, Run, Session

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
GOOD = ["I love it. Excellent and wonderful.", "Terrible. It broke, a waste of money.",
        "It is okay, an average and ordinary kettle."]


def write_jsonl(path: Path, n_good: int, bad_lines: dict[int, str]) -> Path:
    lines, good = [], 0
    for i in range(n_good + len(bad_lines)):
        if i in bad_lines:
            lines.append(bad_lines[i])
        else:
            lines.append(json.dumps({"id": f"doc-{good:02d}", "text": GOOD[good % 3],
                                     "label": LABELS.split(",")[good % 3]}))
            good += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def requests_for(stub, run_ids: set[str]) -> list[dict]:
    return [r for r in stub.requests() if r["run"] in run_ids]


def test_a_jsonl_batch_with_two_bad_lines_finishes_28_of_30_and_a_second_run_sends_nothing_new(
        workers, stub, tmp_path):
    stub.reset()
    source = write_jsonl(tmp_path / "reviews.jsonl", 28, {
        7: '{"id": "broken", "text": "no closing brace"',  # malformed JSON
        19: json.dumps({"id": "blank", "text": "   \n\t "}),  # whitespace only
    })
    options = {"labels": LABELS, "voters": 3}

    first = run_batch(source, pattern="vote", options=options, name="reviews-30", max_in_flight=8)
    counts = wait_for_batch(first.batch_id, timeout=120)

    assert (first.read, first.sent, first.rejected) == (30, 28, 2)
    assert (counts.total, counts.succeeded, counts.failed) == (30, 28, 2)
    exported = {r["id"]: r for r in rows(first.batch_id)}
    assert exported["line-8"]["status"] == "failed"
    assert "line 8: malformed JSON" in exported["line-8"]["error"]
    assert exported["blank"]["error"] == "line 20: the document is only whitespace"
    assert all(exported[f"doc-{i:02d}"]["answer"] == LABELS.split(",")[i % 3] for i in range(28))
    with Session() as s:
        first_runs = set(s.scalars(select(Run.id).join(Document).where(Document.batch_id == first.batch_id)))
    calls_before = len(stub.requests())
    assert len(requests_for(stub, first_runs)) == 28 * 3

    second = run_batch(source, pattern="vote", options=options, name="reviews-30", max_in_flight=8)
    again = wait_for_batch(second.batch_id, timeout=60)

    assert second.batch_id == first.batch_id
    assert (second.skipped, second.sent, second.rejected) == (28, 0, 2)
    assert (again.succeeded, again.failed) == (28, 2)
    assert len(stub.requests()) == calls_before  # no new call for the 28
    summary = batch_summary("reviews-30")
    assert summary["counts"]["succeeded"] == 28
    assert {d["id"] for d in summary["not_succeeded"]} == {"line-8", "blank"}
    assert summary["cost_usd"] > 0


def test_a_rerun_retries_only_the_documents_that_failed(workers, stub, tmp_path):
    stub.reset()
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i in range(5):
        (folder / f"note{i}.txt").write_text(f"Note {i} says the meeting moved to Thursday. Bring the notes.\n")
    stub.set_rules([{"status": 400, "times": 2}])  # the first two calls fail for good (not retried)
    try:
        first = run_batch(folder, pattern="section", options={}, name="notes", max_in_flight=1)
        counts = wait_for_batch(first.batch_id, timeout=60)
    finally:
        stub.reset()
    assert (counts.succeeded, counts.failed) == (3, 2)
    with Session() as s:
        failed_docs = set(s.scalars(select(Document.external_id).where(Document.batch_id == first.batch_id,
                                                                        Document.status == "failed")))

    second = run_batch(folder, pattern="section", options={}, name="notes")
    final = wait_for_batch(second.batch_id, timeout=60)

    assert (second.skipped, second.sent) == (3, 2)
    assert (final.succeeded, final.failed) == (5, 0)
    retried = {r["run"] for r in stub.requests()}
    with Session() as s:
        retried_docs = set(s.scalars(select(Document.external_id).join(Run).where(Run.id.in_(retried))))
    assert retried_docs == failed_docs


def test_back_pressure_keeps_at_most_max_in_flight_runs_unfinished(workers, stub, tmp_path):
    stub.reset()
    source = write_jsonl(tmp_path / "small.jsonl", 12, {})
    sub = run_batch(source, pattern="vote", options={"labels": LABELS, "voters": 2}, name="pressure",
                    max_in_flight=3)
    wait_for_batch(sub.batch_id, timeout=60)
    with Session() as s:
        spans = s.execute(select(Run.submitted_at, Run.finished_at).join(Document)
                          .where(Document.batch_id == sub.batch_id)).all()
    sent = [(a, b) for a, b in spans if a is not None and b is not None]
    assert len(sent) == 12
    # When each run was sent, it and the runs sent before it that had not finished were at most 3.
    peak = max(sum(1 for a, b in sent if a <= t < b) for t, _ in sent)
    assert 1 <= peak <= 3
    assert batch_counts(find_batch("pressure").id).succeeded == 12


def test_the_retry_failed_job_reruns_the_failed_documents_from_their_stored_text(workers, stub, tmp_path):
    from chorus.schedule import Job, run_job

    stub.reset()
    folder = tmp_path / "letters"
    folder.mkdir()
    for i in range(4):
        (folder / f"letter{i}.md").write_text(f"Letter {i}: the invoice for the project is attached.\n")
    stub.set_rules([{"status": 400, "times": 1}])
    try:
        first = run_batch(folder, pattern="section", options={}, name="letters", max_in_flight=1)
        assert wait_for_batch(first.batch_id, timeout=60).failed == 1
    finally:
        stub.reset()
    for path in folder.iterdir():
        path.unlink()  # the retry job reads the stored text, not the source

    result = run_job(Job(name="nightly", kind="retry_failed", batch="letters", at="03:00"))
    counts = wait_for_batch(first.batch_id, timeout=60)

    assert (result["read"], result["sent"]) == (1, 1)
    assert (counts.succeeded, counts.failed) == (4, 0)
    assert len(stub.requests()) == 1
