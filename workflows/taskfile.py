"""The user's task: what the voters decide or what each section worker does, as plain data.

A task file is TOML; `parse_task` takes the parsed mapping (reading the file is the client's job, see
`chorus.tasks`), checks every field and returns a `VoteTask`, a `SectionTask` or an `OrchestrateTask`.
Every problem is a `TaskFileError` naming the field (`labels[2].name`, `voters[0].count`), so a user can fix the file
without reading code. The same objects are the Python API's (`chorus.VoteTask(...)`).

`to_json()` is the resolved task (defaults filled in) and `task_hash` its SHA-256 over canonical JSON:
a run stores both, so every result can be traced to the exact prompt that produced it, and two files
that differ only in layout or comments hash the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workflows import schema_subset
from workflows.errors import ConfigError

LABEL_MAX_CHARS = 64
NAME_MAX_CHARS = 80
VOTER_NAME_MAX_CHARS = 32  # an outcome's prompt_variant column
# The most voters a task can name at all; the limit a vote is held to is CHORUS_MAX_VOTERS (64 unless
# raised), checked when a vote is planned: a run of 1,000 voters is a bill, not a vote.
MAX_PANEL = 1000
MAX_COUNT = MAX_PANEL
PATTERNS = ("vote", "section", "orchestrate")
SPLITS = ("auto", "headings", "paragraphs", "tokens", "pages")  # pages: a PDF, by page ranges
MERGES = ("concat",)
TIE_POLICIES = ("none", "first")
# When a vote with `escalate_to` hands the document to the stronger model (workflows.escalation).
ESCALATE_CONDITIONS = ("low agreement", "tie", "below quorum")
DEFAULT_VOTE_INSTRUCTIONS = "You classify documents."
DEFAULT_SUMMARIZE = "Summarize the document: its main points, in order, in a few short paragraphs."


class TaskFileError(ConfigError):
    """A task file (or task object) that cannot run; `field` is the dotted path of the bad field."""

    def __init__(self, field_path: str, problem: str, source: str | None = None, *,
                 options: str | None = None) -> None:
        self.field = field_path
        self.problem = problem
        self.source = source
        self.options = options  # the options (`quorum=4`) that made the task contradict itself, if any
        where = f"{source}: " if source else ""
        given = f"option{'s' if options and ',' in options else ''} {options}: " if options else ""
        at = f"field `{field_path}`: " if field_path else ""
        super().__init__(f"{where}{given}{at}{problem}")


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class VoterSpec:
    """One entry of the panel; `count` repeats it. A voter without a `prompt` takes the built-in prompt
    variants in turn; `model` None means the default model."""

    name: str | None = None
    model: str | None = None
    prompt: str | None = None
    effort: str | None = None
    count: int = 1


@dataclass(frozen=True)
class VoteRules:
    quorum: int | None = None
    tie_policy: str = "none"
    low_agreement_below: float = 0.6
    # Adaptive voting: "decided" asks voters in waves and stops once the rest cannot change the result;
    # None (or "all") asks every voter. `stop_when_agree` (with "decided") also stops once k agree.
    stop: str | None = None
    stop_when_agree: int | None = None
    # Escalation: a vote on which one of `escalate_when` holds is decided by one more call, to this model.
    escalate_to: str | None = None
    escalate_when: tuple[str, ...] = ESCALATE_CONDITIONS

    @property
    def adaptive(self) -> bool:
        return self.stop == "decided"


@dataclass(frozen=True)
class VoteTask:
    name: str
    labels: tuple[Label, ...]
    instructions: str = DEFAULT_VOTE_INSTRUCTIONS
    examples: tuple[Example, ...] = ()
    voters: tuple[VoterSpec, ...] = (VoterSpec(count=5),)
    vote: VoteRules = field(default_factory=VoteRules)
    pattern: str = "vote"

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def panel_size(self) -> int:
        return sum(v.count for v in self.voters)

    def canonical_label(self, answer: str | None) -> str | None:
        """The label as written in the task for an answer in any case, or None when it is not a label."""
        return canonical_label(answer, self.label_names)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pattern": "vote",
            "instructions": self.instructions,
            "labels": [{"name": lb.name, "description": lb.description} for lb in self.labels],
            "examples": [{"text": ex.text, "label": ex.label} for ex in self.examples],
            "voters": [_drop_none({"name": v.name, "model": v.model, "prompt": v.prompt, "effort": v.effort,
                                   "count": v.count}) for v in self.voters],
            "vote": _drop_none({"quorum": self.vote.quorum, "tie_policy": self.vote.tie_policy,
                                "low_agreement_below": self.vote.low_agreement_below,
                                "stop": self.vote.stop if self.vote.adaptive else None,
                                "stop_when_agree": self.vote.stop_when_agree,
                                # Only with escalate_to: a task without it keeps the hash it had before.
                                "escalate_to": self.vote.escalate_to,
                                "escalate_when": list(self.vote.escalate_when) if self.vote.escalate_to else None}),
        }


@dataclass(frozen=True)
class Step:
    """A `map` (per section) or `reduce` (synthesis) step: its model, instructions and output schema."""

    instructions: str
    model: str | None = None
    output_schema: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    effort: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"instructions": self.instructions, "model": self.model, "output_schema": self.output_schema,
                           "max_output_tokens": self.max_output_tokens, "effort": self.effort})


@dataclass(frozen=True)
class SectionTask:
    name: str
    map: Step
    reduce: Step | None = None  # None with merge set: no synthesis call
    merge: str | None = None
    split: str = "auto"
    max_tokens: int | None = None  # section size; None: CHORUS_SECTION_TOKENS
    overlap: int = 0
    pattern: str = "section"

    def to_json(self) -> dict[str, Any]:
        return _drop_none({
            "name": self.name,
            "pattern": "section",
            "split": self.split,
            "max_tokens": self.max_tokens,
            "overlap": self.overlap,
            "map": self.map.to_json(),
            "reduce": self.reduce.to_json() if self.reduce else None,
            "merge": self.merge,
        })


# ----- orchestrator-worker: a planner lists subtasks, a worker does each, a synthesis combines them -----
# The most workers one plan may run: each subtask is a slot (a call, an outcome row) and the estimate prices
# `max_workers` of them; a planner's list of a hundred subtasks is already a long reply (docs/decisions.md).
MAX_WORKERS = 100
DEFAULT_MAX_WORKERS = 8


@dataclass(frozen=True)
class PlanStep:
    """The planner call of an orchestrate task: its model and instructions, and `max_workers`, the most
    subtasks its plan may run. Its reply's shape is chorus's (`workflows.orchestrating.plan_schema`)."""

    instructions: str
    model: str | None = None
    max_workers: int = DEFAULT_MAX_WORKERS
    max_output_tokens: int | None = None
    effort: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"instructions": self.instructions, "model": self.model, "max_workers": self.max_workers,
                           "max_output_tokens": self.max_output_tokens, "effort": self.effort})


@dataclass(frozen=True)
class OrchestrateTask:
    """Orchestrator-worker: `plan` lists the subtasks (at most `plan.max_workers`), `work` is each worker's
    step (with an optional output schema), `reduce` the synthesis over the workers' results."""

    name: str
    plan: PlanStep
    work: Step
    reduce: Step
    pattern: str = "orchestrate"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pattern": "orchestrate", "plan": self.plan.to_json(),
                "work": self.work.to_json(), "reduce": self.reduce.to_json()}


Task = VoteTask | SectionTask | OrchestrateTask


def task_hash(task: Task) -> str:
    """SHA-256 of the resolved task as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(task.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def canonical_label(answer: str | None, labels: Sequence[str]) -> str | None:
    if answer is None:
        return None
    key = " ".join(answer.split()).casefold()
    for label in labels:
        if label.casefold() == key:
            return label
    return None


# ----- the default tasks (today's `--labels a,b --voters N` and `--task summarize`) ----------------
def labels_task(labels: str | Sequence[str], *, voters: int = 5, models: Sequence[str] | None = None,
                name: str = "labels") -> VoteTask:
    """The task `--labels a,b,c --voters N` means: the default instructions, built-in prompt variants."""
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    names = [" ".join(str(x).split()) for x in items if str(x).strip()]
    if len(names) < 2:
        raise TaskFileError("labels", "give at least two labels, e.g. --labels positive,negative")
    task = VoteTask(name=name, labels=tuple(Label(n) for n in names), voters=_default_panel(voters, models))
    return check_vote_task(task)


def _default_panel(voters: int, models: Sequence[str] | None) -> tuple[VoterSpec, ...]:
    if not isinstance(voters, int) or isinstance(voters, bool):
        raise TaskFileError("voters", f"the number of voters must be a whole number, got {voters!r}")
    if not 1 <= voters <= MAX_PANEL:
        raise TaskFileError("voters", f"a vote takes 1 to {MAX_PANEL} voters, got {voters}")
    model_list: list[str | None] = list(models) if models else [None]
    return tuple(VoterSpec(model=model_list[i % len(model_list)]) for i in range(voters))


def summary_task(instructions: str = DEFAULT_SUMMARIZE, *, name: str = "summarize", split: str = "auto",
                 max_tokens: int | None = None, overlap: int = 0, model: str | None = None) -> SectionTask:
    """A free-text section task: each section does `instructions`, a model call merges the results."""
    task = SectionTask(name=name, map=Step(instructions, model=model),
                       reduce=Step(f"Combine the parts into one result for the whole document. The task was: "
                                   f"{instructions}", model=model),
                       split=split, max_tokens=max_tokens, overlap=overlap)
    return check_section_task(task)


# ----- overrides (the command line wins over the file) ---------------------------------------------
def with_vote_overrides(task: VoteTask, *, labels: str | Sequence[str] | None = None, voters: int | None = None,
                        models: Sequence[str] | None = None, quorum: int | None = None,
                        tie_policy: str | None = None, low_agreement_below: float | None = None,
                        adaptive: bool | None = None, escalate_to: str | None = None) -> VoteTask:
    """The task with the command line's options applied: `labels` replaces the label set (keeping the
    descriptions of labels that stay), `voters` repeats the panel's entries in order up to N voters,
    `models` replaces the voters' models in turn, and the vote rules replace theirs (`adaptive`
    True sets stop = "decided", False asks every voter; `escalate_to` sets the model close calls go to).

    The result is checked as a whole, on the panel it ends with: options that make the task contradict
    itself (`voters=2` under `stop_when_agree = 3`, `quorum=4` above it) raise a TaskFileError naming
    the options and the field."""
    original = task
    given = {"voters": voters, "quorum": quorum, "tie_policy": tie_policy, "low_agreement_below": low_agreement_below,
             "escalate_to": escalate_to}
    if labels is not None:
        kept = {lb.name.casefold(): lb for lb in task.labels}
        fresh = labels_task(labels, voters=1).labels
        task = replace(task, labels=tuple(kept.get(lb.name.casefold(), lb) for lb in fresh),
                       examples=tuple(ex for ex in task.examples
                                      if canonical_label(ex.label, [lb.name for lb in fresh])))
    if voters is not None:
        if not isinstance(voters, int) or isinstance(voters, bool) or not 1 <= voters <= MAX_PANEL:
            raise TaskFileError("voters", f"a vote takes 1 to {MAX_PANEL} voters, got {voters!r}")
        flat = [replace(v, count=1) for v in task.voters for _ in range(v.count)]
        task = replace(task, voters=tuple(flat[i % len(flat)] for i in range(voters)))
    if models:
        flat = [replace(v, count=1) for v in task.voters for _ in range(v.count)]
        task = replace(task, voters=tuple(replace(v, model=models[i % len(models)]) for i, v in enumerate(flat)))
    rules = task.vote
    if quorum is not None:
        rules = replace(rules, quorum=quorum)
    if tie_policy is not None:
        rules = replace(rules, tie_policy=tie_policy)
    if low_agreement_below is not None:
        rules = replace(rules, low_agreement_below=low_agreement_below)
    if adaptive is not None:
        rules = replace(rules, stop="decided") if adaptive else replace(rules, stop=None, stop_when_agree=None)
    if escalate_to is not None:
        rules = replace(rules, escalate_to=escalate_to.strip())
    try:
        return check_vote_task(replace(task, vote=rules))
    except TaskFileError as exc:
        blamed = [f"{name}={value!r}" for name, value in given.items()
                  if value is not None and name in _OPTIONS_OF_FIELD.get(exc.field, ())]
        if not blamed or exc.options or _own_problem(original, exc.field):
            raise
        raise TaskFileError(exc.field, exc.problem, exc.source, options=", ".join(blamed)) from None


# The options of `with_vote_overrides` that bear on a field of the vote rules: the panel's size sets the
# default quorum and the bounds of the quorum and of stop_when_agree.
_OPTIONS_OF_FIELD: dict[str, tuple[str, ...]] = {
    "vote.quorum": ("voters", "quorum"),
    "vote.stop_when_agree": ("voters", "quorum"),
    "vote.tie_policy": ("tie_policy",),
    "vote.low_agreement_below": ("low_agreement_below",),
    "vote.escalate_to": ("escalate_to",),
}


def _own_problem(task: VoteTask, field_path: str) -> bool:
    """Whether the task, before any option, is already wrong in this field (then the error is the task's)."""
    try:
        check_vote_task(task)
    except TaskFileError as exc:
        return exc.field == field_path
    return False


# ----- parsing and checking ------------------------------------------------------------------------
def parse_task(data: Mapping[str, Any], *, source: str | None = None) -> Task:
    """A task from a parsed TOML mapping. Raises TaskFileError naming the first bad field."""
    try:
        return _parse(data, stored=False)
    except TaskFileError as exc:
        if source and exc.source is None:
            raise TaskFileError(exc.field, exc.problem, source) from None
        raise


def _parse(data: Mapping[str, Any], *, stored: bool) -> Task:
    if not isinstance(data, Mapping):
        raise TaskFileError("", "a task file is a TOML table of fields (name, pattern, ...)")
    name = _text(data, "name", required=True, max_chars=NAME_MAX_CHARS)
    pattern = _text(data, "pattern", required=False) or "vote"
    if pattern not in PATTERNS:
        raise TaskFileError("pattern", f"unknown pattern {pattern!r}; use one of: {', '.join(PATTERNS)}")
    if pattern == "vote":
        _known(data, "", ("name", "pattern", "instructions", "labels", "examples", "voters", "vote"))
        return check_vote_task(VoteTask(
            name=name,
            instructions=_text(data, "instructions", required=False) or DEFAULT_VOTE_INSTRUCTIONS,
            labels=tuple(_label(item, f"labels[{i}]") for i, item in enumerate(_tables(data, "labels", required=True))),
            examples=tuple(_example(item, f"examples[{i}]") for i, item in enumerate(_tables(data, "examples"))),
            voters=tuple(_voter(item, f"voters[{i}]") for i, item in enumerate(_tables(data, "voters")))
            or (VoterSpec(count=5),),
            vote=_rules(data.get("vote", {}), "vote"),
        ), stored=stored)
    if pattern == "orchestrate":
        return _parse_orchestrate(data, name, stored=stored)
    _known(data, "", ("name", "pattern", "split", "max_tokens", "overlap", "map", "reduce", "merge"))
    if "map" not in data:
        raise TaskFileError("map", "a section task needs a [map] table with the instructions for each section")
    merge = _text(data, "merge", required=False) or None
    if merge is not None and merge not in MERGES:
        raise TaskFileError("merge", f"unknown merge {merge!r}; use one of: {', '.join(MERGES)}, or a [reduce] table")
    reduce = _step(data["reduce"], "reduce", stored=stored) if "reduce" in data else None
    return check_section_task(SectionTask(
        name=name,
        split=_text(data, "split", required=False) or "auto",
        max_tokens=_int(data, "max_tokens", "", low=1),
        overlap=_int(data, "overlap", "", low=0) or 0,
        map=_step(data["map"], "map", stored=stored),
        reduce=reduce,
        merge=merge,
    ))


def check_vote_task(task: VoteTask, *, stored: bool = False) -> VoteTask:
    """The checks every vote task passes, from a file or built in Python, on its panel as resolved.

    `stored`: a task read back from a run (`task_from_json`); the rules that keep the vote rules from
    contradicting each other (`_check_rules_agree`) are left out, so a run stored before they were
    added still reads; every new plan checks them."""
    if not isinstance(task.name, str) or not task.name.strip():
        raise TaskFileError("name", "give the task a name, e.g. name = \"ticket-urgency\"")
    if len(task.labels) < 2:
        raise TaskFileError("labels", "a vote needs at least two [[labels]]")
    seen: dict[str, int] = {}
    for i, label in enumerate(task.labels):
        _check_label_name(label.name, f"labels[{i}].name")
        key = label.name.casefold()
        if key in seen:
            raise TaskFileError(f"labels[{i}].name",
                                f"label {label.name!r} repeats labels[{seen[key]}] (labels match case-insensitively)")
        seen[key] = i
    for i, ex in enumerate(task.examples):
        if not ex.text.strip():
            raise TaskFileError(f"examples[{i}].text", "an example needs some text")
        if canonical_label(ex.label, task.label_names) is None:
            raise TaskFileError(f"examples[{i}].label",
                                f"{ex.label!r} is not one of the labels: {', '.join(task.label_names)}")
    if not task.voters:
        raise TaskFileError("voters", "the panel is empty; add [[voters]] entries or leave the field out for 5 voters")
    for i, v in enumerate(task.voters):
        if not isinstance(v.count, int) or isinstance(v.count, bool) or not 1 <= v.count <= MAX_COUNT:
            raise TaskFileError(f"voters[{i}].count",
                                f"count must be a whole number from 1 to {MAX_COUNT}, got {v.count!r}")
        if v.prompt is not None and not v.prompt.strip():
            raise TaskFileError(f"voters[{i}].prompt", "the prompt is empty; give it some text or leave it out")
    if task.panel_size > MAX_PANEL:
        raise TaskFileError("voters", f"the panel has {task.panel_size} voters; a vote takes at most {MAX_PANEL}")
    rules = task.vote
    for key, value in (("quorum", rules.quorum), ("stop_when_agree", rules.stop_when_agree)):
        if value is not None and not _whole(value):
            raise TaskFileError(f"vote.{key}", f"must be a whole number, got {value!r}")
    if rules.quorum is not None and not 1 <= rules.quorum <= task.panel_size:
        raise TaskFileError("vote.quorum",
                            f"quorum must be between 1 and {task.panel_size} (the panel), got {rules.quorum}")
    if rules.tie_policy not in TIE_POLICIES:
        raise TaskFileError("vote.tie_policy",
                            f"unknown tie policy {rules.tie_policy!r}; use one of: {', '.join(TIE_POLICIES)}")
    low = rules.low_agreement_below
    if not isinstance(low, int | float) or isinstance(low, bool) or not 0.0 <= low <= 1.0:
        raise TaskFileError("vote.low_agreement_below", f"must be between 0 and 1, got {low!r}")
    if rules.stop not in (None, "all", "decided"):
        raise TaskFileError("vote.stop", f"unknown stop rule {rules.stop!r}; use \"decided\" (stop once the voters "
                                         "left cannot change the result) or \"all\" (ask every voter)")
    if rules.stop_when_agree is not None:
        if not rules.adaptive:
            raise TaskFileError("vote.stop_when_agree", "needs stop = \"decided\" (adaptive voting) beside it")
        if not 1 <= rules.stop_when_agree <= task.panel_size:
            raise TaskFileError("vote.stop_when_agree", f"must be between 1 and {task.panel_size} (the panel), "
                                                        f"got {rules.stop_when_agree}")
    _check_escalation(rules)
    if not stored:
        _check_rules_agree(task)
    return task


def _check_escalation(rules: VoteRules) -> None:
    """The escalation fields' shape. Whether the model is in the registry, has a queue and is not the
    whole panel's model is checked when the vote is planned (`workflows.escalation.check_escalation`),
    where the user's models file and the resolved panel are known, as for the voters' models."""
    to, when = rules.escalate_to, rules.escalate_when
    if to is not None and (not isinstance(to, str) or not to.strip() or len(to.split()) != 1):
        raise TaskFileError("vote.escalate_to", f"name the model close calls go to, e.g. escalate_to = "
                                                f"\"claude-opus-5-5\" (`chorus models` lists them), got {to!r}")
    if isinstance(when, str) or not isinstance(when, tuple | list):
        raise TaskFileError("vote.escalate_when", f"must be a list of conditions, e.g. [\"tie\"]; use any of: "
                                                  f"{_conditions()}")
    for i, condition in enumerate(when):
        if condition not in ESCALATE_CONDITIONS:
            raise TaskFileError(f"vote.escalate_when[{i}]", f"unknown condition {condition!r}; use any of: "
                                                            f"{_conditions()}")
    if not when:
        raise TaskFileError("vote.escalate_when", "is empty, so no vote would escalate; leave it out (every "
                                                  f"condition: {_conditions()}) or remove escalate_to")
    if to is None and tuple(when) != ESCALATE_CONDITIONS:
        raise TaskFileError("vote.escalate_when", "needs escalate_to beside it: the model the close calls go to")


def _conditions() -> str:
    return ", ".join(f'"{c}"' for c in ESCALATE_CONDITIONS)


def _check_rules_agree(task: VoteTask) -> None:
    """The vote rules that are each fine alone but contradict each other (issue 22): refused on the
    resolved panel, since `voters` can change its size and with it the default quorum."""
    rules = task.vote
    if rules.low_agreement_below == 0:
        raise TaskFileError("vote.low_agreement_below",
                            "must be between 0 and 1, above 0: a vote is flagged low-agreement when the winner's "
                            "share of the answers is below it, and no share is below 0; give e.g. 0.6")
    k = rules.stop_when_agree
    if k is not None:
        # An early stop on k agreeing answers may have no more than k valid answers: below the quorum the
        # tally says partial ("only k of N voters answered") where the full panel succeeds.
        quorum = rules.quorum if rules.quorum is not None else task.panel_size // 2 + 1  # voting.default_quorum
        if k < quorum:
            which = (f"the quorum ({quorum})" if rules.quorum is not None else
                     f"the quorum ({quorum}: vote.quorum is not set, so a majority of the {task.panel_size} voters)")
            lower = "lower the quorum" if rules.quorum is not None else "set a lower vote.quorum"
            raise TaskFileError("vote.stop_when_agree",
                                f"stop_when_agree = {k} is below {which}: a vote that stops once {k} voters agree "
                                f"can stop with only {k} answers and end partial where the full panel would "
                                f"succeed; raise it to at least the quorum ({quorum}) or {lower}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_section_task(task: SectionTask) -> SectionTask:
    if not isinstance(task.name, str) or not task.name.strip():
        raise TaskFileError("name", "give the task a name, e.g. name = \"man-options\"")
    if task.split not in SPLITS:
        raise TaskFileError("split", f"unknown split {task.split!r}; use one of: {', '.join(SPLITS)}")
    if task.max_tokens is not None and task.max_tokens < 1:
        raise TaskFileError("max_tokens", f"max_tokens must be at least 1, got {task.max_tokens}")
    if task.overlap < 0 or (task.max_tokens is not None and task.overlap >= task.max_tokens):
        raise TaskFileError("overlap", "overlap must be at least 0 and below max_tokens")
    if not task.map.instructions.strip():
        raise TaskFileError("map.instructions", "say what to do with each section")
    if task.merge is not None and task.reduce is not None:
        raise TaskFileError("merge", "give either [reduce] (a model merges) or merge = \"concat\", not both")
    if task.merge is None and task.reduce is None:
        raise TaskFileError("reduce", "say how to combine the sections: a [reduce] table or merge = \"concat\"")
    if task.merge == "concat" and not _concatenable(task.map.output_schema):
        raise TaskFileError("merge", "merge = \"concat\" joins JSON arrays: give [map] an output_schema that is an "
                                     "array, or an object with exactly one array property")
    return task


def _concatenable(schema: dict[str, Any] | None) -> bool:
    return schema is not None and concat_key(schema) is not False


def concat_key(schema: Mapping[str, Any]) -> str | None | bool:
    """Where `merge = "concat"` finds the list to join: None for a top-level array, the property name
    for an object with exactly one array property, False when the schema has no such list."""
    if schema.get("type") == "array":
        return None
    if schema.get("type") == "object":
        arrays = [k for k, v in (schema.get("properties") or {}).items()
                  if isinstance(v, Mapping) and v.get("type") == "array"]
        if len(arrays) == 1:
            return arrays[0]
    return False


def _parse_orchestrate(data: Mapping[str, Any], name: str, *, stored: bool) -> OrchestrateTask:
    _known(data, "", ("name", "pattern", "plan", "work", "reduce"))
    for key, what in (("plan", "the planner's instructions and max_workers"), ("work", "each worker's instructions"),
                      ("reduce", "how the workers' results are combined")):
        if key not in data:
            raise TaskFileError(key, f"an orchestrate task needs a [{key}] table with {what}")
    return check_orchestrate_task(OrchestrateTask(
        name=name, plan=_plan_step(data["plan"], "plan"), work=_step(data["work"], "work", stored=stored),
        reduce=_step(data["reduce"], "reduce", stored=stored)), stored=stored)


def _plan_step(table: Any, where: str) -> PlanStep:
    if not isinstance(table, Mapping):
        raise TaskFileError(where, f"must be a table: write [{where}] with instructions = \"...\" and max_workers "
                                   "below it")
    _known(table, where, ("instructions", "model", "max_workers", "max_output_tokens", "effort"))
    workers = table.get("max_workers", DEFAULT_MAX_WORKERS)
    if not _whole(workers):
        raise TaskFileError(f"{where}.max_workers", f"must be a whole number from 1 to {MAX_WORKERS}, got {workers!r}")
    return PlanStep(
        instructions=_text(table, "instructions", prefix=where, required=True),
        model=_text(table, "model", prefix=where) or None,
        max_workers=workers,
        max_output_tokens=_int(table, "max_output_tokens", where, low=1),
        effort=_text(table, "effort", prefix=where) or None,
    )


def check_orchestrate_task(task: OrchestrateTask, *, stored: bool = False) -> OrchestrateTask:
    """The checks every orchestrate task passes, from a file or built in Python (`stored`: read back from a
    run, whose schemas were checked when it was planned)."""
    if not isinstance(task.name, str) or not task.name.strip():
        raise TaskFileError("name", "give the task a name, e.g. name = \"contract-review\"")
    if not isinstance(task.plan, PlanStep):
        raise TaskFileError("plan", f"must be a PlanStep(instructions=..., max_workers=...), got {task.plan!r}")
    for where, step in (("work", task.work), ("reduce", task.reduce)):
        if not isinstance(step, Step):
            raise TaskFileError(where, f"must be a Step(instructions=..., model=..., output_schema=...), got {step!r}")
    workers = task.plan.max_workers
    if not _whole(workers) or not 1 <= workers <= MAX_WORKERS:
        raise TaskFileError("plan.max_workers", f"must be a whole number from 1 to {MAX_WORKERS} (the most subtasks "
                                                f"one plan may run), got {workers!r}")
    for where, text in (("plan", task.plan.instructions), ("work", task.work.instructions),
                        ("reduce", task.reduce.instructions)):
        if not isinstance(text, str) or not text.strip():
            raise TaskFileError(f"{where}.instructions", "is empty; say what this step does")
    for where, budget in (("plan", task.plan.max_output_tokens), ("work", task.work.max_output_tokens),
                          ("reduce", task.reduce.max_output_tokens)):
        if budget is not None and (not _whole(budget) or budget < 1):
            raise TaskFileError(f"{where}.max_output_tokens", f"must be a whole number of at least 1, got {budget!r}")
    if not stored:
        for where, step in (("work", task.work), ("reduce", task.reduce)):
            if step.output_schema is not None:
                if not isinstance(step.output_schema, Mapping):
                    raise TaskFileError(f"{where}.output_schema", "must be a JSON schema (a table; a dict in Python)")
                check_schema(step.output_schema, f"{where}.output_schema")
    return task


def _check_label_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise TaskFileError(where, "a label needs a name (any text up to 64 characters)")
    if name != " ".join(name.split()):
        raise TaskFileError(where, f"label {name!r} has leading, trailing, repeated or non-space whitespace")
    if len(name) > LABEL_MAX_CHARS:
        raise TaskFileError(where, f"label {name[:20]!r}… is {len(name)} characters; at most {LABEL_MAX_CHARS}")
    if any(ord(c) < 32 or c in "<>" for c in name):
        raise TaskFileError(where, f"label {name!r} contains a control character or < >")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _known(table: Mapping[str, Any], prefix: str, keys: Sequence[str]) -> None:
    for key in table:
        if key not in keys:
            raise TaskFileError(_join(prefix, key), f"unknown field; known fields here: {', '.join(keys)}")


def _text(table: Mapping[str, Any], key: str, *, prefix: str = "", required: bool = False,
          max_chars: int | None = None) -> str:
    value = table.get(key)
    where = _join(prefix, key)
    if value is None:
        if required:
            raise TaskFileError(where, "missing; this field is required")
        return ""
    if not isinstance(value, str):
        raise TaskFileError(where, f"must be text (a quoted string), got {type(value).__name__} {value!r}")
    if required and not value.strip():
        raise TaskFileError(where, "is empty; give it some text")
    if max_chars is not None and len(value) > max_chars:
        raise TaskFileError(where, f"is {len(value)} characters; at most {max_chars}")
    return value.strip() if required else value


def _int(table: Mapping[str, Any], key: str, prefix: str, *, low: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise TaskFileError(_join(prefix, key), f"must be a whole number of at least {low}, got {value!r}")
    return value


def _tables(data: Mapping[str, Any], key: str, *, required: bool = False) -> list[Mapping[str, Any]]:
    value = data.get(key)
    if value is None:
        if required:
            raise TaskFileError(key, f"missing; add [[{key}]] entries")
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise TaskFileError(key, f"must be an array of tables: write each entry as [[{key}]] with its fields below")
    return value


def _label(item: Mapping[str, Any], where: str) -> Label:
    _known(item, where, ("name", "description"))
    name = item.get("name")
    _check_label_name(name, f"{where}.name")
    return Label(str(name), _text(item, "description", prefix=where))


def _example(item: Mapping[str, Any], where: str) -> Example:
    _known(item, where, ("text", "label"))
    return Example(_text(item, "text", prefix=where, required=True), _text(item, "label", prefix=where, required=True))


def _voter(item: Mapping[str, Any], where: str) -> VoterSpec:
    _known(item, where, ("name", "model", "prompt", "effort", "count"))
    count = item.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise TaskFileError(f"{where}.count", f"count must be a whole number from 1 to {MAX_COUNT}, got {count!r}")
    name = _text(item, "name", prefix=where, max_chars=VOTER_NAME_MAX_CHARS) or None
    prompt = _text(item, "prompt", prefix=where) if "prompt" in item else None
    if prompt is not None and not prompt.strip():
        raise TaskFileError(f"{where}.prompt", "the prompt is empty; give it some text or leave it out")
    return VoterSpec(name=name, model=_text(item, "model", prefix=where) or None, prompt=prompt,
                     effort=_text(item, "effort", prefix=where) or None, count=count)


def _rules(table: Any, where: str) -> VoteRules:
    if not isinstance(table, Mapping):
        raise TaskFileError(where, "must be a table: write [vote] with quorum, tie_policy and low_agreement_below "
                                   "below it")
    _known(table, where, ("quorum", "tie_policy", "low_agreement_below", "stop", "stop_when_agree", "escalate_to",
                          "escalate_when"))
    low = table.get("low_agreement_below", 0.6)
    if not isinstance(low, int | float) or isinstance(low, bool) or not math.isfinite(low):
        raise TaskFileError(f"{where}.low_agreement_below", f"must be a number between 0 and 1, got {low!r}")
    escalate_to = _text(table, "escalate_to", prefix=where).strip() if "escalate_to" in table else None
    if "escalate_when" in table and escalate_to is None:
        raise TaskFileError(f"{where}.escalate_when", "needs escalate_to beside it: the model the close calls go to")
    return VoteRules(quorum=_int(table, "quorum", where, low=1),
                     tie_policy=_text(table, "tie_policy", prefix=where) or "none",
                     low_agreement_below=float(low),
                     stop=_text(table, "stop", prefix=where) or None,
                     stop_when_agree=_int(table, "stop_when_agree", where, low=1),
                     escalate_to=escalate_to,
                     escalate_when=_conditions_of(table.get("escalate_when", list(ESCALATE_CONDITIONS)),
                                                  f"{where}.escalate_when"))


def _conditions_of(value: Any, where: str) -> tuple[str, ...]:
    """`escalate_when` as written, in any case and with `_` or `-` for spaces ("low_agreement"), to the
    known conditions in their own order: two files that list them differently hash the same."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TaskFileError(where, f"must be a list of conditions, e.g. [\"tie\"]; use any of: {_conditions()}")
    given = []
    for i, item in enumerate(value):
        condition = " ".join(item.replace("_", " ").replace("-", " ").split()).casefold()
        if condition not in ESCALATE_CONDITIONS:
            raise TaskFileError(f"{where}[{i}]", f"unknown condition {item!r}; use any of: {_conditions()}")
        given.append(condition)
    return tuple(c for c in ESCALATE_CONDITIONS if c in given)


def _step(table: Any, where: str, *, stored: bool = False) -> Step:
    if not isinstance(table, Mapping):
        raise TaskFileError(where, f"must be a table: write [{where}] with instructions = \"...\" below it")
    _known(table, where, ("instructions", "model", "output_schema", "max_output_tokens", "effort"))
    schema = table.get("output_schema")
    if schema is not None:
        if not isinstance(schema, Mapping):
            raise TaskFileError(f"{where}.output_schema", "must be a table (a JSON schema written as TOML)")
        if not stored:  # a run stored before a schema rule still reads back; a new run is checked in full
            check_schema(dict(schema), f"{where}.output_schema")
    return Step(
        instructions=_text(table, "instructions", prefix=where, required=True),
        model=_text(table, "model", prefix=where) or None,
        output_schema=closed_schema(_plain(schema)) if schema is not None else None,
        max_output_tokens=_int(table, "max_output_tokens", where, low=1),
        effort=_text(table, "effort", prefix=where) or None,
    )


def _plain(value: Any) -> Any:
    """TOML tables as plain dicts and lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


JSON_TYPES = schema_subset.JSON_TYPES
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def closed_schema(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that does not say otherwise:
    structured outputs require it spelled out (as the SDK's own `transform_schema` adds it). A schema
    with `properties` and no `type` is an object too (the API reads it as one)."""
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: closed_schema(value) if key in ("items", "not", *_SUBSCHEMA_LISTS) else value
           for key, value in schema.items()}
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), Mapping):
            out[key] = {name: closed_schema(sub) for name, sub in schema[key].items()}
    kind = schema.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    is_object = "object" in kinds or (kind is None and "properties" in schema)
    if is_object and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def check_schema(schema: Mapping[str, Any], where: str) -> None:
    """Refuse (TaskFileError naming the keyword's path) a schema outside the JSON Schema subset
    structured outputs accept (`workflows.schema_subset`, from Anthropic's guide): a 400 on every call
    otherwise. Objects may leave `additionalProperties` out (`closed_schema` closes them). Replies are
    validated with `jsonschema` too."""
    problem = schema_subset.first_problem(schema)
    if problem is not None:
        path, message = problem
        raise TaskFileError(f"{where}.{path}" if path else where, message)


def task_from_json(data: Mapping[str, Any]) -> Task:
    """A stored task (`to_json()`) back as objects; the stored form always parses, also a run's stored
    before a rule that would now refuse it (see `check_vote_task(stored=True)`); planning a new run
    from it checks it in full again."""
    return _parse(data, stored=True)
