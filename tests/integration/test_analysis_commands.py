"""`chorus compare`, `chorus advise` and `chorus report` as a user runs them: the CLI in a
subprocess against the session's Redis, PostgreSQL, real workers and the stub."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import session_chorus as chorus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LABELS = "positive,negative,neutral"
LONG = {
    "kettle": ("positive", "I love this kettle. It is excellent, fast and quiet. " * 450),
    "lamp": ("negative", "The lamp broke in a week. Awful light, a waste of money and I regret it. " * 330),
    "desk": ("neutral", "The desk arrived on Tuesday. It is an ordinary, standard desk with four legs. " * 320),
}


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def long_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "long.jsonl"
    path.write_text("".join(json.dumps({"id": k, "label": v[0], "text": v[1]}) + "\n" for k, v in LONG.items()))
    return path


@pytest.fixture(scope="module")
def compared(workers, stub, long_set) -> dict[str, Any]:
    stub.reset()
    stub.set_latency(500)  # calls take time, as real ones do: voters sent at once are in flight together
    try:
        return as_json(chorus("compare", str(long_set), "--labels", LABELS, "--in-flight", "1", "--json"))
    finally:
        stub.set_latency(0)


def test_compare_prices_the_cache_aware_vote_at_the_cache_rule_minimum(compared):
    single, aware, naive = compared["patterns"]
    assert (single["voters"], aware["cache_aware"], naive["cache_aware"]) == (1, True, False)
    assert single["cache_write_tokens"] == 0  # a lone call marks no prefix nobody could read
    assert aware["cache_write_tokens"] > 3 * 4096 and aware["cache_read_tokens"] == 2 * aware["cache_write_tokens"]
    assert not aware["cost"]["estimated"]  # measured usage from the API, not an estimate
    # The minimum is counted with count_tokens on the requests, not taken from what the run cached:
    # the same calls have the same minimum whatever their schedule was.
    assert {p["minimum_counted_with"] for p in compared["patterns"]} == {"count_tokens"}
    assert not aware["minimum_cost"]["estimated"]
    assert aware["minimum_cost"]["total_usd"] == pytest.approx(naive["minimum_cost"]["total_usd"], rel=1e-9)
    # One write and two reads per document is the cheapest legal schedule, and the cache-aware vote paid it.
    assert aware["cost"]["total_usd"] == pytest.approx(aware["minimum_cost"]["total_usd"], rel=1e-9)
    assert aware["cost_over_minimum"] == pytest.approx(1.0)
    # A lone call has nobody to share a prefix with: its minimum is what it paid.
    assert single["cost_over_minimum"] == pytest.approx(1.0)
    # Voters sent at once each paid a cache write: well above the minimum.
    assert naive["cache_write_tokens"] >= 2 * aware["cache_write_tokens"]
    assert naive["cost_over_minimum"] == pytest.approx(naive["cost"]["total_usd"] / aware["cost"]["total_usd"],
                                                       rel=1e-3)
    assert naive["cost_over_minimum"] > 1.5
    ratios = compared["ratios"]
    assert ratios["vote_cost / single_cost"] == pytest.approx(
        aware["cost"]["total_usd"] / single["cost"]["total_usd"], rel=1e-3)
    assert ratios["vote_cost / minimum_cost"] == pytest.approx(1.0)
    assert ratios["vote_cost_without_cache_aware / minimum_cost"] == naive["cost_over_minimum"]
    assert aware["accuracy"] == pytest.approx(1.0) and aware["labelled"] == 3


def test_the_dry_run_estimate_bounds_the_measured_cost_from_above_and_closely(compared, long_set):
    estimate = as_json(chorus("compare", str(long_set), "--labels", LABELS, "--dry-run", "--json"))
    assert estimate["dry_run"] is True
    by_pattern = {e["pattern"]: e for e in estimate["patterns"]}
    for measured in compared["patterns"]:
        guess = by_pattern[measured["pattern"]]
        assert guess["estimated_cost"]["estimated"] is True
        assert guess["counted_with"] == "count_tokens"
        if measured["cache_aware"] or measured["voters"] == 1:
            assert measured["cost"]["total_usd"] <= guess["estimated_cost"]["total_usd"]
            assert guess["estimated_cost"]["total_usd"] <= 1.2 * measured["cost"]["total_usd"]


def test_advise_says_dont_parallelize_when_a_single_call_meets_the_target(workers, stub):
    # On the bundled reviews the single call (the `direct` prompt) gets 7 of 8 right.
    done = as_json(chorus("advise", str(ROOT / "chorus" / "examples" / "reviews.jsonl"), "--labels", LABELS,
                          "--target", "0.8", "--json"))
    assert done["single_accuracy"] == pytest.approx(7 / 8)
    assert done["meets_target"] is True
    assert done["verdict"] == "don't parallelize"
    assert done["recommendation"].startswith("don't parallelize: ")
    lo, hi = done["single_ci95"]
    assert lo < 7 / 8 < hi
    assert done["agreement"]["fleiss_kappa"] is not None


def test_advise_refuses_an_unlabelled_set(workers, stub, tmp_path):
    path = tmp_path / "unlabelled.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hello"}) + "\n")
    done = chorus("advise", str(path), "--labels", LABELS)
    assert done.returncode == 2
    assert "needs a label" in done.stderr


def test_report_writes_one_offline_page_that_chromium_renders(compared, tmp_path):
    batch_id = compared["patterns"][1]["batch_id"]
    page = tmp_path / "report.html"
    done = as_json(chorus("report", batch_id[:10], "--html", str(page), "--json"))
    assert done["kind"] == "batch" and done["runs"] == 3
    assert done["minimum_counted_with"] == "count_tokens"
    assert done["minimum_cost"]["total_usd"] == pytest.approx(compared["patterns"][1]["minimum_cost"]["total_usd"])
    assert done["cost_over_minimum"] == pytest.approx(1.0)
    html = page.read_text()
    for part in ("per-worker timeline", "batch timeline", "slowest worker", "Fleiss&#x27; kappa", "low agreement",
                 "cache read", "ratio to the minimum 1.000"):
        assert part in html, part
    assert not re.search(r"<(script|link)\b", html) and "http://" not in html.replace('xmlns="http://www.w3.org', "")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (`apt-get install chromium`; .ci/run installs it)")
    png = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1000,1400",
                        page.as_uri()], capture_output=True, timeout=90, check=False)
    # A blank 1000x1400 page compresses to a few kB; this one has text, tables and bars.
    assert png.exists() and png.stat().st_size > 30_000


def test_report_of_the_vote_sent_at_once_shows_its_ratio_to_the_minimum(compared, tmp_path):
    naive = compared["patterns"][2]
    page = tmp_path / "naive.html"
    done = as_json(chorus("report", naive["batch_id"], "--html", str(page), "--json"))
    assert done["cost_over_minimum"] == pytest.approx(naive["cost_over_minimum"], rel=1e-3)
    assert f"ratio to the minimum {naive['cost_over_minimum']:.3f}" in page.read_text()


def test_a_vote_that_cached_nothing_costs_about_twice_the_minimum(tmp_path):
    # Offline (embedded, no broker): three voters, nothing marked for caching, a ~6,000-token shared
    # prefix. The cheapest legal schedule writes it once and reads it twice: 1.25 + 0.1 + 0.1 of it
    # instead of 3 of it, so the run costs about twice its minimum, both estimates.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(CHORUS_DATA_DIR=str(tmp_path / "data"), CHORUS_PROVIDER="offline")
    doc = tmp_path / "long.txt"
    doc.write_text(LONG["kettle"][1])
    voted = as_json(chorus("vote", str(doc), "--labels", LABELS, "--voters", "3", "--json", env=env))
    assert voted["status"] == "succeeded" and len(voted["outcomes"]) == 3
    assert all(o["cache_write_tokens"] == o["cache_read_tokens"] == 0 for o in voted["outcomes"])
    assert min(o["input_tokens"] for o in voted["outcomes"]) > 5000
    page = tmp_path / "nocache.html"
    done = as_json(chorus("report", voted["id"], "--html", str(page), "--json", env=env))
    assert done["minimum_counted_with"] == "local estimate" and done["minimum_cost"]["estimated"] is True
    assert done["cost"]["total_usd"] == pytest.approx(voted["cost"]["total_usd"])
    assert done["cost_over_minimum"] == pytest.approx(2.0, abs=0.1)
    assert f"ratio to the minimum {done['cost_over_minimum']:.3f}" in page.read_text()


def test_report_of_an_unknown_id_says_how_to_find_one(workers, tmp_path):
    done = chorus("report", "nosuchid", "--html", str(tmp_path / "x.html"))
    assert done.returncode == 2
    assert "no run or batch 'nosuchid'" in done.stderr


def test_vote_takes_no_cache_aware_from_the_command_line(workers, stub, tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(LONG["kettle"][1])
    led = as_json(chorus("vote", str(doc), "--labels", LABELS, "--voters", "3", "--json"))
    flat = as_json(chorus("vote", str(doc), "--labels", LABELS, "--voters", "3", "--no-cache-aware", "--json"))
    assert led["config"]["dispatch"]["leaders"] == [0]
    assert flat["config"]["dispatch"]["leaders"] == []
    assert "off" in flat["config"]["dispatch"]["reason"]
    assert led["cost"]["total_usd"] > 0 and not led["cost"]["estimated"]


# Reviews whose opening says the opposite of the verdict: the `lead` voter (the built-in variant that
# judges from the opening) is wrong on every one; on the last two the ending misleads too, so the
# `closing` voter is wrong with it there. `direct` reads the whole review and is right.
MISLEADING_OPENINGS = {
    "blender": ("negative", "The box looked great. The colour is lovely. Then the motor died after two days. "
                "It is awful and loud. Support was useless and rude. A waste of money, I regret it."),
    "chair": ("negative", "I was excited, it looked excellent. Assembly was quick and fun. The seat cracked within "
              "a week. The wobble is terrible. Customer service ignored me. Awful, do not buy."),
    "toaster": ("positive", "The delivery was late and the box was damaged. The manual is awful. But it toasts "
                "evenly and fast. The design is lovely. It works great every morning. Excellent value, I love it."),
    "backpack": ("positive", "The zip felt stiff and cheap at first. The colour was disappointing. It is now my "
                 "favourite bag. The pockets are great and it is comfortable. Excellent quality. I recommend it."),
    "mouse": ("negative", "Nice shape and a great grip. The light is pretty. The scroll wheel broke quickly. The "
              "clicks are unreliable and awful. It disconnects all the time. Poor product, a waste."),
    "kettle": ("positive", "The first one arrived broken and it was awful. The refund took ages. The replacement is "
               "excellent. It boils fast and is quiet. The handle is great. I love it now."),
    "radio": ("negative", "Lovely design and a great sound. Excellent look. It broke, awful, terrible, useless, "
              "poor, a waste, broken, horrible. It leaks, awful and terrible, the worst purchase, awful. Still, a "
              "nice colour. Good size and great price."),
    "fan": ("positive", "It was loud and awful at first. Poor box. Then excellent, great, lovely, quiet, perfect, "
            "fantastic, superb. I love it, great and excellent, the best buy, amazing. Sadly a poor cable. "
            "Awful plug."),
}
PLAIN_REVIEWS = {
    "kettle": ("positive", "I love this kettle. It is excellent and fast. Great value and quiet. I recommend it."),
    "lamp": ("negative", "The lamp broke in a week. Awful light. A waste of money. I regret it."),
    "desk": ("neutral", "The desk arrived on Tuesday. It has four legs. The top is made of wood. It is 120 cm wide."),
    "headphones": ("positive", "Great headphones. The sound is excellent. Comfortable and light. I love them."),
    "blender": ("negative", "Terrible blender. It is loud and awful. It broke quickly. Poor product."),
    "chair": ("neutral", "The chair is grey. It came in a box on Monday. The seat is 45 cm high. It has wheels."),
}


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory) -> dict[str, str]:
    """Embedded mode with the offline provider: no broker, no stub, SQLite under a data dir of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(CHORUS_DATA_DIR=str(tmp_path_factory.mktemp("voter-quality")), CHORUS_PROVIDER="offline")
    return env


def advise_and_report(reviews: dict[str, tuple[str, str]], env: dict[str, str], tmp_path: Path
                      ) -> tuple[dict[str, Any], dict[str, Any], str]:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({"id": k, "label": v[0], "text": v[1]}) + "\n" for k, v in reviews.items()))
    advised = as_json(chorus("advise", str(path), "--labels", LABELS, "--voters", "3", "--target", "0.8", "--json",
                             env=env))
    page = tmp_path / "voters.html"
    reported = as_json(chorus("report", advised["patterns"][1]["batch_id"], "--html", str(page), "--json", env=env))
    return advised, reported, page.read_text()


def test_advise_and_report_name_the_voter_the_openings_mislead(offline_env, tmp_path):
    advised, reported, html = advise_and_report(MISLEADING_OPENINGS, offline_env, tmp_path)
    for quality in (advised["voter_quality"], reported["voter_quality"]):
        voters = {v["name"]: v for v in quality["voters"]}
        assert list(voters) == ["direct", "lead", "closing"]
        assert {v["model"] for v in voters.values()} == {advised["patterns"][1]["pattern"].split(" ")[2]}
        assert [(voters[n]["correct"], voters[n]["gold_answered"]) for n in voters] == [(8, 8), (0, 8), (6, 8)]
        assert all(v["abstained"] == v["failed"] == 0 for v in voters.values())
        pair = next(p for p in quality["pairs"] if [v["name"] for v in p["voters"]] == ["lead", "closing"])
        assert (pair["double_faults"], pair["agree_when_wrong"], pair["both_answered"]) == (2, 2, 8)
        assert [a["name"] for a in quality["advice"]] == ["lead"]
        advice = quality["advice"][0]["advice"]
        assert advice.startswith("drop or rewrite `lead` (")
        assert "0% accurate (0 of 8) against the rest of the panel's 87.5%" in advice
        assert "wrong together with `closing`" in advice and "on 2 of its 8 errors" in advice
    assert reported["agreement"]["vote_accuracy"] == pytest.approx(6 / 8)
    # The lead voter is wrong on every document, so any error of `closing` is a double fault with it:
    # 2, exactly what independent errors give, which the advisor does not call correlated.
    assert advised["error_overlap"]["double_faults"] == 2
    assert advised["error_overlap"]["correlated"] is False
    assert "per voter (prompt x model)" in html
    assert "drop or rewrite `lead`" in html


def test_a_panel_that_reads_plain_reviews_well_gets_no_voter_advice(offline_env, tmp_path):
    advised, reported, html = advise_and_report(PLAIN_REVIEWS, offline_env, tmp_path)
    for quality in (advised["voter_quality"], reported["voter_quality"]):
        assert [v["accuracy"] for v in quality["voters"]] == [1.0, 1.0, 1.0]
        assert all(p["double_faults"] == 0 for p in quality["pairs"])
        assert quality["advice"] == []
    assert "no voter is clearly less accurate than the rest of the panel" in html
    assert "drop or rewrite `" not in html


REVIEW_TASK = """name = "review-sentiment"
instructions = "You read product reviews. Decide the reviewer's overall verdict."
[[labels]]
name = "positive"
[[labels]]
name = "negative"
[[labels]]
name = "neutral"
[[voters]]
name = "whole-review"
prompt = "Read the whole review and weigh everything it says."
count = 2
[[voters]]
name = "first-impression"
prompt = "Judge from the opening of the review, where the first impression is."
"""


def test_advise_with_a_task_file_names_its_weak_voter_and_the_rewritten_task_fixes_it(offline_env, tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps({"id": k, "label": v[0], "text": v[1]}) + "\n"
                            for k, v in MISLEADING_OPENINGS.items()))
    task = tmp_path / "reviews.toml"
    task.write_text(REVIEW_TASK)
    first = as_json(chorus("advise", str(path), "--task", str(task), "--target", "0.8", "--json", env=offline_env))
    task.write_text(REVIEW_TASK.replace("Judge from the opening of the review, where the first impression is.",
                                        "Weigh how the review ends: its conclusion and final verdict."))
    second = as_json(chorus("advise", str(path), "--task", str(task), "--target", "0.8", "--json", env=offline_env))

    vote = first["patterns"][1]
    assert vote["pattern"].startswith("task panel (3 voters")
    names = {v["name"] for v in first["voter_quality"]["voters"]}
    assert names == {"whole-review", "first-impression"}
    assert [a["name"] for a in first["voter_quality"]["advice"]] == ["first-impression"]
    rewritten = {v["name"]: v for v in second["voter_quality"]["voters"]}
    before = {v["name"]: v for v in first["voter_quality"]["voters"]}
    assert rewritten["first-impression"]["accuracy"] > before["first-impression"]["accuracy"]


# The README's own task (examples/ticket-urgency.toml: [vote] quorum = 2) on a labelled set of tickets.
TICKETS = {
    "lockout": ("urgent", "Our whole team is locked out since the update and we cannot work at all."),
    "dataloss": ("urgent", "Every save deletes customer records: we are losing data right now."),
    "outage": ("urgent", "The service is down for all of our users; a complete outage since 9am."),
    "billing": ("urgent", "You charged our card four times and money is leaving our account."),
    "export": ("normal", "The export button is slow, but copying the table by hand works for now."),
    "darkmode": ("normal", "Could you add a dark mode to the dashboard? A routine request."),
    "typo": ("normal", "There is a typo on the settings page; nothing is broken otherwise."),
    "avatar": ("normal", "Uploading an avatar fails in Safari; it works in Firefox, so we have a workaround."),
}
TICKET_TASK = str(ROOT / "examples" / "ticket-urgency.toml")


@pytest.fixture(scope="module")
def tickets(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tickets") / "tickets.csv"
    path.write_text("id,text,label\n" + "".join(f'{k},"{v[1]}",{v[0]}\n' for k, v in TICKETS.items()))
    return path


def check_ticket_advice(done: subprocess.CompletedProcess[str]) -> None:
    """A verdict, printed: the single call is one voter of the task (no quorum error), the panel is the
    task's (quorum 2 kept), and the table shows each accuracy as the recommendation does."""
    assert done.returncode == 0, done.stderr
    assert "quorum" not in done.stderr
    text = " ".join(done.stdout.split())
    verdict = re.search(r"recommendation: (don't parallelize|vote|fix the prompt first): (.*)", text)
    assert verdict is not None, done.stdout
    shown = re.search(r"a single call \(1 x [\w-]+\) scores ([\d.]+%) \(95 % CI ([\d.]+%)-([\d.]+%)\)", text)
    if shown is not None:  # the verdict quotes the single call: the table says the same figures
        assert f"{shown[1]} ({shown[2]}-{shown[3]})" in text


def test_advise_runs_the_readme_task_with_a_quorum_against_the_stub(workers, stub, tickets):
    # Before: "error: option voters=1: field `vote.quorum`: quorum must be between 1 and 1 (the panel), got 2".
    check_ticket_advice(chorus("advise", str(tickets), "--task", TICKET_TASK, "--target", "0.9", timeout=240))
    advised = as_json(chorus("advise", str(tickets), "--task", TICKET_TASK, "--target", "0.9", "--json",
                             timeout=240))
    single, panel = advised["patterns"]
    assert single["pattern"].startswith("1 x ") and panel["pattern"].startswith("task panel (3 voters")
    assert advised["verdict"] in ("don't parallelize", "vote", "fix the prompt first")
    page = as_json(chorus("report", single["batch_id"], "--html", "/dev/null", "--json"))
    assert page["runs"] == len(TICKETS)


def test_advise_and_compare_run_the_readme_task_offline(offline_env, tickets):
    check_ticket_advice(chorus("advise", str(tickets), "--task", TICKET_TASK, "--target", "0.9", env=offline_env,
                               timeout=240))
    compared = as_json(chorus("compare", str(tickets), "--task", TICKET_TASK, "--json", env=offline_env, timeout=240))
    assert [p["voters"] for p in compared["patterns"]] == [1, 3, 3]
    estimate = as_json(chorus("compare", str(tickets), "--task", TICKET_TASK, "--dry-run", "--json", env=offline_env))
    assert [e["documents"] for e in estimate["patterns"]] == [len(TICKETS)] * 3


def test_advise_when_no_call_answers_gives_the_fix_the_prompt_verdict_and_report_says_why(workers, stub, tickets,
                                                                                         tmp_path):
    # Before: the table printed, then "TypeError: unsupported format string passed to NoneType.__format__"
    # (exit 1), exactly when the user needed the verdict; and the report's failed rows showed "-".
    stub.reset()
    stub.set_rules(["400"])  # every call is refused: no voter answers anything
    try:
        done = chorus("advise", str(tickets), "--labels", "urgent,normal", "--voters", "3", "--target", "0.9",
                      timeout=240)
        advised = as_json(chorus("advise", str(tickets), "--labels", "urgent,normal", "--voters", "3", "--target",
                                 "0.9", "--json", timeout=240))
    finally:
        stub.reset()
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    text = " ".join(done.stdout.split())
    assert "recommendation: fix the prompt first: no call named an allowed label" in text
    assert "every call failed on 8" in text
    assert "0% (0%-32.4%)" in text and "no voter answered on 8 of 8" in text
    assert advised["agreement"]["no_answer"] and len(advised["agreement"]["no_answer"]) == len(TICKETS)
    page = tmp_path / "failed.html"
    reported = chorus("report", advised["patterns"][1]["batch_id"], "--html", str(page))
    assert reported.returncode == 0, reported.stderr
    lines = " ".join(reported.stdout.split())
    assert f"{len(TICKETS)} of {len(TICKETS)} run(s) without a full result, and why:" in lines
    assert "no voter answered: 8 run(s)" in lines
    html = page.read_text()
    assert "no answer at all (8 of 8 runs)" in html and "why it failed" in html
    reason = next(f["reason"] for f in as_json(chorus("report", advised["patterns"][1]["batch_id"], "--html",
                                                      str(page), "--json"))["failures"])
    assert reason and reason in lines and "voter 0" in reason
