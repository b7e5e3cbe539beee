"""Sectioning in the Python API: split a document, one worker per section, then a synthesis.

    from chorus import load_task, submit_section, wait_for_run
    run_id = submit_section(open("bash.txt").read(), task="summarize")
    run_id = submit_section(open("notes.md").read(), task="translate to French")
    run_id = submit_section(open("bash.1").read(), task=load_task("examples/man-options.toml"))
    run = wait_for_run(run_id)          # run.result["synthesis"], run.outcomes (sections, steps)

`task` is either instructions for each section, in any words (a model then combines the parts), or a
`SectionTask` (a task file): the `map` instructions with an optional JSON `output_schema`, and a
`reduce` step or `merge = "concat"`. Keyword options override the task's fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema

from chorus.budget import estimate_section
from chorus.documents import split_pdf
from chorus.native import blob_of, check_readable, check_size, document_spec, load_document, needs_upload
from chorus.plans import submit
from chorus.vote import check_model_known
from models import Pattern, repo
from models.tables import OutcomeRole
from settings import Settings, get_settings
from workflows.attachments import document_config, page_texts, pages_text
from workflows.calls import Attachment
from workflows.cost import Cost
from workflows.documents import page_ranges, pdf_page_image_tokens_upper
from workflows.errors import ConfigError
from workflows.intake import check_text
from workflows.registry import context_window, effort_levels, max_output_tokens, model_info, pdf_page_limit
from workflows.runspec import SectionSpec, section_spec
from workflows.sectioning import (
    SECTION_OUTPUT_TOKENS,
    SYNTHESIS_OUTPUT_TOKENS,
    Section,
    Split,
    output_budget,
    split,
)
from workflows.taskfile import (
    DEFAULT_SUMMARIZE,
    NAME_MAX_CHARS,
    SectionTask,
    Step,
    TaskFileError,
    VoteTask,
    check_schema,
    check_section_task,
    closed_schema,
    summary_task,
    task_hash,
)
from workflows.tokens import attachment_tokens


@dataclass(frozen=True)
class SectionPlan:
    """A validated sectioning run, ready to store and send. Building one writes nothing.

    `task` is the task as it runs (the caller's options applied); `model` the map model (the
    section workers' queue) and `reduce_model` the synthesis model (None with a deterministic merge)."""

    text: str
    task: SectionTask
    how: Split
    sections: tuple[Section, ...]
    model: str
    reduce_model: str | None
    max_tokens: int
    overlap_tokens: int
    synthesis_budget_tokens: int
    external_id: str | None = None
    batch_id: str | None = None
    instructions: str | None = None  # the caller's free-text task, when it was given as text
    native: Attachment | None = None  # a PDF or an image Claude reads natively (`text` is its text layer)
    # A PDF split by pages: one Attachment per section, the PDF of exactly its pages.
    page_parts: tuple[Attachment, ...] = ()

    # The `chorus.plans.Plan` protocol: what budgets, batches, --dry-run and status read.
    @property
    def pattern(self) -> Pattern:
        return Pattern.SECTION

    @property
    def noun(self) -> str:
        return "section"

    @property
    def what(self) -> str:
        return "this sectioning run"

    @property
    def gold_label(self) -> str | None:
        return None  # a section run has no known answer to compare with

    def calls(self) -> int:
        return len(self.sections)

    def models(self) -> set[str]:
        return {m for m in (self.model, self.reduce_model) if m}

    def estimate(self, settings: Settings, *, count: bool = True, lane: str = "sync") -> Cost:
        return estimate_section(self, settings, count=count, lane=lane)

    @property
    def document(self) -> str | Attachment:
        return self.native if self.native is not None else self.text

    def section_document(self, index: int) -> str | Attachment:
        """What the map call of section `index` reads: the text, the PDF of its pages, or the image."""
        if self.page_parts:
            return self.page_parts[index]
        return self.document

    def uploads(self, settings: Settings) -> list[repo.BlobSpec]:
        """The bytes to upload once through the Files API rather than send inline in every call."""
        parts = self.page_parts or ((self.native,) if self.native is not None else ())
        return [blob_of(p) for p in parts if p.data is not None and needs_upload(len(p.data), settings)]

    def spec(self) -> SectionSpec:
        """The run as its workers will read it back (`workflows.runspec`): what builds every request."""
        return section_spec(self.config())

    def document_spec(self) -> repo.DocumentSpec | None:
        return document_spec(self.document, [blob_of(p) for p in self.page_parts])

    def config(self) -> dict[str, Any]:
        task = self.task
        map_schema = task.map.output_schema
        reduce = task.reduce
        reduce_schema = (reduce.output_schema or map_schema) if reduce else None
        return {
            # What runs stored before task files hold (a worker of that version reads it as instructions).
            "task": self.instructions or task.map.instructions,
            "task_name": task.name,
            "task_hash": task_hash(task),
            "spec": task.to_json(),
            "split": self.how.value,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "section_output_tokens": output_budget(task.map.max_output_tokens, default=SECTION_OUTPUT_TOKENS,
                                                   schema=map_schema, effort=task.map.effort),
            "synthesis_output_tokens": output_budget(reduce.max_output_tokens if reduce else None,
                                                     default=SYNTHESIS_OUTPUT_TOKENS, schema=reduce_schema,
                                                     effort=reduce.effort if reduce else None),
            "synthesis_budget_tokens": self.synthesis_budget_tokens,
            # The map budget fits each section and the schema, a cut JSON reply retried once with more
            # (workflows.runspec.SectionSpec.map_output_tokens); a step's own max_output_tokens is kept as is.
            "map_output_fit": map_schema is not None and task.map.max_output_tokens is None,
            "synthesis_output_fit": reduce is not None and reduce_schema is not None
                                    and reduce.max_output_tokens is None,
            "map": {"instructions": task.map.instructions, "model": self.model, "effort": task.map.effort,
                    "output_schema": map_schema},
            "reduce": None if reduce is None else {
                "instructions": reduce.instructions, "model": self.reduce_model, "effort": reduce.effort,
                "output_schema": reduce_schema},
            "merge": task.merge,
            # One section needs no synthesis, unless the result must take the reduce step's own shape.
            "synthesize_single": bool(reduce and reduce.output_schema is not None
                                      and reduce.output_schema != map_schema),
            "sections": [s.to_json() for s in self.sections],
            **({"document": document_config(self.native)} if self.native is not None else {}),
            **({"page_sections": [{"first": s.start, "last": s.end, "blob": p.sha256, "image_tokens": p.image_tokens}
                                  for s, p in zip(self.sections, self.page_parts, strict=True)]}
               if self.page_parts else {}),
        }

    def slots(self) -> list[repo.SlotSpec]:
        return [repo.SlotSpec(s.index, OutcomeRole.SECTION, self.model, title=s.title) for s in self.sections]


def instructions_task(instructions: str) -> SectionTask:
    """The task free-text instructions mean: each section does them, a model combines the parts.
    "summarize" is the built-in summary."""
    words = " ".join(instructions.split())
    if not words:
        raise ConfigError("the task is empty; say what to do with each section, e.g. task=\"summarize\" "
                          "or task=\"list every command-line option\"")
    if words.casefold() == "summarize":
        return summary_task(DEFAULT_SUMMARIZE)
    name = words if len(words) <= NAME_MAX_CHARS else words[:NAME_MAX_CHARS - 1] + "…"
    return summary_task(instructions.strip(), name=name)


def resolve_section_task(task: SectionTask | str, *, how: str | None = None, max_tokens: int | None = None,
                         overlap_tokens: int | None = None, model: str | None = None) -> SectionTask:
    """The task a sectioning run runs: the given one (instructions or a SectionTask) with the options
    applied over its fields (`how` the split, `max_tokens` and `overlap_tokens` the section size and
    overlap, `model` the model of both steps)."""
    if isinstance(task, VoteTask) or (isinstance(task, SectionTask) and task.pattern != "section"):
        raise ConfigError(f"the task {task.name!r} is a {task.pattern} task; run it with submit_vote "
                          f"(`chorus vote --task FILE`), or give a section task (pattern = \"section\")")
    if isinstance(task, str):
        resolved = instructions_task(task)
    elif isinstance(task, SectionTask):
        resolved = task
    else:
        raise ConfigError(f"task must be instructions for each section (str, e.g. \"summarize\") or a SectionTask "
                          f"(chorus.load_task(path) reads a task file), got {type(task).__name__}")
    for where, step in (("map", resolved.map), ("reduce", resolved.reduce)):
        if (step is not None or where == "map") and not (isinstance(step, Step) and isinstance(step.instructions, str)):
            raise TaskFileError(where, f"must be a Step(instructions=..., model=..., output_schema=...), got {step!r}")
    if how is not None:
        resolved = replace(resolved, split=_split(how).value)
    if max_tokens is not None:
        resolved = replace(resolved, max_tokens=_whole(max_tokens, "max_tokens", 1))
    if overlap_tokens is not None:
        resolved = replace(resolved, overlap=_whole(overlap_tokens, "overlap_tokens", 0))
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a model id (str), got {model!r}")
        resolved = replace(resolved, map=replace(resolved.map, model=model),
                           reduce=replace(resolved.reduce, model=model) if resolved.reduce else None)
    for where, step in (("map", resolved.map), ("reduce", resolved.reduce)):
        if step is not None and step.output_schema is not None:
            check_output_schema(step.output_schema, f"{where}.output_schema")
    resolved = replace(resolved, map=_closed(resolved.map),
                       reduce=_closed(resolved.reduce) if resolved.reduce else None)
    return check_section_task(resolved)


def _closed(step: Step) -> Step:
    return replace(step, output_schema=closed_schema(step.output_schema)) if step.output_schema else step


def check_output_schema(schema: Mapping[str, Any], where: str) -> None:
    """A schema a task built in Python passes the same checks as one from a file, and is a JSON schema."""
    if not isinstance(schema, Mapping):
        raise TaskFileError(where, "must be a JSON schema (a dict)")
    check_schema(schema, where)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise TaskFileError(where, f"is not a valid JSON schema: {exc.message}") from None


def plan_section(
    text: str | Attachment | Path,
    *,
    task: SectionTask | str = "summarize",
    how: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    overlap_tokens: int | None = None,
    external_id: str | None = None,
    batch_id: str | None = None,
    pages_per_section: int | None = None,
    settings: Settings | None = None,
) -> SectionPlan:
    """Check the inputs and split the document; bad input raises ConfigError naming the problem."""
    settings = settings or get_settings()
    if isinstance(text, Path):
        text = load_document(text, settings=settings)
    if not isinstance(text, str | Attachment):
        raise ConfigError(f"the document must be text (str), got {type(text).__name__}; decode bytes first, or pass "
                          f"a file as pathlib.Path or chorus.load_document(path)")
    native = text if isinstance(text, Attachment) else None
    body: str = native.text if native is not None else text  # type: ignore[assignment]
    resolved = resolve_section_task(task, how=how, max_tokens=max_tokens, overlap_tokens=overlap_tokens, model=model)
    if native is None:
        _, problem = check_text(body, settings.max_document_bytes)
        if problem is not None:
            raise ConfigError(f"the document cannot be sectioned: {problem}")
    elif Split(resolved.split) not in (Split.AUTO, Split.PAGES):
        raise ConfigError(f"a {native.kind.upper()} is split by pages: use --split pages (or auto), not "
                          f"{resolved.split!r}")
    map_model = resolved.map.model or settings.default_model
    reduce_model = (resolved.reduce.model or map_model) if resolved.reduce else None
    check_step_model("map", resolved.map, map_model, settings)
    if resolved.reduce is not None and reduce_model is not None:
        check_step_model("reduce", resolved.reduce, reduce_model, settings)
    budget = resolved.max_tokens or settings.section_tokens
    strategy = Split(resolved.split)
    if native is not None:
        sections, parts = split_native(native, map_model, pages_per_section, settings,
                                       max_tokens=resolved.max_tokens)
        return SectionPlan(body, resolved, Split.PAGES, sections, map_model, reduce_model, budget, 0,
                           settings.synthesis_budget_tokens, external_id, batch_id,
                           task if isinstance(task, str) else None, native, parts)
    if strategy is Split.PAGES:
        raise ConfigError("--split pages needs a PDF; this document is text (use auto, headings, paragraphs or tokens)")
    try:
        sections = tuple(split(body, strategy, max_tokens=budget, overlap_tokens=resolved.overlap))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return SectionPlan(body, resolved, strategy, tuple(sections), map_model, reduce_model, budget, resolved.overlap,
                       settings.synthesis_budget_tokens, external_id, batch_id,
                       task if isinstance(task, str) else None)


# Pages a section at most by default: the fastest split of a 300-page PDF in bench.documents (50 pages:
# 0.45x the one call's wall time, against 0.52x for 100 pages and 0.50x for 25 on 8 worker threads).
DEFAULT_PAGES_PER_SECTION = 50
# What a map call's prompt holds besides its pages (system, instructions, schema): kept free below the tier.
LONG_PROMPT_MARGIN = 4_000


def split_native(native: Attachment, model: str, pages_per_section: int | None, settings: Settings, *,
                 max_tokens: int | None = None) -> tuple[tuple[Section, ...], tuple[Attachment, ...]]:
    """A PDF cut into page ranges, each a PDF of its pages within the model's page limit (and
    `pages_per_section` when given) and within its context window; an image is one section.

    Without `pages_per_section`, a section also stays below the prompt size where the model's long-prompt
    tier starts (Haiku 5.5: above 100,000 tokens every token of the request costs 5x): the same pages cost
    a fifth as several calls below the tier as one call above it (BENCHMARKS.md, bench.documents). And
    without either `pages_per_section` or the task's own `max_tokens` (tokens a section), at most
    DEFAULT_PAGES_PER_SECTION pages: sectioning is for speed, and the 1M-context models would otherwise
    read a 300-page PDF in one call."""
    check_size(native, settings)
    check_readable(native, settings)
    if native.kind != "pdf" or native.data is None:
        return (Section(0, native.title or "the image", 0, 0),), ()
    limit = pdf_page_limit(model)
    if pages_per_section is not None:
        if not isinstance(pages_per_section, int) or isinstance(pages_per_section, bool) or pages_per_section < 1:
            raise ConfigError(f"pages_per_section must be a whole number of at least 1, got {pages_per_section!r}")
        limit = min(limit, pages_per_section)
    elif max_tokens is None:
        limit = min(limit, DEFAULT_PAGES_PER_SECTION)
    per_page = [pdf_page_image_tokens_upper() + attachment_tokens(
        Attachment(kind="pdf", media_type=native.media_type, text=t), model) for t in page_texts(native.text)]
    window = context_window(model)
    budget = int(window * 0.8) if window else None
    if max_tokens is not None and pages_per_section is None:
        budget = min(budget, max_tokens) if budget is not None else max_tokens
    info = model_info(model)
    tier = info.long_prompt if info is not None else None
    if tier is not None and pages_per_section is None:
        below = tier.above_prompt_tokens - LONG_PROMPT_MARGIN
        budget = min(budget, below) if budget is not None else below
    ranges = page_ranges(native.pages, limit, per_page_tokens=per_page, max_tokens=budget)
    datas = split_pdf(native.data, ranges, native.title or "document.pdf")
    parts = tuple(Attachment(kind="pdf", media_type=native.media_type, data=data,
                             title=f"{native.title or 'document'}, pages {a}-{b}",
                             text=pages_text(native.text, a, b), pages=b - a + 1,
                             image_tokens=(b - a + 1) * pdf_page_image_tokens_upper(),
                             sha256=hashlib.sha256(data).hexdigest())
                  for (a, b), data in zip(ranges, datas, strict=True))
    sections = tuple(Section(i, f"pages {a}-{b}", a, b) for i, (a, b) in enumerate(ranges))
    return sections, parts


def check_step_model(where: str, step: Step, model: str, settings: Settings) -> None:
    """The step's model is in the registry and has a queue, its effort (if any) is one the model offers,
    and its output budget fits what the model can write."""
    check_model_known(model, settings, f"{where}: ")
    if model not in settings.model_list:
        raise ConfigError(f"{where}: model {model} has no queue; add it to CHORUS_MODELS (now: {settings.models})")
    if step.effort is not None:
        levels = effort_levels(model)
        if not levels:
            raise ConfigError(f"{where}: {model} takes no effort setting; remove `effort` from [{where}]")
        if step.effort not in levels:
            raise ConfigError(f"{where}: effort {step.effort!r} is not offered by {model}; "
                              f"use one of: {', '.join(levels)}")
    ceiling = max_output_tokens(model)
    if step.max_output_tokens is not None and ceiling is not None and step.max_output_tokens > ceiling:
        raise ConfigError(f"{where}: max_output_tokens {step.max_output_tokens} is more than {model} can write "
                          f"({ceiling}); lower it")


def _split(how: Any) -> Split:
    try:
        return Split(how)
    except ValueError:
        raise ConfigError(f"unknown split {how!r}; use one of {', '.join(s.value for s in Split)}") from None


def _whole(value: Any, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be a whole number of at least {low}, got {value!r}")
    return value


def submit_section(text: str | Attachment | Path, *, task: SectionTask | str = "summarize",
                   settings: Settings | None = None, **options: Any) -> str:
    """Validate, store and send a sectioning run; returns the run id (`wait_for_run` waits).

    `task`: instructions for each section ("summarize", "translate to French", ...) or a SectionTask
    (`chorus.load_task(path)`); options (how, max_tokens, overlap_tokens, model, external_id,
    batch_id) override the task's fields."""
    settings = settings or get_settings()
    return submit(plan_section(text, task=task, settings=settings, **options), settings=settings)


def submit_section_plan(plan: SectionPlan, *, settings: Settings | None = None) -> str:
    """Store and send a planned sectioning run: `chorus.plans.submit`, under the name the API has always had."""
    return submit(plan, settings=settings)
