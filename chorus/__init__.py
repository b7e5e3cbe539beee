"""chorus: parallel LLM calls (voting, sectioning) on a Celery worker pool, every run stored.

The whole public API is here (`__all__`); the `chorus` command is built on it. Every function takes
`settings=` (default: the environment's, see `load_settings`): the database, the broker and the
result backend it names are the ones used.

The names are imported on first use (PEP 562 `__getattr__`): `import chorus`, and every command of
the CLI (which imports `chorus.cli`, a subpackage), would otherwise import Celery, SQLAlchemy, the
anthropic SDK and every document reader before doing anything (`chorus --help` took 2.4 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
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
    from chorus.orchestrate import OrchestratePlan, plan_orchestrate, submit_orchestrate
    from chorus.runs import OutcomeView, RunView, celery_app, get_run, wait_for_run
    from chorus.section import SectionPlan, plan_section, submit_section, submit_section_plan
    from chorus.taskfile import load_task
    from chorus.vote import VotePlan, plan_vote, submit_plan, submit_vote
    from settings import Settings, load_settings
    from workflows.calls import Attachment
    from workflows.errors import ChorusError, ConfigError, NotFoundError, ProviderError, RunFailed, RunTimeout
    from workflows.taskfile import (
        Example,
        Label,
        OrchestrateTask,
        PlanStep,
        SectionTask,
        Step,
        TaskFileError,
        VoterSpec,
        VoteRules,
        VoteTask,
    )

# Where each public name lives: the same names as the imports above and as __all__ (tests/test_public_api.py
# checks all three agree).
_HOMES: dict[str, tuple[str, ...]] = {
    "chorus.batch": ("Cancellation", "Counts", "Submission", "batch_counts", "cancel", "find_batch", "prepare_batch",
                     "retry_failed", "run_batch", "wait_for_batch"),
    "chorus.documents": ("DocumentError",),
    "chorus.native": ("load_document",),
    "chorus.orchestrate": ("OrchestratePlan", "plan_orchestrate", "submit_orchestrate"),
    "chorus.runs": ("OutcomeView", "RunView", "celery_app", "get_run", "wait_for_run"),
    "chorus.section": ("SectionPlan", "plan_section", "submit_section", "submit_section_plan"),
    "chorus.taskfile": ("load_task",),
    "chorus.vote": ("VotePlan", "plan_vote", "submit_plan", "submit_vote"),
    "settings": ("Settings", "load_settings"),
    "workflows.calls": ("Attachment",),
    "workflows.errors": ("ChorusError", "ConfigError", "NotFoundError", "ProviderError", "RunFailed", "RunTimeout"),
    "workflows.taskfile": ("Example", "Label", "OrchestrateTask", "PlanStep", "SectionTask", "Step", "TaskFileError",
                           "VoterSpec", "VoteRules", "VoteTask"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

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
    "OrchestratePlan",
    "OrchestrateTask",
    "OutcomeView",
    "PlanStep",
    "ProviderError",
    "RunFailed",
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
    "plan_orchestrate",
    "plan_section",
    "plan_vote",
    "prepare_batch",
    "retry_failed",
    "run_batch",
    "submit_plan",
    "submit_orchestrate",
    "submit_section",
    "submit_section_plan",
    "submit_vote",
    "wait_for_batch",
    "wait_for_run",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'chorus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
