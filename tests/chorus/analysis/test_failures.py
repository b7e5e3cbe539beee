"""Why a run or a call failed, in every human view: `chorus report` (its lines and its HTML page) and
the run and section views, never a bare "-" where `--json` has the reason."""

from __future__ import annotations

import datetime as dt
from typing import Any

from chorus.analysis.failures import call_reasons, failure_reason, failures
from chorus.analysis.report import agreement_section, runs_table
from chorus.cli import render
from chorus.cli.base import out
from chorus.runs import OutcomeView, RunView

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
ABSTAINED = "abstained: the offline scorer could not decide"
CUT = "the reply was cut at max_tokens before the JSON was complete; raise max_output_tokens"


def outcome(slot: int, status: str = "succeeded", *, role: str = "voter", answer: str | None = None,
            error: str | None = None, variant: str | None = None, title: str | None = None,
            raw: str | None = None) -> OutcomeView:
    return OutcomeView(slot=slot, role=role, model="claude-haiku-5-5", prompt_variant=variant, status=status,
                       answer=answer, error=error, attempts=1, input_tokens=100, output_tokens=10,
                       cache_write_tokens=0, cache_read_tokens=0, usage_estimated=True, queued_at=T0,
                       started_at=T0, finished_at=T0 + dt.timedelta(seconds=1), latency_s=1.0, hostname=None,
                       task_id=None, raw_output=raw, title=title)


def run(external_id: str, status: str, outcomes: list[OutcomeView], *, answer: str | None = None,
        error: str | None = None, pattern: str = "vote", **extra: Any) -> RunView:
    return RunView(id=f"{external_id}-0123456789abcdef", pattern=pattern, status=status, provider="offline",
                   document_id="d", external_id=external_id, gold_label="urgent", answer=answer,
                   confidence=None if answer is None else 1.0, low_agreement=None, error=error,
                   result=extra.get("result"), config={"labels": ["urgent", "normal"]}, created_at=T0,
                   submitted_at=T0, finished_at=T0 + dt.timedelta(seconds=2), outcomes=outcomes)


def silent_vote(name: str) -> RunView:
    return run(name, "failed", [outcome(i, error=ABSTAINED, variant=v) for i, v in enumerate(("direct", "lead"))],
               error="no voter gave a valid answer")


def decided_vote(name: str) -> RunView:
    return run(name, "succeeded", [outcome(i, answer="urgent", variant=v) for i, v in enumerate(("direct", "lead"))],
               answer="urgent")


def test_a_failed_vote_says_why_with_every_voters_reason_told_once():
    reason = failure_reason(silent_vote("t1"))
    assert reason == f"no voter gave a valid answer; voter 0 (direct), voter 1 (lead): {ABSTAINED}"
    assert failure_reason(decided_vote("t2")) is None
    assert [f["id"] for f in failures([silent_vote("t1"), decided_vote("t2")])] == ["t1"]


def test_the_reports_runs_table_shows_the_reason_of_a_failed_row():
    # Before: a failed row showed "-" and the reason only in --json.
    page = runs_table([silent_vote("t1"), decided_vote("t2")])
    assert "why it failed" in page
    assert "no voter gave a valid answer; voter 0 (direct), voter 1 (lead): abstained: the offline scorer" in page


def test_runs_no_voter_answered_are_listed_not_summed_up_as_no_low_agreement():
    # Before: "low agreement ...: none" while these runs had no answer at all.
    page = agreement_section([silent_vote("t1"), silent_vote("t3"), decided_vote("t2")])
    assert "no answer at all (2 of 3 runs)" in page
    assert "t1" in page and "t3" in page and ABSTAINED.split(":")[0] in page
    assert "<p>none</p>" not in page


def test_the_section_view_shows_why_a_section_failed_in_full_not_the_reply_it_cut():
    section = run("manual", "partial", [
        outcome(0, role="section", title="Install", raw='{"options": ["a"]}'),
        outcome(1, "failed", role="section", title="Usage", error=CUT, raw='{"options": ["--verbo'),
        outcome(2, role="synthesis", title="0-1", variant="reduce", raw="Install and usage."),
    ], pattern="section", error="1 of 2 sections failed", result={"synthesis": "Install and usage.", "sections": 2})
    assert call_reasons(section) == [f"section 1 (Usage): {CUT}"]
    with out.capture() as captured:
        render.print_section_run(section)
    text = " ".join(captured.get().split())
    assert f"section 1 (Usage): {CUT}" in text
