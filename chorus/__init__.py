"""chorus: parallel LLM calls (voting, sectioning) on a Celery worker pool, every run stored.

The whole public API is here (`__all__`); the `chorus` command is built on it. Every function takes
`settings=` (default: the environment's, see `load_settings`): the database, the broker and the
result backend it names are the ones used.
"""

from chorus.batch import (
    Cancellation,
    Counts,
    Submission,
    batch_counts,
    cancel,
    find_batch,
    prepare_batch,
    retry_failed,
    run_batch,
    wait_for_batch,
)
from chorus.documents import DocumentError
from chorus.native import load_document
from chorus.runs import OutcomeView, RunView, celery_app, get_run, wait_for_run
from chorus.section import SectionPlan, plan_section, submit_section, submit_section_plan
from chorus.taskfile import load_task
from chorus.vote import VotePlan, plan_vote, submit_plan, submit_vote
from settings import Settings, load_settings
from workflows.calls import Attachment
from workflows.errors import ChorusError, ConfigError, NotFoundError, ProviderError, RunTimeout
from workflows.taskfile import Example, Label, SectionTask, Step, TaskFileError, VoterSpec, VoteRules, VoteTask

__all__ = [
    "Attachment",
    "Cancellation",
    "ChorusError",
    "ConfigError",
    "Counts",
    "DocumentError",
    "Example",
    "Label",
    "NotFoundError",
    "OutcomeView",
    "ProviderError",
    "RunTimeout",
    "RunView",
    "SectionPlan",
    "SectionTask",
    "Settings",
    "Step",
    "Submission",
    "TaskFileError",
    "VotePlan",
    "VoteRules",
    "VoteTask",
    "VoterSpec",
    "batch_counts",
    "cancel",
    "celery_app",
    "find_batch",
    "get_run",
    "load_document",
    "load_settings",
    "load_task",
    "plan_section",
    "plan_vote",
    "prepare_batch",
    "retry_failed",
    "run_batch",
    "submit_plan",
    "submit_section",
    "submit_section_plan",
    "submit_vote",
    "wait_for_batch",
    "wait_for_run",
]
