"""`chorus runs` and `chorus batches` (and the API under them) on the session's PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from chorus.batch import run_batch, wait_for_batch
from chorus.listing import list_batches, list_runs, parse_since
from tests.clirunner import session_chorus
from workflows.errors import ConfigError


def test_runs_of_a_batch_are_listed_newest_first_filtered_and_never_cut(workers, stub, tmp_path):
    source = tmp_path / "listing.jsonl"
    texts = ["I love it, excellent.", "Awful, it broke.", "A really long answer label test, terrible."]
    source.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    sub = run_batch(source, pattern="vote", options={"labels": "positive,negative", "voters": 2},
                    name="listing-batch")
    wait_for_batch(sub.batch_id, timeout=60)

    rows = list_runs(batch="listing-batch")
    assert sorted(r["external_id"] for r in rows) == ["d0", "d1", "d2"]
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    assert {r["answer"] for r in rows} == {"positive", "negative"}
    assert list_runs(batch="listing-batch", status="failed") == []
    assert len(list_runs(batch="listing-batch", limit=2)) == 2
    assert list_runs(batch="listing-batch", since="1d") and not list_runs(
        batch="listing-batch", since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    (batch,) = [b for b in list_batches(limit=1000) if b["name"] == "listing-batch"]
    assert batch["documents"] == 3 and batch["counts"] == {"succeeded": 3}

    shown = session_chorus("runs", "--batch", "listing-batch", columns=None)  # piped: no width to squeeze into
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout
    for r in rows:
        assert r["id"][:12] in shown.stdout and r["external_id"] in shown.stdout
    as_json = session_chorus("batches", "--json").json()
    assert any(b["name"] == "listing-batch" and b["documents"] == 3 for b in as_json)


@pytest.mark.parametrize(("options", "message"), [
    ({"status": "done"}, "unknown status 'done'; use one of: pending, running"),
    ({"since": "yesterday"}, "give an age (30m, 2h, 7d) or an ISO date/time"),
    ({"limit": 0}, "limit must be a whole number from 1"),
    ({"batch": "no-such-batch-anywhere"}, "no batch 'no-such-batch-anywhere'"),
])
def test_a_bad_filter_names_the_problem(postgres, options, message):
    with pytest.raises(Exception) as caught:
        list_runs(**options)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError) or type(caught.value).__name__ == "NotFoundError"


def test_since_reads_ages_and_iso_times():
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert parse_since("90m", now=now) == now - dt.timedelta(minutes=90)
    assert parse_since("2d", now=now) == now - dt.timedelta(days=2)
    assert parse_since("2026-12-01T08:00") == dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
