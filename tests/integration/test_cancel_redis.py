"""Cancel and budgets on Redis + PostgreSQL, real workers, the real SDK calling the stub."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import chorus
from chorus.batch import BatchSpec, Submission, Submitter, batch_counts, open_batch, run_batch, wait_for_batch
from chorus.inputs import read_records
from models import OutcomeStatus, Pattern, RunStatus, Session, repo
from settings import get_settings
from workflows.errors import ConfigError

pytestmark = pytest.mark.integration

LABELS = "positive,negative"


def write_docs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc-{i:03d}", "text": f"Review {i}: I love it, excellent."}) + "\n"
                            for i in range(n)))
    return path


def runs_of(batch_id: str) -> list:
    with Session() as s:
        return repo.runs_of_batch(s, batch_id)


def wait_all_terminal(batch_id: str, timeout: float = 30) -> list:
    """The batch's runs once every run AND every slot is terminal: a cancelled run ends at once, while the
    calls it had in flight finish and are recorded a moment later (what the test checks)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = runs_of(batch_id)
        settled = all(r.status.terminal and all(o.status.terminal for o in r.outcomes) for r in runs)
        if settled or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def test_cancelling_a_200_document_batch_while_it_runs_calls_no_unsent_slot_and_ends_every_run(
        workers, stub, tmp_path):
    stub.reset()
    stub.set_latency(300)
    source = write_docs(tmp_path / "two-hundred.jsonl", 200)
    result: dict[str, Submission] = {}
    try:
        sender = threading.Thread(target=lambda: result.setdefault("sub", run_batch(
            source, pattern="vote", options={"labels": LABELS, "voters": 3}, name="cancel-200", max_in_flight=16)))
        sender.start()
        deadline = time.monotonic() + 60
        while _finished("cancel-200") < 5:
            assert time.monotonic() < deadline, "the batch never got going"
            time.sleep(0.1)

        done = chorus.cancel("cancel-200", reason="enough for today")
        sender.join(timeout=30)
        assert not sender.is_alive(), "the submitter kept sending after the cancel"
        runs = wait_all_terminal(done.id)
    finally:
        stub.set_latency(0)

    sub = result["sub"]
    assert sub.stopped == "enough for today"
    assert all(r.status.terminal for r in runs), {r.status for r in runs}
    called = {(r["run"], r["slot"]) for r in stub.requests(bodies=False)}
    never_sent = [(r.id, str(o.slot)) for r in runs for o in r.outcomes if o.status is OutcomeStatus.CANCELLED]
    assert never_sent, "the cancel came too late to test anything"
    assert [key for key in never_sent if key in called] == []
    cancelled = [r for r in runs if r.status is RunStatus.CANCELLED]
    assert cancelled and all(r.error == "enough for today" for r in cancelled)
    counts = batch_counts(done.id)
    assert counts.pending == counts.running == 0
    assert counts.cancelled == 200 - counts.succeeded - counts.partial - counts.failed > 0
    # Every slot that was called is recorded: nothing in flight was dropped.
    recorded = {(r.id, str(o.slot)) for r in runs for o in r.outcomes if o.status is OutcomeStatus.SUCCEEDED}
    assert {key for key in called if key[0] in {r.id for r in runs}} <= recorded

    resumed = run_batch(source, pattern="vote", options={"labels": LABELS, "voters": 3}, name="cancel-200",
                        max_in_flight=64)
    final = wait_for_batch(resumed.batch_id, timeout=120)
    assert resumed.sent == counts.cancelled
    assert (final.succeeded, final.cancelled) == (200, 0)


def _finished(name: str) -> int:
    try:
        batch = chorus.find_batch(name)
    except chorus.NotFoundError:
        return 0
    return batch_counts(batch.id).succeeded


def test_a_budget_passed_mid_batch_stops_sending_and_the_rest_end_cancelled_for_the_budget(workers, stub, tmp_path):
    stub.reset()
    settings = get_settings()
    source = write_docs(tmp_path / "budget.jsonl", 60)
    spec = BatchSpec(Pattern.VOTE, {"labels": LABELS, "voters": 3})
    batch_id, created = open_batch(source, spec, "budget-60")
    # About what five documents cost on the stub: the budget passes after a handful of runs.
    per_document = 3 * (60 * 0.10 + 30 * 0.50) / 1e6
    submitter = Submitter(batch_id, spec, settings, max_in_flight=2, max_cost=5 * per_document)

    sub = submitter.run(enumerate(read_records(source, settings.max_document_bytes)),
                        Submission(batch_id, "budget-60", created))
    runs = wait_all_terminal(batch_id)

    assert sub.stopped is not None and sub.stopped.startswith("budget:")
    assert submitter.spent.total_usd > 5 * per_document
    assert 0 < sub.sent < 60
    counts = batch_counts(batch_id)
    assert counts.pending == counts.running == 0
    assert counts.succeeded == sub.sent
    assert counts.cancelled == 60 - sub.sent
    with Session() as s:
        docs = repo.documents_page(s, batch_id, after_position=-2, after_id="", limit=100)
    assert all((d.error or "").startswith("budget:") for d in docs if d.status is RunStatus.CANCELLED)
    called_runs = {r["run"] for r in stub.requests(bodies=False)}
    assert called_runs <= {r.id for r in runs if r.status is RunStatus.SUCCEEDED}


def test_a_budget_below_the_estimate_refuses_the_batch_before_anything_is_written(workers, tmp_path):
    source = write_docs(tmp_path / "refused.jsonl", 10)

    with pytest.raises(ConfigError) as refused:
        run_batch(source, pattern="vote", options={"labels": LABELS, "voters": 3}, name="refused-10",
                  max_cost=0.00001)

    message = str(refused.value)
    assert "above the budget of $0.0000" in message and "estimated at $0.00" in message
    with pytest.raises(chorus.NotFoundError):
        chorus.find_batch("refused-10")
