"""chorus: parallel LLM calls (voting, sectioning) on a Celery worker pool.

The Python API lives in `chorus.api`; the CLI (`cli.py`) is built on it.
"""

from chorus.api import RunView, VotePlan, get_run, plan_vote, submit_plan, submit_vote, wait_for_run

__all__ = ["RunView", "VotePlan", "get_run", "plan_vote", "submit_plan", "submit_vote", "wait_for_run"]
