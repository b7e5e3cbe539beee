"""`chorus batch`, `chorus status BATCH` and `chorus export` as a user runs them (a subprocess),
against the session's workers, Redis, PostgreSQL and stub."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.clirunner import session_chorus as chorus
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_batch_status_and_export_from_the_command_line(workers, stub, tmp_path):
    source = tmp_path / "mixed.csv"
    source.write_text("id,text,label\na,I love it. Excellent.,positive\nb,   ,negative\nc,Awful. It broke.,negative\n")

    ran = chorus("batch", str(source), "--pattern", "vote", "--labels", "positive,negative", "--voters", "2",
                 "--name", "cli-mixed", "--json")
    status = chorus("status", "cli-mixed", "--json")
    exported = chorus("export", "cli-mixed", "--format", "csv")
    to_file = chorus("export", "cli-mixed", "--format", "jsonl", "-o", str(tmp_path / "out.jsonl"), "--json")
    no_file = chorus("export", "cli-mixed", "--json")

    assert ran.returncode == 1, ran.stderr  # one document failed: exit 1, the others still ran
    summary = json.loads(ran.stdout)
    assert summary["counts"] == {"total": 3, "succeeded": 2, "partial": 0, "failed": 1, "cancelled": 0,
                                 "running": 0, "pending": 0}
    assert summary["bad_documents"] == [{"id": "b", "reason": "row 3: the document is only whitespace"}]
    assert status.returncode == 0 and json.loads(status.stdout)["not_succeeded"][0]["id"] == "b"
    assert json.loads(to_file.stdout) == {"documents": 3, "output": str(tmp_path / "out.jsonl"), "format": "jsonl"}
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    assert no_file.returncode == 2 and "give -o FILE" in " ".join(no_file.stderr.split())
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["id"], r["status"], r["answer"]) for r in rows] == [
        ("a", "succeeded", "positive"), ("b", "failed", ""), ("c", "succeeded", "negative")]
    assert float(rows[0]["cost_usd"]) > 0


def test_a_whole_input_error_exits_2_with_a_fix_and_writes_nothing(workers, tmp_path):
    missing = chorus("batch", str(tmp_path / "nope.jsonl"), "--pattern", "vote", "--labels", "a,b")
    unknown = chorus("batch", str(tmp_path), "--pattern", "stack")

    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert unknown.returncode == 2 and "use --pattern vote or --pattern section" in unknown.stderr
    assert chorus("status", "nope-" + "0" * 8).returncode == 2


def test_a_batch_runs_a_task_file_and_its_name_refuses_another_task_unless_a_new_version_is_asked_for(
        workers, stub, tmp_path):
    source = tmp_path / "tickets.jsonl"
    source.write_text(json.dumps({"id": "t1", "text": "We are locked out and cannot work at all since the update.",
                                  "label": "urgent"}) + "\n")
    task = ROOT / "examples" / "ticket-urgency.toml"
    changed = tmp_path / "urgency-v2.toml"
    changed.write_text(task.read_text().replace("Look for money, data loss or an outage",
                                                "Look for money, lost data or a service outage"))

    first = chorus("batch", str(source), "--task", str(task), "--name", "cli-tickets", "--json")
    refused = chorus("batch", str(source), "--task", str(changed), "--name", "cli-tickets", "--json")
    second = chorus("batch", str(source), "--task", str(changed), "--name", "cli-tickets", "--new-version", "--json")
    again = chorus("batch", str(source), "--task", str(changed), "--name", "cli-tickets", "--new-version", "--json")
    status = chorus("status", "cli-tickets.v2", "--json")

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["succeeded"] == 1
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.split())
    assert "task 'ticket-urgency' (hash" in message and "--new-version" in message and "cli-tickets.v2" in message
    assert second.returncode == 0, second.stderr
    made = json.loads(second.stdout)
    assert made["name"] == "cli-tickets.v2" and made["sent"] == 1
    resumed = json.loads(again.stdout)  # the same task again: the v2 batch resumes, nothing new is sent
    assert resumed["name"] == "cli-tickets.v2" and resumed["batch_id"] == made["batch_id"] and resumed["sent"] == 0
    assert status.returncode == 0, status.stderr


def test_a_batch_exits_with_the_worst_status_of_its_documents(workers, stub, tmp_path):
    source = tmp_path / "two.jsonl"
    source.write_text("".join(json.dumps({"id": f"p{i}", "text": "I love it, excellent."}) + "\n" for i in range(2)))
    stub.reset()
    stub.set_rules([{"slot": "1", "status": 400}])  # every second voter is refused: 1 of 2 answers, below quorum
    try:
        partial = chorus("batch", str(source), "--pattern", "vote", "--labels", "positive,negative", "--voters", "2",
                         "--name", "cli-exit-partial", "--json")
    finally:
        stub.set_rules([])
    assert partial.returncode == 3, partial.stderr  # partial, the same code a single partial vote exits with
    assert json.loads(partial.stdout)["counts"]["partial"] == 2


def test_a_dry_run_prints_what_would_be_sent_and_its_cost_and_writes_nothing(workers, stub, tmp_path):
    source = tmp_path / "dry.jsonl"
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": "I love it. " * (i + 1)}) + "\n" for i in range(4)))
    before = len(stub.requests())
    dry = chorus("batch", str(source), "--labels", "positive,negative", "--voters", "3", "--name", "cli-dry",
                 "--dry-run", "--json")
    status = chorus("status", "cli-dry", "--json")

    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["dry_run"] is True and preview["documents"] == 4 and preview["to_send"] == 4
    assert preview["estimated_cost"]["total_usd"] > 0 and preview["estimated_cost"]["estimated"] is True
    assert len(stub.requests()) == before  # nothing was called
    assert status.returncode == 2 and "no run or batch 'cli-dry'" in status.stderr  # no batch row was written
