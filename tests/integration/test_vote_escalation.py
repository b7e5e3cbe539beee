"""Escalation end to end (issue 23, item 3): a close vote sends exactly one more call, to `escalate_to`, and
that call's answer decides; a unanimous vote sends none; two tallies and a reaper racing still send one.
Real worker processes on Redis + PostgreSQL (the `workers` fixture) and embedded mode (the CLI), the real
anthropic SDK against the stub, whose log is the count of calls; `chorus compare` shows the three ways."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chorus.runs import celery_app, wait_for_run
from chorus.vote import plan_vote, submit_vote
from models import OutcomeRole, OutcomeStatus, RunStatus, Session, repo
from models.tables import utcnow
from settings import get_settings
from tasks import all_patterns, patterns
from tasks.vote import VOTE_TALLY
from tests import clirunner
from tests.conftest import clean_env
from workflows.queues import CALLBACK_QUEUE

pytestmark = pytest.mark.integration

LABELS = "positive,negative,neutral"
STRONG = "claude-opus-5-5"
CLEAR = "The battery died after one day. Terrible, awful, broken, I want a refund."
# Voters that read different parts disagree (the stub's classifier is the offline provider's): the built-in
# `direct` and `lead` prompts read it positive, `closing` negative.
MIXED = ("I love this phone, it is wonderful, excellent and fantastic, the best purchase I made. "
         "The screen is great. " * 3 + "But then it broke. Terrible, awful, broken, useless, refund, worst.")


def calls_of(stub, run_id: str) -> list[dict]:
    return [r for r in stub.requests(bodies=False) if r["run"] == run_id]


def test_a_tied_vote_sends_one_call_to_escalate_to_and_its_answer_decides(workers, stub):
    """3 voters, the `lead` voter (slot 1) fails for good: `direct` and `closing` split 1-1, a tie the panel
    cannot decide. One call goes to the strong model (slot 3, after the panel) and its label is the answer."""
    stub.reset()
    stub.set_rules([{"slot": "1", "status": 400}])
    try:
        run = wait_for_run(submit_vote(MIXED, LABELS, voters=3, escalate_to=STRONG, cache_aware=False), timeout=90)
        calls = calls_of(stub, run.id)
    finally:
        stub.set_rules([])
    strong = [c for c in calls if c["model"] == STRONG]
    assert len(strong) == 1 and strong[0]["slot"] == "3", calls
    assert len(calls) == 4  # the three voters and the escalated call, each once
    escalation = [o for o in run.outcomes if o.role == "escalation"]
    assert len(escalation) == 1 and escalation[0].slot == 3 and escalation[0].model == STRONG
    assert escalation[0].status == "succeeded" and escalation[0].answer in LABELS.split(",")
    assert run.result is not None
    assert run.result["escalation"]["panel_winner"] is None and run.result["tie"]  # the panel could not decide
    assert (run.status, run.answer) == ("succeeded", escalation[0].answer)
    assert run.result["escalated"] and run.result["escalation"]["decided"]
    assert "tie between" in run.result["escalation"]["reason"]
    assert run.result["reason"] == (f"escalated: {run.result['escalation']['reason']}; {STRONG} decided "
                                    f"{run.answer}")


def test_a_low_agreement_vote_escalates_once_and_a_unanimous_one_never(workers, stub):
    stub.reset()
    close = wait_for_run(submit_vote(MIXED, LABELS, voters=5, escalate_to=STRONG, low_agreement_below=0.9),
                         timeout=90)
    clear = wait_for_run(submit_vote(CLEAR, LABELS, voters=5, escalate_to=STRONG, low_agreement_below=0.9),
                         timeout=90)
    close_calls, clear_calls = calls_of(stub, close.id), calls_of(stub, clear.id)
    assert [c["model"] for c in close_calls].count(STRONG) == 1 and len(close_calls) == 6
    assert close.result is not None and close.result["escalated"]
    assert close.result["escalation"]["reason"].startswith("low agreement (the leading label has 80%")
    assert close.answer == next(o.answer for o in close.outcomes if o.role == "escalation")
    assert close.confidence == pytest.approx(0.8) and close.low_agreement  # the panel's, kept
    # Unanimous: no call to the strong model, no escalation slot, a plain tally.
    assert [c["model"] for c in clear_calls].count(STRONG) == 0 and len(clear_calls) == 5
    assert all(o.role == "voter" for o in clear.outcomes)
    assert clear.result is not None and "escalated" not in clear.result
    assert (clear.status, clear.answer) == ("succeeded", "negative")


def test_two_tallies_and_a_reaper_racing_send_the_escalated_call_once(workers, stub):
    """A run whose voters have all answered (P, P, N: 67%, below 90%) and that nobody has tallied yet: two
    tally messages to the callbacks worker and two in-process finishers (the reaper's `finish`) at once.
    The escalation slot is added once (its slot number is fixed, the insert does nothing the second time)
    and its call is sent once."""
    stub.reset()
    settings = get_settings()
    plan = plan_vote(MIXED, LABELS, voters=3, escalate_to=STRONG, low_agreement_below=0.9, cache_aware=False,
                     settings=settings)
    with Session.begin() as s:
        run = repo.create_run(s, text=plan.text, external_id="race", pattern=plan.pattern, provider="anthropic",
                              config=plan.config(), slots=plan.slots())
        run.status, run.submitted_at = RunStatus.RUNNING, utcnow()
        run_id = run.id
    with Session.begin() as s:
        for slot, answer in enumerate(("positive", "positive", "negative")):
            repo.update_slot(s, run_id, slot, status=OutcomeStatus.SUCCEEDED, answer=answer, attempts=1,
                             started_at=utcnow(), finished_at=utcnow())
    app = celery_app(settings)
    assert all_patterns.PATTERN_MODULES  # every pattern registered before the registry is read
    finish = patterns.entry(plan.pattern).finish
    for _ in range(2):
        app.signature(VOTE_TALLY, args=([], run_id), queue=CALLBACK_QUEUE).apply_async()
    racers = [threading.Thread(target=finish, args=(app, run_id)) for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=60)
    done = wait_for_run(run_id, timeout=90)
    calls = calls_of(stub, run_id)
    assert len(calls) == 1 and calls[0]["model"] == STRONG and calls[0]["slot"] == "3", calls
    escalation = [o for o in done.outcomes if o.role == OutcomeRole.ESCALATION.value]
    assert len(escalation) == 1 and escalation[0].attempts == 1
    assert done.status == "succeeded" and done.result is not None and done.result["escalated"]
    assert done.answer == escalation[0].answer


# ----- embedded mode, through the command line -----------------------------------------------------------
TASK = """name = "mixed-review"
pattern = "vote"
instructions = "Classify the review's sentiment."
[[labels]]
name = "positive"
[[labels]]
name = "negative"
[[labels]]
name = "neutral"
[vote]
low_agreement_below = 0.9
"""


def embedded(stub, *args: str, cwd: Path) -> clirunner.CliResult:
    env = clean_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=stub.base_url)
    return clirunner.chorus(*args, cwd=cwd, env=env, timeout=180)


def test_embedded_a_close_vote_escalates_once_and_a_clear_one_never(stub, tmp_path):
    (tmp_path / "task.toml").write_text(TASK)
    stub.reset()
    close = embedded(stub, "vote", MIXED, "--task", "task.toml", "--voters", "5", "--escalate-to", STRONG, "--json",
                     cwd=tmp_path)
    assert close.returncode == 0, close.stderr
    clear = embedded(stub, "vote", CLEAR, "--task", "task.toml", "--voters", "5", "--escalate-to", STRONG, "--json",
                     cwd=tmp_path)
    assert clear.returncode == 0, clear.stderr
    close_run, clear_run = close.json(), clear.json()
    strong = [c for c in calls_of(stub, close_run["id"]) if c["model"] == STRONG]
    assert len(strong) == 1 and strong[0]["slot"] == "5"
    assert close_run["result"]["escalated"] and close_run["result"]["escalation"]["model"] == STRONG
    assert close_run["answer"] == close_run["result"]["escalation"]["answer"]
    assert [c["model"] for c in calls_of(stub, clear_run["id"])] == ["claude-haiku-5-5"] * 5
    assert "escalated" not in clear_run["result"]
    shown = embedded(stub, "status", close_run["id"], cwd=tmp_path)
    assert shown.returncode == 0 and "escalated: low agreement" in shown.stdout


def test_a_bad_escalate_to_exits_2_naming_the_option(tmp_path):
    wrong = clirunner.chorus("vote", "great", "--labels", "a,b", "--voters", "3", "--escalate-to",
                             "claude-opsu-5-5", cwd=tmp_path)
    assert wrong.returncode == 2 and "--escalate-to claude-opsu-5-5" in wrong.stderr
    assert "did you mean claude-opus-5-5" in wrong.stderr and "Traceback" not in wrong.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("some text")
    section = clirunner.chorus("batch", "docs", "--pattern", "section", "--escalate-to", STRONG, cwd=tmp_path)
    assert section.returncode == 2 and "--escalate-to apply to --pattern vote" in section.stderr


def test_compare_sets_the_three_ways_side_by_side(tmp_path):
    """Offline, embedded: the panel alone, the strong model alone and panel+escalation, with the
    recommendation; the mixed review's tally is close, so exactly that document escalates."""
    (tmp_path / "task.toml").write_text(TASK + f'escalate_to = "{STRONG}"\n')
    rows = [{"id": "mixed", "text": MIXED, "label": "negative"}, {"id": "clear", "text": CLEAR, "label": "negative"}]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = clirunner.chorus("compare", "set.jsonl", "--task", "task.toml", "--voters", "3", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = done.json()
    assert [p["pattern"] for p in result["patterns"]][0] == f"1 x {STRONG}"  # the single call is the strong model's
    ways = {w["way"]: w for w in result["ways"]}
    assert set(ways) == {"panel alone", "strong model alone", "panel+escalation"}
    assert ways["panel+escalation"]["escalated"] == 1
    assert ways["panel+escalation"]["calls"] == ways["panel alone"]["calls"] + 1
    assert ways["strong model alone"]["calls"] == 2
    assert result["way_recommendation"]["choice"] in ways
    table = clirunner.chorus("compare", "set.jsonl", "--task", "task.toml", "--voters", "3", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    for way in ways:
        assert way in table.stdout
    refused = clirunner.chorus("compare", "set.jsonl", "--task", "task.toml", "--single-model", "claude-sonnet-5-5",
                               cwd=tmp_path)
    assert refused.returncode == 2 and "--escalate-to" in refused.stderr


def test_embedded_batch_lane_sends_the_escalated_call_as_the_next_provider_batch(stub, tmp_path):
    """`chorus batch --lane batch --escalate-to`: the close document's escalated call goes to the Batches API
    in a provider batch after its panel's, once; the unanimous document's never."""
    (tmp_path / "task.toml").write_text(TASK)
    rows = [{"id": "mixed", "text": MIXED}, {"id": "clear", "text": CLEAR}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stub.reset()
    env = clean_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=stub.base_url, CHORUS_LANE_COLLECT_S="0.5",
                    CHORUS_LANE_POLL_S="0.5")
    done = clirunner.chorus("batch", "docs.jsonl", "--task", "task.toml", "--voters", "3", "--escalate-to", STRONG,
                            "--lane", "batch", "--name", "lane-escalation", "--json", cwd=tmp_path, env=env,
                            timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.json()["counts"]["succeeded"] == 2
    log = stub.requests(bodies=False)
    assert [e for e in log if not e.get("batch")] == []  # nothing went synchronously
    strong = [e for e in log if e["model"] == STRONG]
    assert len(strong) == 1 and strong[0]["slot"] == "3"
    panel_batches = {e["batch"] for e in log if e["run"] == strong[0]["run"] and e["model"] != STRONG}
    assert strong[0]["batch"] not in panel_batches  # the next provider batch, sent once the panel was tallied
    exported = clirunner.chorus("export", "lane-escalation", "--format", "jsonl", cwd=tmp_path, env=env)
    by_id = {r["id"]: r for r in map(json.loads, exported.stdout.splitlines())}
    assert set(by_id) == {"mixed", "clear"}
