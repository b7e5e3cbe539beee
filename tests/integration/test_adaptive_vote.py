"""Adaptive voting through real workers on Redis and PostgreSQL, the real anthropic SDK against the
stub: which voters the provider actually hears from (the stub's log), and what the run records."""

from __future__ import annotations

import pytest

from chorus import submit_vote, wait_for_run

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
CLEAR = "The battery died after one day. Terrible, awful, broken, I want a refund."


def called_slots(stub, run_id: str) -> list[int]:
    return sorted(int(r["slot"]) for r in stub.requests(bodies=False) if r["run"] == run_id and r["status"] == 200)


def test_a_unanimous_first_wave_sends_no_more_voters_and_the_answer_is_the_full_panels(workers, stub):
    stub.reset()
    full = wait_for_run(submit_vote(CLEAR, LABELS, voters=5), timeout=60)
    early = wait_for_run(submit_vote(CLEAR, LABELS, voters=5, adaptive=True), timeout=60)
    assert called_slots(stub, full.id) == [0, 1, 2, 3, 4]
    assert called_slots(stub, early.id) == [0, 1, 2]  # 3 of 5 agree: the 2 left cannot change it
    assert (early.status, early.answer) == (full.status, full.answer) == ("succeeded", "negative")
    skipped = [o for o in early.outcomes if o.status == "skipped"]
    assert [o.slot for o in skipped] == [3, 4] and all(o.attempts == 0 and o.input_tokens == 0 for o in skipped)
    assert all(o.error and o.error.startswith("not asked:") for o in skipped)
    assert early.result is not None
    assert early.result["skipped"] == 2 and early.result["voters"] == 5 and early.result["quorum_met"]
    early_cost, full_cost = early.to_json()["cost"], full.to_json()["cost"]
    assert early_cost["total_usd"] < full_cost["total_usd"] and "calls_saved" not in full_cost
    assert early_cost["calls_saved"] == 2
    # Five identical short requests cost about the same: the two skipped are about 2/5 of the full vote.
    assert early_cost["saved_usd_estimate"] == pytest.approx(full_cost["total_usd"] * 2 / 5, rel=0.05)


def test_a_wave_that_leaves_the_vote_open_sends_the_next_voter_and_tallies_like_the_full_panel(workers, stub):
    """3 voters, first wave 2: slot 0 fails for good (a 400), so its one answer could still be outvoted
    by the last voter: the vote keeps going and asks slot 2."""
    stub.reset()
    stub.set_rules([{"slot": "0", "status": 400}])  # every run's slot 0, set before anything is sent
    try:
        run = wait_for_run(submit_vote(CLEAR, LABELS, voters=3, adaptive=True), timeout=60)
        full = wait_for_run(submit_vote(CLEAR, LABELS, voters=3), timeout=60)
    finally:
        stub.set_rules([])
    run_id = run.id
    asked = sorted(int(r["slot"]) for r in stub.requests(bodies=False) if r["run"] == run_id)
    assert asked == [0, 1, 2], "the third voter could change the result and must be asked"
    assert [o.status for o in run.outcomes] == ["failed", "succeeded", "succeeded"]
    assert (run.status, run.answer) == (full.status, full.answer)
    assert run.result is not None and run.result["skipped"] == 0


def test_a_split_first_wave_sends_more_voters(workers, stub):
    """A review that praises at first and condemns at the end splits voters that read different parts:
    the voters after the first wave are asked until the rest cannot change the winner, and the answer
    is the full panel's."""
    stub.reset()
    mixed = ("I love this phone, it is wonderful, excellent and fantastic, the best purchase I made. "
             "The screen is great. " * 3 + "But then it broke. Terrible, awful, broken, useless, refund, worst.")
    full = wait_for_run(submit_vote(mixed, LABELS, voters=5), timeout=60)
    early = wait_for_run(submit_vote(mixed, LABELS, voters=5, adaptive=True), timeout=60)
    first_three = [o.answer for o in full.outcomes[:3]]
    assert len(set(first_three)) > 1, f"the document no longer splits the first wave: {first_three}"
    assert len(called_slots(stub, early.id)) > 3
    assert (early.status, early.answer) == (full.status, full.answer)


def test_an_adaptive_batch_skips_decided_voters_in_every_document_and_matches_the_full_panel(workers, stub, tmp_path):
    import json

    from chorus.batch import find_batch, run_batch, wait_for_batch
    from chorus.runs import get_run
    from models import Run, Session

    docs = [CLEAR, "I love it. Excellent and wonderful, the best kettle.",
            "It is okay, an average and ordinary kettle."]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    stub.reset()
    answers = {}
    for adaptive in (False, True):
        run_batch(path, pattern="vote", options={"labels": LABELS, "voters": 5, "adaptive": adaptive},
                  name=f"adaptive-{adaptive}-{tmp_path.name}")
        batch = find_batch(f"adaptive-{adaptive}-{tmp_path.name}")
        wait_for_batch(batch.id, timeout=90)
        with Session() as s:
            run_ids = [r.id for r in s.query(Run).filter(Run.document.has(batch_id=batch.id))]
        runs = [get_run(r) for r in run_ids]
        answers[adaptive] = sorted((r.external_id, r.status, r.answer) for r in runs)
        calls = [r for r in stub.requests(bodies=False) if r["run"] in set(run_ids) and r["status"] == 200]
        if adaptive:
            assert len(calls) == 3 * len(docs), "each document's first three voters agree: the rest are not called"
            assert all(sum(o.status == "skipped" for o in r.outcomes) == 2 for r in runs)
        else:
            assert len(calls) == 5 * len(docs)
    assert answers[True] == answers[False]
