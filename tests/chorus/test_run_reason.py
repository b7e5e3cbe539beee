"""A run that did not succeed says why: `RunView.reason` (the run's error, then each failed call's reason)
and `raise_for_status()`, which raises RunFailed with it."""

from __future__ import annotations

import dataclasses

import pytest

from chorus import RunFailed
from chorus.runs import OutcomeView, RunView

KEY = "authentication failed (HTTP 401): check ANTHROPIC_API_KEY"


def outcome(slot: int, status: str, error: str | None = None, answer: str | None = None) -> OutcomeView:
    return OutcomeView(slot=slot, role="voter", model="claude-haiku-5-5", prompt_variant="direct", status=status,
                       answer=answer, error=error, attempts=1, input_tokens=0, output_tokens=0, cache_write_tokens=0,
                       cache_read_tokens=0, usage_estimated=False, queued_at=None, started_at=None, finished_at=None,
                       latency_s=None, hostname=None, task_id=None)


def run(status: str, error: str | None, outcomes: list[OutcomeView], pattern: str = "vote") -> RunView:
    return RunView(id="r" * 32, pattern=pattern, status=status, provider="anthropic", document_id="d",
                   external_id="doc", gold_label=None, answer=None, confidence=None, low_agreement=None, error=error,
                   result=None, config={}, created_at=None, submitted_at=None, finished_at=None, outcomes=outcomes)


def test_a_failed_vote_says_why_each_voter_failed_not_only_that_none_answered():
    failed = run("failed", "no voter gave a valid answer",
                 [outcome(0, "failed", KEY), outcome(1, "failed", KEY), outcome(2, "failed", "the reply was cut")])

    assert failed.answer is None
    assert failed.reason == (f"no voter gave a valid answer; voters 0, 1 failed: {KEY}; "
                             "voter 2 failed: the reply was cut")
    assert failed.to_json()["reason"] == failed.reason
    with pytest.raises(RunFailed) as raised:
        failed.raise_for_status()
    assert str(raised.value) == f"run {failed.id} ended failed: {failed.reason}" and raised.value.run is failed


def test_a_partial_section_run_names_its_failed_calls_and_raises_too():
    partial = run("partial", "section 2 missing", [outcome(0, "succeeded", answer="x"),
                                                   outcome(1, "failed", "HTTP 529 overloaded; gave up after 4")],
                  pattern="section")
    assert partial.reason == "section 2 missing; call 1 failed: HTTP 529 overloaded; gave up after 4"
    with pytest.raises(RunFailed):
        partial.raise_for_status()


def test_a_succeeded_run_has_no_reason_and_raise_for_status_returns_it():
    done = dataclasses.replace(run("succeeded", None, [outcome(0, "succeeded", answer="a")]), answer="a")
    assert done.reason is None and done.to_json()["reason"] is None
    assert done.raise_for_status() is done


def test_a_run_still_open_has_no_reason_yet_and_raises_saying_so():
    open_run = run("running", None, [outcome(0, "pending")])
    assert open_run.reason is None
    with pytest.raises(RunFailed, match="is still running"):
        open_run.raise_for_status()


def test_a_failed_run_with_nothing_recorded_still_says_something():
    assert run("failed", None, []).reason == "the run ended failed with no reason recorded"
