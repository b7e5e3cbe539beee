"""chorus: parallel LLM calls (voting, sectioning) on a Celery worker pool.

The Python API lives in `chorus.api`; the CLI (`cli.py`) is built on it.
"""

from chorus.api import RunView, get_run, submit_vote, wait_for_run

__all__ = ["RunView", "get_run", "submit_vote", "wait_for_run"]
