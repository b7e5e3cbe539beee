"""The batch lane end to end: real Celery worker and beat processes, Redis, PostgreSQL, and the stub's
Message Batches endpoints driven by the real anthropic SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chorus.batch import batch_counts, cancel, run_batch, wait_for_batch
from chorus.embedded import WorkerProcess
from chorus.runs import get_run
from models import OutcomeStatus, RunStatus, Session, ensure_schema, repo
from tests.conftest import DATA_DIR, PG_URL, ROOT
from workflows.cost import TokenUsage, cost_of

pytestmark = pytest.mark.integration
MODEL = "claude-haiku-4-5"
LANE_ENV = {"CHORUS_LANE_COLLECT_S": "0.5", "CHORUS_LANE_POLL_S": "0.5"}


class Lane:
    """One callbacks worker (it runs collect, poll and the tallies) and a beat, stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = dict(os.environ, **LANE_ENV)
        self.worker: WorkerProcess | None = None
        self.beat: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> WorkerProcess:
        self.worker = WorkerProcess(["callbacks"], log_dir=DATA_DIR, name="lane-callbacks", pool="prefork",
                                    concurrency=2, env=self.env)
        return self.worker.start().wait_ready()

    def kill_worker(self) -> None:
        assert self.worker is not None and self.worker.proc is not None
        os.killpg(self.worker.proc.pid, signal.SIGKILL)  # the worker and its pool children, no warm shutdown
        self.worker.proc.wait(10)
        self.worker.proc = None

    def start_beat(self) -> None:
        log = (self.folder / "beat.log").open("wb")
        self.beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
             "--schedule", str(self.folder / "beat-schedule")],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def stop(self) -> None:
        if self.beat is not None and self.beat.poll() is None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            try:
                self.beat.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.beat.pid, signal.SIGKILL)
                self.beat.wait(5)
        if self.worker is not None and self.worker.proc is not None:
            self.worker.stop(timeout=5)


@pytest.fixture
def lane(postgres, redis_db, stub, tmp_path) -> Iterator[Lane]:
    ensure_schema(PG_URL)
    stub.reset()
    cluster = Lane(tmp_path)
    try:
        cluster.start_worker()
        cluster.start_beat()
        yield cluster
    finally:
        cluster.stop()
        stub.reset()


def documents(path: Path, n: int) -> Path:
    texts = ["I love this kettle, excellent and quiet.", "Terrible. It broke after a day, awful.",
             "Great value, I recommend it warmly.", "Bad smell and poor build, a waste of money."]
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)]}) + "\n" for i in range(n)))
    return path


def submit(tmp_path: Path, name: str, n: int = 4) -> str:
    sub = run_batch(documents(tmp_path / f"{name}.jsonl", n), pattern="vote", name=name, lane="batch",
                    options={"labels": "positive,negative", "voters": 3, "models": [MODEL] * 3})
    assert sub.sent == n
    return sub.batch_id


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def runs_of(batch_id: str) -> list:
    with Session() as s:
        return repo.runs_of_batch(s, batch_id)


def lane_log(stub, run_ids: set[str]) -> list[dict]:
    return [e for e in stub.requests(bodies=False) if e.get("batch") and e.get("run") in run_ids]


def test_a_lane_batch_writes_every_outcome_once_resends_an_expired_request_once_at_half_price(lane, stub, tmp_path):
    stub.batch_config(delay_ms=200, rules=[{"slot": "1", "result": "expired", "times": 1}])
    batch_id = submit(tmp_path, "lane-once")
    counts = wait_for_batch(batch_id, timeout=60)
    assert (counts.total, counts.succeeded) == (4, 4)

    runs = runs_of(batch_id)
    run_ids = {r.id for r in runs}
    log = lane_log(stub, run_ids)
    per_slot = Counter((e["run"], int(e["slot"])) for e in log)
    assert sorted(per_slot) == sorted((r.id, o.slot) for r in runs for o in r.outcomes)
    assert set(per_slot.values()) == {1}, "a slot's call was processed more than once"

    expired = [(b["id"], cid) for b in stub.batches() for cid, kind in (b.get("results") or {}).items()
               if kind == "expired"]
    assert len(expired) == 1, stub.batches()
    forced = expired[0][1]
    sent = [b["id"] for b in stub.batches() if forced in b["custom_ids"]]
    assert len(sent) == 2, "the expired request was not sent again exactly once"
    run_id, slot = forced.rsplit("-", 1)
    outcome = next(o for r in runs if r.id == run_id for o in r.outcomes if o.slot == int(slot))
    assert (outcome.status, outcome.attempts, outcome.provider_batch) == (OutcomeStatus.SUCCEEDED, 2, sent[1])
    assert all(o.provider_batch is not None and o.status is OutcomeStatus.SUCCEEDED
               for r in runs for o in r.outcomes)

    # Costs: the stub's own usage of each call, priced by the registry at the synchronous price, halved.
    sync = sum(cost_of(e.get("model") or MODEL, TokenUsage(e["input_tokens"], e["output_tokens"],
                                                           e["cache_write_tokens"], e["cache_read_tokens"])).total_usd
               for e in log)
    assert all(e["cache_write_tokens"] == 0 for e in log)  # short prompts: no 1-hour write price involved
    reported = sum(get_run(r.id).to_json()["cost"]["total_usd"] for r in runs)
    assert sync > 0
    assert reported == pytest.approx(sync * 0.5, rel=1e-6)


def test_killing_the_worker_while_a_provider_batch_is_open_loses_nothing(lane, stub, tmp_path):
    stub.batch_config(delay_ms=3000)
    batch_id = submit(tmp_path, "lane-kill", n=3)
    with Session() as s:
        before = {b.id for b in repo.open_provider_batches(s)}
    # Killed once the provider batch is recorded (a kill between create and record is the documented
    # trade-off: its claims are released after CLAIM_HOLD_S and the requests are sent again).
    wait_until(lambda: all(o.provider_batch for r in runs_of(batch_id) for o in r.outcomes), 20,
               "the slots to name their provider batch")
    assert [b["processing_status"] for b in stub.batches()] == ["in_progress"]
    lane.kill_worker()
    assert batch_counts(batch_id).succeeded == 0
    lane.start_worker()
    counts = wait_for_batch(batch_id, timeout=60)
    assert (counts.total, counts.succeeded) == (3, 3)
    runs = runs_of(batch_id)
    per_slot = Counter((e["run"], int(e["slot"])) for e in lane_log(stub, {r.id for r in runs}))
    assert sorted(per_slot) == sorted((r.id, o.slot) for r in runs for o in r.outcomes)
    assert set(per_slot.values()) == {1}
    with Session() as s:
        assert not {b.id for b in repo.open_provider_batches(s)} - before


def batch_ids(stub) -> list[str]:
    return [b["id"] for b in stub.batches()]


def test_cancelling_a_lane_batch_cancels_its_provider_batch_and_its_runs(lane, stub, tmp_path):
    stub.batch_config(delay_ms=30_000)
    batch_id = submit(tmp_path, "lane-cancel", n=3)
    wait_until(lambda: bool(batch_ids(stub)), 20, "a provider batch")
    with Session() as s:
        wait_until(lambda: all(o.provider_batch for r in runs_of(batch_id) for o in r.outcomes), 20,
                   "the slots to name their provider batch")
    assert all(b["processing_status"] == "in_progress" for b in stub.batches()), stub.batches()
    done = cancel("lane-cancel")
    assert len(done.cancelled) == 3
    wait_until(lambda: all(b["processing_status"] in ("canceling", "ended") for b in stub.batches()), 10,
               "the provider batch to be cancelled")
    wait_until(lambda: all(b["processing_status"] == "ended" for b in stub.batches()), 20, "the batch to end")
    assert {kind for b in stub.batches() for kind in (b.get("results") or {}).values()} == {"canceled"}, \
        stub.batches()
    wait_until(lambda: all(o.status is OutcomeStatus.CANCELLED for r in runs_of(batch_id) for o in r.outcomes),
               20, "the poller to collect the canceled requests")
    runs = runs_of(batch_id)
    assert {r.status for r in runs} == {RunStatus.CANCELLED}
    assert lane_log(stub, {r.id for r in runs}) == []  # nothing was processed, nothing paid
    with Session() as s:
        assert all(b.id not in {pb for r in runs for pb in [o.provider_batch for o in r.outcomes]}
                   for b in repo.open_provider_batches(s))


def test_the_batch_lane_in_embedded_mode_is_refused_before_anything_is_stored(tmp_path):
    from tests.conftest import clean_env, user_store

    docs = documents(tmp_path / "docs.jsonl", 2)
    command = [sys.executable, "-m", "chorus.cli", "batch", str(docs), "--labels", "a,b", "--lane", "batch"]
    proc = subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "the batch lane needs the anthropic provider (CHORUS_PROVIDER=anthropic" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (user_store(tmp_path) / "chorus.db").exists() and not (tmp_path / ".chorus").exists()


def test_an_adaptive_lane_vote_sends_its_waves_as_successive_provider_batches(lane, stub, tmp_path):
    """5 voters, stop = decided, on the lane. Every run's slot 0 ends errored for good, so the first wave
    (slots 0-2) leaves 2 agreeing answers that the 2 voters left could still tie: a second wave of one
    voter goes in a later provider batch, decides the vote, and the last voter is never sent."""
    stub.batch_config(delay_ms=200, rules=[{"slot": "0", "result": "errored", "error": "invalid_request_error"}])
    sub = run_batch(documents(tmp_path / "adaptive.jsonl", 2), pattern="vote", name="lane-adaptive", lane="batch",
                    options={"labels": "positive,negative", "voters": 5, "models": [MODEL], "adaptive": True})
    counts = wait_for_batch(sub.batch_id, timeout=60)
    assert (counts.total, counts.succeeded) == (2, 2)
    runs = runs_of(sub.batch_id)
    log = lane_log(stub, {r.id for r in runs})
    for run in runs:
        statuses = {o.slot: o.status for o in run.outcomes}
        assert statuses == {0: OutcomeStatus.FAILED, 1: OutcomeStatus.SUCCEEDED, 2: OutcomeStatus.SUCCEEDED,
                            3: OutcomeStatus.SUCCEEDED, 4: OutcomeStatus.SKIPPED}, statuses
        assert sorted(int(e["slot"]) for e in log if e["run"] == run.id) == [0, 1, 2, 3]
        by_slot = {o.slot: o for o in run.outcomes}
        assert by_slot[3].provider_batch not in {by_slot[s].provider_batch for s in (0, 1, 2)}
        assert run.result["skipped"] == 1 and run.status is RunStatus.SUCCEEDED


def test_cache_aware_dispatch_in_the_lane_sends_followers_after_their_leader_and_they_read_its_1h_cache(
        lane, stub, tmp_path):
    """A long shared prefix (above Haiku 4.5's 4,096-token minimum): the leader goes in a first provider
    batch and writes the prefix with the 1-hour TTL; its followers go in a later one and read it."""
    stub.batch_config(delay_ms=200)
    long_text = ("I love this kettle. It is excellent, fast and quiet. The lid is a little stiff. " * 300).strip()
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"id": "long", "text": long_text}) + "\n")
    sub = run_batch(path, pattern="vote", name="lane-cache", lane="batch",
                    options={"labels": "positive,negative", "voters": 3, "models": [MODEL]})
    assert wait_for_batch(sub.batch_id, timeout=60).succeeded == 1
    (run,) = runs_of(sub.batch_id)
    assert run.config["dispatch"]["leaders"] == [0]
    by_slot = {o.slot: o for o in run.outcomes}
    assert by_slot[0].cache_write_tokens > 4096
    assert by_slot[1].provider_batch == by_slot[2].provider_batch != by_slot[0].provider_batch
    for slot in (1, 2):
        assert by_slot[slot].cache_read_tokens == by_slot[0].cache_write_tokens and by_slot[slot].cache_miss is False
    sent = [e for e in stub.requests() if e.get("batch") and e.get("run") == run.id and e["slot"] == "0"]
    marks = [b.get("cache_control") for b in sent[0]["body"]["messages"][0]["content"] if b.get("cache_control")]
    marks += [b.get("cache_control") for b in sent[0]["body"].get("system") or [] if isinstance(b, dict)
              and b.get("cache_control")]
    assert marks and all(m == {"type": "ephemeral", "ttl": "1h"} for m in marks)
    # Priced at the Batches API price with the 1-hour write (2x input) for the leader's write.
    expected = sum(cost_of(MODEL, TokenUsage(o.input_tokens, o.output_tokens, o.cache_write_tokens,
                                             o.cache_read_tokens), cache_ttl="1h", batch_api=True).total_usd
                   for o in run.outcomes)
    assert get_run(run.id).to_json()["cost"]["total_usd"] == pytest.approx(expected, rel=1e-9)


def test_pdfs_and_images_go_through_the_lane_as_document_and_image_blocks(lane, stub, tmp_path):
    from tests import docfiles

    folder = tmp_path / "scans"
    folder.mkdir()
    docfiles.write(folder, "good.pdf", docfiles.text_pdf(["Excellent, I love it, works great."]))
    docfiles.write(folder, "bad.pdf", docfiles.scanned_pdf(["Awful, it broke, terrible."]))
    docfiles.write(folder, "photo.png", docfiles.png("Excellent, I love it."))
    sub = run_batch(folder, pattern="vote", name="lane-docs", lane="batch",
                    options={"labels": "positive,negative", "voters": 2, "models": [MODEL] * 2})
    assert sub.sent == 3 and sub.kinds == {"pdf": 2, "image": 1}
    counts = wait_for_batch(sub.batch_id, timeout=60)
    assert (counts.total, counts.succeeded) == (3, 3)

    answers = {r.document.external_id: r.answer for r in runs_of(sub.batch_id)}
    assert answers == {"good.pdf": "positive", "bad.pdf": "negative", "photo.png": "positive"}
    run_ids = {r.id for r in runs_of(sub.batch_id)}
    blocks = [e["body"]["messages"][0]["content"][0]["type"] for e in stub.requests()
              if e.get("batch") and e.get("run") in run_ids]
    assert sorted(blocks) == ["document"] * 4 + ["image"] * 2


def estimates_of(spec, source: Path, settings) -> dict[str, float]:
    """Each document's upper-bound estimate at the Batches API price, as the submitter computes it."""
    from chorus.budget import estimate_plan
    from chorus.inputs import read_records

    return {r.key: estimate_plan(spec.plan(r.text, r.key, r.label, "estimate", settings), settings, count=False,
                                 lane="batch").total_usd
            for r in read_records(source, settings.max_document_bytes)}


def test_a_lane_budget_releases_runs_within_it_and_stops_sending_where_the_next_does_not_fit(lane, stub, tmp_path):
    """8 documents, a budget of 2.5 documents' estimates: the first provider batch carries the 2 runs whose
    estimates fit; each later run goes once finished runs' recorded cost (far below their estimate) leaves
    room; sending stops when the next estimate does not fit with nothing in flight."""
    from chorus.batch import BatchSpec, Submission, Submitter, open_batch
    from chorus.inputs import read_records
    from models import Pattern
    from settings import get_settings

    stub.batch_config(delay_ms=200)
    settings = get_settings()
    spec = BatchSpec(Pattern.VOTE, {"labels": "positive,negative", "voters": 2, "models": [MODEL] * 2})
    source = documents(tmp_path / "lane-budget.jsonl", 8)
    estimates = estimates_of(spec, source, settings)
    budget = 2.5 * max(estimates.values())
    assert sum(estimates.values()) > budget
    batch_id, created = open_batch(source, spec, "lane-budget", "batch")
    submitter = Submitter(batch_id, spec, settings, max_in_flight=None, max_cost=budget, lane="batch")
    sub = submitter.run(enumerate(read_records(source, settings.max_document_bytes)),
                        Submission(batch_id, "lane-budget", created))

    assert sub.stopped is not None and sub.stopped.startswith("budget:"), sub.stopped
    assert 2 < sub.sent < 8
    counts = wait_for_batch(batch_id, timeout=30)
    assert (counts.succeeded, counts.cancelled, counts.pending, counts.running) == (sub.sent, 8 - sub.sent, 0, 0)
    runs = runs_of(batch_id)
    sent = [r for r in runs if r.status is RunStatus.SUCCEEDED]
    cancelled = [r for r in runs if r.status is RunStatus.CANCELLED]
    assert all((r.error or "").startswith("budget:") for r in cancelled) and cancelled
    assert all(o.status is OutcomeStatus.CANCELLED for r in cancelled for o in r.outcomes)

    # The first provider batch is the first chunk: the runs whose estimates fit the budget together.
    doc_of = {r.id: r.document.external_id for r in runs}
    first = {cid.rsplit("-", 1)[0] for cid in stub.batches()[0]["custom_ids"]}
    assert len(first) == 2 and sum(estimates[doc_of[r]] for r in first) <= budget
    # Every run the stub saw is a sent run, each slot once; nothing of a cancelled run was called.
    per_slot = Counter((e["run"], int(e["slot"])) for e in lane_log(stub, {r.id for r in runs}))
    assert sorted(per_slot) == sorted((r.id, o.slot) for r in sent for o in r.outcomes)
    assert set(per_slot.values()) == {1}
    # The recorded spend stays within the budget, and the next document did not fit on top of it.
    spent = sum(get_run(r.id).to_json()["cost"]["total_usd"] for r in sent)
    assert 0 < spent <= budget
    next_doc = min((r for r in cancelled), key=lambda r: int(doc_of[r.id].split("-")[1]))
    assert spent + estimates[doc_of[next_doc.id]] > budget


def test_a_lane_budget_above_every_estimate_sends_everything_in_one_provider_batch(lane, stub, tmp_path):
    from chorus.batch import BatchSpec
    from models import Pattern
    from settings import get_settings

    stub.batch_config(delay_ms=200)
    options = {"labels": "positive,negative", "voters": 2, "models": [MODEL] * 2}
    source = documents(tmp_path / "lane-roomy.jsonl", 6)
    estimates = estimates_of(BatchSpec(Pattern.VOTE, options), source, get_settings())
    sub = run_batch(source, pattern="vote", name="lane-roomy", lane="batch", options=options,
                    max_cost=sum(estimates.values()) * 1.01)
    assert (sub.sent, sub.stopped) == (6, None)
    counts = wait_for_batch(sub.batch_id, timeout=30)
    assert (counts.total, counts.succeeded) == (6, 6)
    assert len(stub.batches()) == 1


def test_a_duplicate_answer_from_a_batch_recorded_late_adds_its_usage_to_the_slot_once(lane, stub, tmp_path):
    """A collector that records its provider batch only after its claims were released and sent again (a
    stall longer than CLAIM_HOLD_S): the late batch's answer for a slot already succeeded was paid, so
    the poller adds its usage to that slot, as one more attempt, and the run's cost shows it."""
    import dataclasses

    from models import in_session
    from models.tables import utcnow
    from settings import get_settings
    from tasks.lane import batch_provider, custom_id, duplicate_note
    from tasks.requests import build_request

    stub.batch_config(delay_ms=200)
    batch_id = submit(tmp_path, "lane-dup", n=1)
    assert wait_for_batch(batch_id, timeout=30).succeeded == 1
    (run,) = runs_of(batch_id)
    outcome = next(o for o in run.outcomes if o.slot == 0)
    before = get_run(run.id).to_json()["cost"]["total_usd"]
    claim = repo.Claim(run.id, 0, outcome.role, outcome.model, outcome.prompt_variant, outcome.temperature,
                       outcome.attempts, utcnow())
    config, text = in_session(lambda s: repo.run_inputs(s, run.id), write=False)
    request = dataclasses.replace(build_request(claim, config, text), cache_ttl="1h")
    late = batch_provider(get_settings()).create_batch([(custom_id(run.id, 0), request)])
    # Answered before it is recorded: a late batch still in progress carries no live slot, so the poller
    # cancels it at the provider (and nothing is paid).
    wait_until(lambda: any(b["id"] == late.id and b["processing_status"] == "ended" for b in stub.batches()), 20,
               "the late batch to be answered")
    in_session(lambda s: repo.record_provider_batch(s, batch_id=late.id, model=MODEL, status=late.status, slots=[],
                                                    marker="lane:stalled", now=utcnow()))
    wait_until(lambda: late.id not in {b.id for b in in_session(repo.open_provider_batches, write=False)}, 30,
               "the poller to collect the late batch")

    (call,) = [e for e in stub.requests(bodies=False) if e.get("batch") == late.id]
    with Session() as s:
        again = repo.outcomes_by_slot(s, run.id)[0]
    assert again.status is OutcomeStatus.SUCCEEDED and again.attempts == outcome.attempts + 1
    assert (again.input_tokens, again.output_tokens) == (outcome.input_tokens + call["input_tokens"],
                                                         outcome.output_tokens + call["output_tokens"])
    assert duplicate_note(late.id) in (again.error or "")
    extra = cost_of(MODEL, TokenUsage(call["input_tokens"], call["output_tokens"]), batch_api=True).total_usd
    assert get_run(run.id).to_json()["cost"]["total_usd"] == pytest.approx(before + extra, rel=1e-6)


class _KilledBetweenCreateAndRecord(BaseException):
    """Stands for a kill -9 of the collector right after the provider accepted its batch."""


def test_a_batch_whose_collector_died_before_recording_it_is_adopted_and_what_it_paid_is_recorded(
        postgres, redis_db, stub, tmp_path, monkeypatch):
    """A collector that stops between creating its provider batch and recording it: its claims are
    released and the slots sent again (one more call each), and the batch it created, answered and paid,
    is found by listing the key's batches around the claims' time: each slot then counts both calls, in
    attempts and in usage, and the run's cost is what the stub billed."""
    import dataclasses

    import tasks.lane
    from models import in_session
    from models.tables import utcnow
    from settings import get_settings
    from tasks.lane import batch_provider, custom_id, duplicate_note
    from tasks.requests import build_request

    ensure_schema(PG_URL)
    stub.reset()
    stub.batch_config(delay_ms=200)
    cluster = Lane(tmp_path)
    try:
        # Stored and released, with no collect asked for: a collector some other test left running (one was
        # seen in CI taking these slots within milliseconds) has no message to act on.
        monkeypatch.setattr(tasks.lane, "send_collect", lambda app: None)
        batch_id = submit(tmp_path, "lane-orphan", n=1)
        monkeypatch.undo()
        (run,) = runs_of(batch_id)
        # A collector, in this process, claims the run's slots (held for one second), creates their
        # provider batch, and dies right after the create (the seam of `tasks.lane._create`). Only this
        # run's slots: runs other tests left in the database are not this collector's business.
        marker = f"{repo.LANE_MARK}dead"
        claims = in_session(lambda s: repo.claim_lane_slots(s, [(run.id, o.slot) for o in run.outcomes],
                                                            marker=marker, now=utcnow(), hold_s=1.0))
        assert len(claims) == 3, [(r.status, r.error, [(o.slot, o.status, o.task_id) for o in r.outcomes])
                                  for r in runs_of(batch_id)]
        part = []
        for claim in claims:
            config, text = in_session(lambda s: repo.run_inputs(s, run.id), write=False)
            part.append((custom_id(run.id, claim.slot),
                         dataclasses.replace(build_request(claim, config, text), cache_ttl="1h")))

        def killed(*args, **kwargs):
            raise _KilledBetweenCreateAndRecord

        monkeypatch.setattr(tasks.lane.repo, "record_provider_batch", killed)
        with pytest.raises(_KilledBetweenCreateAndRecord):
            tasks.lane._create(batch_provider(get_settings()), MODEL, part, marker)
        monkeypatch.undo()
        (orphan,) = batch_ids(stub)
        with Session() as s:
            assert orphan not in {b.id for b in repo.open_provider_batches(s)}  # nobody knows it
        wait_until(lambda: all(b["processing_status"] == "ended" for b in stub.batches()), 20,
                   "the orphan batch to be answered")
        time.sleep(1.2)  # the dead collector's claims are now past their hold

        cluster.start_worker()
        cluster.start_beat()
        counts = wait_for_batch(batch_id, timeout=60)
        assert (counts.total, counts.succeeded) == (1, 1)
        wait_until(lambda: not any(b.id == orphan for b in in_session_open()), 30,
                   "the poller to collect the adopted batch")
        (run,) = runs_of(batch_id)
        log = lane_log(stub, {run.id})
    finally:
        cluster.stop()
        stub.reset()
    assert len(batch_ids_logged := {e["batch"] for e in log}) == 2 and orphan in batch_ids_logged
    by_slot: dict[int, list[dict]] = {}
    for entry in log:
        by_slot.setdefault(int(entry["slot"]), []).append(entry)
    assert sorted(by_slot) == [0, 1, 2]
    for outcome in run.outcomes:
        calls = by_slot[outcome.slot]
        # Every call the provider answered is one stored attempt, and its tokens are in the slot's usage.
        assert (outcome.status, outcome.attempts, len(calls)) == (OutcomeStatus.SUCCEEDED, 2, 2), calls
        assert (outcome.input_tokens, outcome.output_tokens) == (sum(e["input_tokens"] for e in calls),
                                                                 sum(e["output_tokens"] for e in calls))
        assert duplicate_note(orphan) in (outcome.error or "")
    billed = sum(cost_of(MODEL, TokenUsage(e["input_tokens"], e["output_tokens"]), batch_api=True).total_usd
                 for e in log)
    assert get_run(run.id).to_json()["cost"]["total_usd"] == pytest.approx(billed, rel=1e-6)


def in_session_open() -> list:
    with Session() as s:
        return repo.open_provider_batches(s)
