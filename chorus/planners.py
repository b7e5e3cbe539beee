"""The client's pattern registry: how a batch (and a scheduled job) plans one document of each pattern.

`chorus.batch` and `chorus batch` look the pattern up here (`planner(name)`) and never branch on it:
the planner plans a document (`plan`), checks a batch's options before anything is stored
(`check_options`), and turns the command line's values into its options (`batch_options`).

To add a pattern: write its `Plan` (`chorus.plans`) and its planner, and add one line to `PLANNERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chorus.orchestrate import plan_orchestrate
from chorus.plans import Plan
from chorus.section import plan_section
from chorus.vote import plan_vote
from models import Pattern
from settings import Settings
from workflows.calls import Attachment
from workflows.errors import ConfigError


@dataclass(frozen=True)
class Planner:
    """One pattern's way into a batch.

    - `plan(document, external_id, label, batch_id, settings, options)`: the document's plan (a
      ConfigError names a bad document); `label` is the record's known answer, if any;
    - `check_options(options)`: refuse a batch's options that cannot run (ConfigError), before anything
      is stored; the options are the keyword options of the pattern's `plan_*`;
    - `batch_options(given)`: the options from `chorus batch`'s values (`labels`, `voters`, `models`,
      `task`, a task object or the text given to --task, `task_text`, `how`, `adaptive`, `escalate_to`), refusing the
      ones that do not apply (ConfigError)."""

    pattern: Pattern
    plan: Callable[[str | Attachment, str, str | None, str, Settings, dict[str, Any]], Plan]
    check_options: Callable[[Mapping[str, Any]], None]
    batch_options: Callable[[Mapping[str, Any]], dict[str, Any]]


def _plan_vote(document: str | Attachment, external_id: str, label: str | None, batch_id: str, settings: Settings,
               options: dict[str, Any]) -> Plan:
    return plan_vote(document, external_id=external_id, batch_id=batch_id, gold_label=label, settings=settings,
                     **options)


def _check_vote(options: Mapping[str, Any]) -> None:
    if "labels" not in options and "task" not in options:
        raise ConfigError("--pattern vote needs --labels (e.g. --labels positive,negative,neutral) or --task FILE")


def _vote_options(given: Mapping[str, Any]) -> dict[str, Any]:
    if given.get("task_text") and given.get("task") is None:
        raise ConfigError(f"--task {given['task_text']!r} is not a task file; --pattern vote takes a .toml task file")
    return {"labels": given.get("labels"), "voters": given.get("voters"), "models": given.get("models"),
            "task": given.get("task"), "adaptive": given.get("adaptive"),
            **({"escalate_to": given["escalate_to"]} if given.get("escalate_to") is not None else {})}


def _plan_section(document: str | Attachment, external_id: str, label: str | None, batch_id: str,
                  settings: Settings, options: dict[str, Any]) -> Plan:
    return plan_section(document, external_id=external_id, batch_id=batch_id, settings=settings, **options)


def _check_section(options: Mapping[str, Any]) -> None:
    return None  # every option has a default: the built-in summary


def _section_options(given: Mapping[str, Any]) -> dict[str, Any]:
    if given.get("labels") or given.get("voters") or given.get("adaptive") is not None or given.get("escalate_to"):
        raise ConfigError("--labels, --voters, --adaptive and --escalate-to apply to --pattern vote")
    models = given.get("models")
    return {"task": given.get("task") or given.get("task_text"), "how": given.get("how"),
            "model": models[0] if models else None}


def _plan_orchestrate(document: str | Attachment, external_id: str, label: str | None, batch_id: str,
                      settings: Settings, options: dict[str, Any]) -> Plan:
    return plan_orchestrate(document, external_id=external_id, batch_id=batch_id, settings=settings, **options)


def _check_orchestrate(options: Mapping[str, Any]) -> None:
    if options.get("task") is None:
        raise ConfigError("--pattern orchestrate needs --task FILE, an orchestrate task file "
                          "(pattern = \"orchestrate\")")


def _orchestrate_options(given: Mapping[str, Any]) -> dict[str, Any]:
    if given.get("labels") or given.get("voters") or given.get("adaptive") is not None or given.get("how") \
            or given.get("escalate_to"):
        raise ConfigError("--labels, --voters, --adaptive, --escalate-to and --split do not apply to --pattern "
                          "orchestrate")
    if given.get("task_text") and given.get("task") is None:
        raise ConfigError(f"--task {given['task_text']!r} is not a task file; --pattern orchestrate takes a .toml "
                          "orchestrate task file")
    models = given.get("models")
    return {"task": given.get("task"), "model": models[0] if models else None}


PLANNERS: dict[Pattern, Planner] = {
    Pattern.VOTE: Planner(Pattern.VOTE, _plan_vote, _check_vote, _vote_options),
    Pattern.SECTION: Planner(Pattern.SECTION, _plan_section, _check_section, _section_options),
    Pattern.ORCHESTRATE: Planner(Pattern.ORCHESTRATE, _plan_orchestrate, _check_orchestrate, _orchestrate_options),
}


def names() -> str:
    """The patterns a batch runs, for a message: "vote or section"."""
    values = [p.value for p in PLANNERS]
    return ", ".join(values[:-1]) + " or " + values[-1] if len(values) > 1 else values[0]


def planner(name: str | Pattern) -> Planner:
    """The planner of a pattern by name; ConfigError for a pattern no batch runs."""
    try:
        return PLANNERS[Pattern(name)]
    except (ValueError, KeyError):
        raise ConfigError(f"unknown pattern {str(name)!r}; use {names()}") from None
