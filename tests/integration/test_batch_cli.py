"""`chorus batch`, `chorus status BATCH` and `chorus export` as a user runs them (a subprocess),
against the session's workers, Redis, PostgreSQL and stub."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def chorus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from chorus.cli import app; app()", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_batch_status_and_export_from_the_command_line(workers, stub, tmp_path):
    source = tmp_path / "mixed.csv"
    source.write_text("id,text,label\na,I love it. Excellent.,positive\nb,   ,negative\nc,Awful. It broke.,negative\n")

    ran = chorus("batch", str(source), "--pattern", "vote", "--labels", "positive,negative", "--voters", "2",
                 "--name", "cli-mixed", "--json")
    status = chorus("status", "cli-mixed", "--json")
    exported = chorus("export", "cli-mixed", "--format", "csv")

    assert ran.returncode == 1, ran.stderr  # one document failed: exit 1, the others still ran
    summary = json.loads(ran.stdout)
    assert summary["counts"] == {"total": 3, "succeeded": 2, "partial": 0, "failed": 1, "running": 0,
                                 "pending": 0}
    assert summary["bad_documents"] == [{"id": "b", "reason": "row 3: the document is only whitespace"}]
    assert status.returncode == 0 and json.loads(status.stdout)["not_succeeded"][0]["id"] == "b"
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
