"""Embedded mode (no Redis) paces calls with its SQLite bucket, the same way the cluster does."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess

import pytest

from tests.conftest import clean_env, user_store

pytestmark = pytest.mark.integration


def test_an_embedded_vote_over_the_rate_limit_waits_for_tokens_without_counting_attempts(tmp_path):
    exe = shutil.which("chorus")
    assert exe, "the chorus console script is installed with the package"
    proc = subprocess.run(
        [exe, "vote", "I love this kettle, it is great.", "--labels", "positive,negative", "-n", "57", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=clean_env(CHORUS_RATE_LIMITS="claude-haiku-5-5:rpm=60"),  # the default model: 54 at once, 1 per second
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["status"] == "succeeded" and len(run["outcomes"]) == 57
    assert all(o["attempts"] == 1 for o in run["outcomes"])  # waiting for a token is not an attempt
    starts = sorted(dt.datetime.fromisoformat(o["started_at"]) for o in run["outcomes"])
    # 54 go at once; the last three wait their turns, about 1, 2 and 3 seconds later.
    assert (starts[-1] - starts[0]).total_seconds() >= 2.0
    assert (user_store(tmp_path) / "ratelimit.db").exists()


def test_status_limits_shows_each_queue_its_limits_and_what_its_bucket_holds(tmp_path):
    exe = shutil.which("chorus")
    assert exe
    env = clean_env(CHORUS_RATE_LIMITS="claude-haiku-4-5:rpm=50,otpm=10000", CHORUS_MODELS="claude-haiku-4-5,m2")
    proc = subprocess.run([exe, "status", "--limits", "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["queue"]: r for r in json.loads(proc.stdout)}
    assert rows["llm.claude-haiku-4-5"]["limits"] == "rpm=50,otpm=10000"
    assert rows["llm.claude-haiku-4-5"]["available"] == {"requests": 45.0, "output_tokens": 9000.0}  # 10 % reserve
    assert rows["llm.claude-haiku-4-5"]["pool"] == "claude-haiku-4-5"  # its family's buckets
    assert rows["llm.m2"] == {"queue": "llm.m2", "pool": "m2", "limits": "unlimited", "available": {}}
    bad = subprocess.run([exe, "status", "--limits"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=clean_env(CHORUS_RATE_LIMITS="claude-haiku-4-5:rpm=lots"))
    assert bad.returncode == 2 and "CHORUS_RATE_LIMITS" in bad.stderr and "not a number" in bad.stderr
