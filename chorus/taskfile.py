"""Task files: read a TOML file into the task objects of `workflows.taskfile`.

    from chorus import load_task, submit_vote
    task = load_task("examples/ticket-urgency.toml")
    run_id = submit_vote("Our whole team is locked out since the update.", task=task)

Every problem is a `TaskFileError` (a ConfigError) naming the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from chorus.budget import call_cost
from chorus.native import needs_upload
from chorus.orchestrate import plan_orchestrate
from chorus.section import plan_section
from chorus.vote import check_panel_models
from settings import Settings, get_settings
from workflows.attachments import page_texts
from workflows.calls import Attachment, CallRequest
from workflows.cost import Cost, total
from workflows.escalation import check_escalation, escalation_request
from workflows.orchestrating import Subtask, SubtaskPlan, part_label
from workflows.runspec import VoteSpec
from workflows.sectioning import Part
from workflows.taskfile import OrchestrateTask, SectionTask, Task, TaskFileError, VoteTask, parse_task, task_hash
from workflows.tokens import attachment_tokens, estimate_tokens
from workflows.voting import resolve_panel

MAX_TASK_FILE_BYTES = 1_000_000


def load_task(path: str | os.PathLike[str]) -> Task:
    """The task in a TOML file; a bad file raises TaskFileError naming the field and how to fix it."""
    if not isinstance(path, str | os.PathLike):
        raise TaskFileError("", f"give the task file's path (str or Path), got {type(path).__name__}")
    file = Path(path)
    source = str(file)
    if file.is_dir():
        raise TaskFileError("", "is a folder; give the path of a .toml task file", source)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise TaskFileError("", "no such file; check the path (task files are TOML, e.g. examples/*.toml)",
                            source) from None
    except OSError as exc:
        raise TaskFileError("", f"cannot be read: {exc.strerror or exc}", source) from None
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise TaskFileError("", f"is {len(raw):,} bytes; a task file holds at most {MAX_TASK_FILE_BYTES:,}", source)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TaskFileError("", f"is not UTF-8 text (byte {exc.start}); save it as UTF-8", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError("", f"is not valid TOML: {exc}", source) from None
    return parse_task(data, source=source)


def load_vote_task(path: str | os.PathLike[str]) -> VoteTask:
    task = load_task(path)
    if not isinstance(task, VoteTask):
        raise TaskFileError("pattern", f"is {task.pattern!r}; this command needs a vote task (pattern = \"vote\")",
                            str(path))
    return task


def load_section_task(path: str | os.PathLike[str]) -> SectionTask:
    task = load_task(path)
    if not isinstance(task, SectionTask):
        raise TaskFileError("pattern", f"is {task.pattern!r}; this command needs a section task "
                                       f"(pattern = \"section\")", str(path))
    return task


def looks_like_task_file(value: str) -> bool:
    """`--task` of `chorus section` takes a file or free instructions: a `.toml` name or an existing file
    is a file (so a missing `tasks/x.toml` is reported as missing, not sent to the model as instructions)."""
    return value.strip().lower().endswith(".toml") or Path(value).is_file()


# The document `task check` shows and prices when it is given none: about 500 tokens.
SAMPLE_DOCUMENT = "A stand-in for your document, about five hundred tokens long. " * 32


def describe_task(task: Task, *, settings: Settings | None = None, sample: str | Attachment | None = None
                  ) -> dict[str, Any]:
    """What `chorus task check` prints: the resolved task, its hash, each call's exact prompt and an
    estimated cost per document (local token estimate; output counted at max_tokens, an upper bound;
    no cache discount). Raises ConfigError when a model has no queue or an effort is not offered."""
    settings = settings or get_settings()
    sent: str | Attachment = sample if sample is not None else SAMPLE_DOCUMENT
    document = sent.text if isinstance(sent, Attachment) else sent
    described: dict[str, Any] = {"name": task.name, "pattern": task.pattern, "hash": task_hash(task),
                                 "task": task.to_json(), "sample_document_tokens": estimate_tokens(document)}
    if isinstance(sent, Attachment):
        described["sample_document"] = describe_attachment(sent, settings)
    if isinstance(task, VoteTask):
        panel = resolve_panel(task, settings.default_model)
        check_panel_models(panel, settings)
        check_escalation(task, panel, settings.model_list)
        spec = VoteSpec(task, tuple(panel), {}, None)
        calls = [(f"voter {voter.slot}: {voter.label}", spec.voter_request(voter, sent)) for voter in panel]
        escalation = escalation_request(spec, sent)
        if escalation is not None:  # sent only when the vote is close; counted, as the budget counts it
            calls.append((f"escalation (when the vote is close): {escalation.model}", escalation))
        described["panel"] = [{"slot": v.slot, "name": v.label, "model": v.model, "effort": v.effort,
                               "prompt": v.prompt if v.prompt is not None else f"built-in variant {v.variant!r}"}
                              for v in panel]
    elif isinstance(task, SectionTask):
        calls = section_calls(task, sent, settings)
    else:
        calls, estimate = orchestrate_calls(task, sent, settings)
    placeholder = f"[the document: ~{estimate_tokens(document)} tokens]"
    described["calls"] = [{"name": name, "model": r.model, "system": r.system, "user": list(r.user_blocks),
                           "user_shown": [_elide(b, document, placeholder) for b in r.user_blocks],
                           "output_schema": r.output_schema, "effort": r.effort, "max_tokens": r.max_tokens,
                           "attachments": [{"kind": a.kind, "title": a.title, "pages": a.pages,
                                            "tokens_at_most": attachment_tokens(a, r.model)} for a in r.attachments]}
                          for name, r in calls]
    # The budget's upper bound of each call (chorus.budget); an orchestrate run's of every call it may make.
    cost = estimate if isinstance(task, OrchestrateTask) else total(call_cost(r) for _, r in calls)
    described["estimated_cost_per_document"] = cost.to_json()
    described["cost_note"] = (f"estimate for a document of ~{estimate_tokens(document)} tokens: an upper bound "
                              f"(token counts bounded, a marked prefix at the cache-write price, output at "
                              f"max_tokens, no cache read)"
                              + ("; a section task: the first section's map call and the synthesis" if
                                 isinstance(task, SectionTask) else "")
                              + (f"; an orchestrate task: the planner, max_workers = {task.plan.max_workers} workers "
                                 f"(one shown, on a sample subtask) and their synthesis" if
                                 isinstance(task, OrchestrateTask) else "")
                              + ("; every voter counted, while stop = \"decided\" asks only as many as the vote "
                                 "needs" if isinstance(task, VoteTask) and task.vote.adaptive else ""))
    return described


def describe_attachment(document: Attachment, settings: Settings) -> dict[str, Any]:
    """What a PDF or an image turns into: how it is sent, its pages and which have no text layer."""
    texts = page_texts(document.text) if document.kind == "pdf" else []
    return {"kind": document.kind, "media_type": document.media_type, "title": document.title,
            "bytes": len(document.data or b""), "pages": document.pages,
            "pages_without_text": [n for n, t in enumerate(texts, 1) if not t.strip()],
            "text_layer_tokens": estimate_tokens(document.text),
            "sent_as": ("a Files API upload (file_id), once per run" if document.data is not None
                        and needs_upload(len(document.data), settings) else
                        f"an {document.kind} block" if document.kind == "image" else "a document block (base64)"),
            "offline_reads": ("its text layer" if document.has_text else
                              "nothing: no text layer (needs a Claude model that reads images)")}


def orchestrate_calls(task: OrchestrateTask, document: str | Attachment, settings: Settings
                      ) -> tuple[list[tuple[str, CallRequest]], Cost]:
    """The planner's call, one worker's (every worker sends the same prompt around its own subtask, here a
    sample one) and the final synthesis over `max_workers` placeholder results; and the estimate of the
    whole run (`chorus.budget.estimate_orchestrate`: every call it may make)."""
    plan = plan_orchestrate(document, task=task, settings=settings)
    spec = plan.spec()
    n = plan.max_workers
    sample = SubtaskPlan(tuple(Subtask(f"<subtask {i + 1}'s title>", f"<subtask {i + 1}'s instructions, from the "
                                       "planner>") for i in range(n)))
    parts = [Part(part_label(i, sample.subtasks[i].title), f"<the result of subtask {i + 1}>") for i in range(n)]
    calls = [("plan (lists at most max_workers subtasks)", spec.planner_request(plan.document)),
             (f"work, subtask 1 of at most {n}", spec.worker_request(sample, 0, plan.document)),
             ("reduce (final synthesis)", spec.synthesis_request(spec.reduce_model, parts, final=True))]
    return calls, plan.estimate(settings)


def section_calls(task: SectionTask, document: str | Attachment, settings: Settings
                  ) -> list[tuple[str, CallRequest]]:
    """The first map call of the sample (every section sends the same prompt around its own text) and,
    when a model reduces, the final synthesis over placeholder parts."""
    plan = plan_section(document, task=task, settings=settings)
    spec = plan.spec()
    calls = [(f"map, section 1 of {len(plan.sections)}",
              spec.section_request(plan.model, 0, plan.section_document(0)))]
    if plan.task.reduce is not None and plan.reduce_model is not None:
        parts = [Part(f"section {s.index + 1}: {s.title}", f"<the reply of section {s.index + 1}>")
                 for s in plan.sections]
        calls.append(("reduce (final synthesis)", spec.synthesis_request(plan.reduce_model, parts, final=True)))
    return calls


def _elide(block: str, document: str, placeholder: str) -> str:
    """A prompt block with the document (or the one section of it the block holds) shown as a placeholder."""
    if document and document in block:
        return block.replace(document, placeholder)
    inner = block.removeprefix("<section>\n").removesuffix("\n</section>\n")
    if inner != block and inner.strip() and inner in document:
        return block.replace(inner, placeholder.replace("the document", "the section"))
    return block
