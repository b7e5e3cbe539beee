"""A failed run says why through the Python API: the stub refuses every call (HTTP 401), and the run that
comes back carries each voter's reason (`reason`), and `raise_for_status()` raises RunFailed with it."""

from __future__ import annotations

import pytest

from chorus import RunFailed, get_run, submit_vote, wait_for_run

pytestmark = pytest.mark.integration


def test_a_vote_whose_every_call_is_refused_returns_why_and_raises_it_on_request(workers, stub):
    stub.reset()
    stub.set_rules([{"status": 401}])
    try:
        run = wait_for_run(submit_vote("The battery died in a day.", labels="positive,negative", voters=3),
                           timeout=60)
    finally:
        stub.reset()

    assert run.status == "failed" and run.answer is None
    assert run.reason is not None and run.reason.startswith(f"{run.error}; voters 0, 1, 2 failed: ")
    assert "ANTHROPIC_API_KEY" in run.reason  # what the user must fix, not only "no voter gave a valid answer"
    assert get_run(run.id).reason == run.reason
    with pytest.raises(RunFailed, match="ANTHROPIC_API_KEY") as raised:
        wait_for_run(run.id, timeout=5).raise_for_status()
    assert raised.value.run.id == run.id
