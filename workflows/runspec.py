"""What a stored run asks, typed (pure): a run's config (the JSON a plan stores and a worker reads) as a
`VoteSpec`, a `SectionSpec` or an `OrchestrateSpec`, and the ONE place a call's request is built from it.

A plan (chorus.vote / chorus.section) writes the config; the worker (tasks/requests.py), the batch lane,
the budget's estimate, `chorus task check` and the fit checks all read it back through `spec_of` and ask
the spec for the request of a slot, so what is estimated and checked is what is sent. The document a
request reads is given by the caller: the text, a PDF or image read natively (an `Attachment`), or for a
page-range section the PDF of its pages (`SectionSpec.page_section`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workflows.attachments import PAGE_SEPARATOR, attachment_of, pages_text, stored_document
from workflows.calls import Attachment, CallRequest
from workflows.dispatch import shares_prefix
from workflows.orchestrating import (
    WORK_OUTPUT_TOKENS,
    SubtaskPlan,
    orchestrate_synthesis_request,
    plan_output_tokens,
    planner_request,
    read_plan,
    worker_request,
)
from workflows.registry import max_output_tokens, supports_structured_outputs
from workflows.sectioning import (
    SYNTHESIS_OUTPUT_TOKENS,
    Part,
    Section,
    fitted_output_budget,
    fitted_synthesis_budget,
    output_budget,
    retry_output_budget,
    section_request,
    synthesis_request,
)
from workflows.taskfile import OrchestrateTask, VoteTask
from workflows.voting import Voter, task_of, vote_request

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DocumentSpec:
    """A document read natively (`config["document"]`): its kind, media type, blob (sha256), pages."""

    entry: Mapping[str, Any]
    files: Mapping[str, str] = field(default_factory=dict)  # blob sha256 -> Files API id

    @property
    def blob(self) -> str:
        return str(self.entry["blob"])

    def attachment(self, text: str, data: bytes | None) -> Attachment:
        """The Attachment a call sends: by its Files API id when the run uploaded it, else its bytes."""
        return attachment_of(self.entry, text=text, data=data, file_id=self.files.get(self.blob))


@dataclass(frozen=True)
class VoteSpec:
    task: VoteTask
    voters: tuple[Voter, ...]
    prefix_tokens: Mapping[str, int]  # the shared prefix per model as count_tokens counted it
    document: DocumentSpec | None

    def voter(self, slot: int, model: str | None = None, variant: str | None = None,
              temperature: float | None = None) -> Voter:
        stored = next((v for v in self.voters if v.slot == slot), None)
        if stored is None:  # a run stored before voters were recorded: the claim's labels
            return Voter(slot, model or "", variant or "direct", temperature)
        return stored if model is None or model == stored.model else replace(stored, model=model)

    def voter_request(self, voter: Voter, document: str | Attachment, tags: Tags = ()) -> CallRequest:
        """A voter's call: the shared prefix is marked for the cache only when another voter of the same
        model can read it; its size as the API counted it, where it was counted."""
        request = vote_request(voter, self.task, document, structured=supports_structured_outputs(voter.model),
                               tags=tags)
        replace: dict[str, Any] = {}
        if not shares_prefix([v.model for v in self.voters], voter.model):
            replace["cache_blocks"] = 0  # no voter could read it: skip the write
        if voter.model in self.prefix_tokens:
            replace["prefix_tokens"] = self.prefix_tokens[voter.model]
        return _replace(request, replace)

    def prewarm_request(self, model: str, document: str | Attachment, tags: Tags = ()) -> CallRequest:
        """The request of the model's first voter cut to `max_tokens: 0`: the same prefix (system, cache
        blocks, output format) is written to the cache, nothing is generated."""
        voter = next(v for v in self.voters if v.model == model)
        request = vote_request(voter, self.task, document, structured=supports_structured_outputs(model), tags=tags)
        return _replace(request, {"max_tokens": 0, **({"prefix_tokens": self.prefix_tokens[model]}
                                                       if model in self.prefix_tokens else {})})


@dataclass(frozen=True)
class StepSpec:
    instructions: str
    effort: str | None
    output_schema: Mapping[str, Any] | None


@dataclass(frozen=True)
class SectionSpec:
    sections: tuple[Section, ...]
    map: StepSpec
    reduce: StepSpec
    section_output_tokens: int
    synthesis_output_tokens: int
    page_sections: tuple[Mapping[str, Any], ...]
    document: DocumentSpec | None
    # The map budget fits each section and its output schema, and a cut JSON reply is retried once with a
    # larger one (`map_output_tokens`); False for a step with its own max_output_tokens, and for runs stored
    # before it (they keep `section_output_tokens` for every call).
    map_output_fit: bool = False
    # The same for a synthesis with an output schema: its budget fits its parts (`fitted_synthesis_budget`).
    synthesis_output_fit: bool = False

    def section_document(self, index: int, text: str, data: bytes | None) -> str | Attachment:
        """What the map call of section `index` reads: the text (its span is cut by the request), the
        image whole, or the PDF of the section's pages (`data` the bytes of its blob,
        `page_section(index)["blob"]`)."""
        if self.page_sections:
            section = self.page_sections[index]
            first, last = int(section["first"]), int(section["last"])
            entry = {**(self.document.entry if self.document else {}), **section, "pages": last - first + 1,
                     "title": f"pages {first}-{last}"}
            files = self.document.files if self.document else {}
            return attachment_of(entry, text=pages_text(text, first, last), data=data,
                                 file_id=files.get(str(section["blob"])))
        if self.document is not None:
            return self.document.attachment(text, data)
        return text

    def blob_of(self, index: int) -> str | None:
        """The blob a map call reads (None for text)."""
        if self.page_sections:
            return str(self.page_sections[index]["blob"])
        return self.document.blob if self.document is not None else None

    def section_request(self, model: str, index: int, document: str | Attachment, tags: Tags = ()) -> CallRequest:
        step = self.map
        return section_request(model, step.instructions, self.sections[index], document, len(self.sections),
                               max_tokens=self.map_output_tokens(model, index, document),
                               output_schema=step.output_schema,
                               structured=supports_structured_outputs(model), effort=step.effort, tags=tags)

    def map_output_tokens(self, model: str, index: int, document: str | Attachment) -> int:
        """The max_tokens of section `index`'s map call: `section_output_tokens`, raised to fit the section
        in the output schema's shape when chorus chooses the budget (`fitted_output_budget`)."""
        schema = self.map.output_schema
        if not self.map_output_fit or schema is None:
            return self.section_output_tokens
        text = document.text if isinstance(document, Attachment) else self.sections[index].text(document)
        return fitted_output_budget(self.section_output_tokens, schema, text, model, max_output_tokens(model))

    def retry_request(self, request: CallRequest) -> CallRequest | None:
        """The one retry of a map call whose JSON reply was cut at max_tokens: the same request with a larger
        budget (`retry_output_budget`, within the model's max output); None when chorus did not choose the
        budget (the step set max_output_tokens) or it is already the model's most."""
        if not self.map_output_fit or self.map.output_schema is None:
            return None
        wider = retry_output_budget(request.max_tokens, max_output_tokens(request.model))
        return replace(request, max_tokens=wider) if wider is not None else None

    def synthesis_request(self, model: str, parts: Sequence[Part], missing: Sequence[int] = (), *, final: bool,
                          tags: Tags = ()) -> CallRequest:
        step = self.reduce
        budget = _synthesis_budget(step, self.synthesis_output_tokens, self.synthesis_output_fit, parts, model)
        return synthesis_request(model, step.instructions, parts, missing, final=final,
                                 max_tokens=budget, output_schema=step.output_schema,
                                 structured=supports_structured_outputs(model), effort=step.effort, tags=tags)


@dataclass(frozen=True)
class OrchestrateSpec:
    """An orchestrate run (`workflows.orchestrating`): the planner's step and its `max_workers`, the
    workers' step, the synthesis, each with its model and output budget. Its config (`config()`, read
    back by `orchestrate_spec`) is what the run stores; the plan the planner answers is stored apart, and
    a worker's request is built from it (`SubtaskPlan`)."""

    plan: StepSpec
    work: StepSpec
    reduce: StepSpec
    max_workers: int
    plan_model: str
    work_model: str
    reduce_model: str
    plan_output_tokens: int
    work_output_tokens: int
    synthesis_output_tokens: int
    synthesis_budget_tokens: int
    # The synthesis budget fits its parts (`fitted_synthesis_budget`) for a reduce step with an output schema
    # and no max_output_tokens of its own, as a section run's does.
    synthesis_output_fit: bool = False
    document: DocumentSpec | None = None

    @property
    def section_output_tokens(self) -> int:
        """A worker's output budget, under the name the synthesis bound reads for a part's
        (`chorus.budget.synthesis_costs`): a worker's result is a part as a section's reply is."""
        return self.work_output_tokens

    def document_of(self, text: str, data: bytes | None) -> str | Attachment:
        """What the planner and the workers read: the text, or the PDF or image (`data` its blob's bytes)."""
        return self.document.attachment(text, data) if self.document is not None else text

    def planner_request(self, document: str | Attachment, tags: Tags = ()) -> CallRequest:
        step = self.plan
        return planner_request(self.plan_model, step.instructions, document, self.max_workers,
                               max_tokens=self.plan_output_tokens,
                               structured=supports_structured_outputs(self.plan_model), effort=step.effort, tags=tags)

    def read_plan(self, text: str, stop_reason: str | None, no_answer: str | None = None
                  ) -> tuple[SubtaskPlan | None, str | None]:
        """The planner's reply as the plan the workers run, or why it is none (`orchestrating.read_plan`)."""
        return read_plan(text, stop_reason, self.max_workers, no_answer)

    def worker_request(self, plan: SubtaskPlan, index: int, document: str | Attachment, tags: Tags = (),
                       model: str | None = None) -> CallRequest:
        """The call of subtask `index` (0-based) of the plan; `model` the worker's (the work step's by default)."""
        model = model or self.work_model
        step = self.work
        return worker_request(model, step.instructions, plan.subtasks[index], index, len(plan.subtasks), document,
                              max_tokens=self.work_output_tokens, output_schema=step.output_schema,
                              structured=supports_structured_outputs(model), effort=step.effort, tags=tags)

    def prewarm_request(self, plan: SubtaskPlan, document: str | Attachment, tags: Tags = ()) -> CallRequest:
        """The first worker's request cut to `max_tokens: 0`: it writes the workers' shared prefix to the
        cache before they fan out, and generates nothing."""
        return replace(self.worker_request(plan, 0, document, tags), max_tokens=0)

    def synthesis_request(self, model: str, parts: Sequence[Part], missing: Sequence[int] = (), *, final: bool,
                          tags: Tags = ()) -> CallRequest:
        step = self.reduce
        budget = _synthesis_budget(step, self.synthesis_output_tokens, self.synthesis_output_fit, parts, model)
        return orchestrate_synthesis_request(model, step.instructions, parts, missing, final=final, max_tokens=budget,
                                             output_schema=step.output_schema,
                                             structured=supports_structured_outputs(model), effort=step.effort,
                                             tags=tags)

    def config(self) -> dict[str, Any]:
        """The spec's part of a run's config (the plan adds the task's name, hash and resolved JSON, and the
        document's entry)."""
        return {
            "plan": {"instructions": self.plan.instructions, "model": self.plan_model, "effort": self.plan.effort,
                     "max_workers": self.max_workers, "output_tokens": self.plan_output_tokens},
            "work": {"instructions": self.work.instructions, "model": self.work_model, "effort": self.work.effort,
                     "output_schema": self.work.output_schema, "output_tokens": self.work_output_tokens},
            "reduce": {"instructions": self.reduce.instructions, "model": self.reduce_model,
                       "effort": self.reduce.effort, "output_schema": self.reduce.output_schema,
                       "output_tokens": self.synthesis_output_tokens, "output_fit": self.synthesis_output_fit},
            "synthesis_budget_tokens": self.synthesis_budget_tokens,
        }


def _replace(request: CallRequest, values: Mapping[str, Any]) -> CallRequest:
    return replace(request, **values) if values else request


def _document(config: Mapping[str, Any]) -> DocumentSpec | None:
    entry = stored_document(config)
    return DocumentSpec(entry, dict(config.get("files") or {})) if entry is not None else None


def vote_spec(config: Mapping[str, Any]) -> VoteSpec:
    counted = (config.get("dispatch") or {}).get("prefix_tokens", {})
    return VoteSpec(task=task_of(config), voters=tuple(Voter(**v) for v in config.get("voters", [])),
                    prefix_tokens={m: int(n) for m, n in counted.items()}, document=_document(config))


def _step(config: Mapping[str, Any], name: str) -> StepSpec:
    """The map or reduce step; a run stored before task files has only `task`, the instructions of both."""
    step = config.get(name)
    if step:
        return StepSpec(step["instructions"], step.get("effort"), step.get("output_schema"))
    return StepSpec(config["task"], None, (config.get("map") or {}).get("output_schema"))


def section_spec(config: Mapping[str, Any]) -> SectionSpec:
    return SectionSpec(
        sections=tuple(Section(i, title, start, end) for i, (start, end, title) in enumerate(config["sections"])),
        map=_step(config, "map"), reduce=_step(config, "reduce"),
        section_output_tokens=int(config["section_output_tokens"]),
        synthesis_output_tokens=int(config["synthesis_output_tokens"]),
        page_sections=tuple(config.get("page_sections") or ()), document=_document(config),
        map_output_fit=bool(config.get("map_output_fit")),
        synthesis_output_fit=bool(config.get("synthesis_output_fit")))


def orchestrate_spec_of(task: OrchestrateTask, *, plan_model: str, work_model: str, reduce_model: str,
                        synthesis_budget_tokens: int, document: DocumentSpec | None = None) -> OrchestrateSpec:
    """The spec of a new orchestrate run of `task` on these (resolved) models: each step's output budget
    its own max_output_tokens, else chosen for it (the planner's fits `max_workers` subtasks; a worker's
    and the synthesis' are a section synthesis' defaults, raised for a JSON reply and for effort), each at
    most what its model can write."""
    plan, work, reduce = task.plan, task.work, task.reduce

    def capped(budget: int, model: str) -> int:
        ceiling = max_output_tokens(model)
        return min(budget, ceiling) if ceiling is not None else budget

    return OrchestrateSpec(
        plan=StepSpec(plan.instructions, plan.effort, None), work=StepSpec(work.instructions, work.effort,
                                                                           work.output_schema),
        reduce=StepSpec(reduce.instructions, reduce.effort, reduce.output_schema), max_workers=plan.max_workers,
        plan_model=plan_model, work_model=work_model, reduce_model=reduce_model,
        plan_output_tokens=plan_output_tokens(plan.max_workers, step_max=plan.max_output_tokens, effort=plan.effort,
                                              ceiling=max_output_tokens(plan_model)),
        work_output_tokens=capped(output_budget(work.max_output_tokens, default=WORK_OUTPUT_TOKENS,
                                                schema=work.output_schema, effort=work.effort), work_model),
        synthesis_output_tokens=capped(output_budget(reduce.max_output_tokens, default=SYNTHESIS_OUTPUT_TOKENS,
                                                     schema=reduce.output_schema, effort=reduce.effort), reduce_model),
        synthesis_budget_tokens=synthesis_budget_tokens,
        synthesis_output_fit=reduce.output_schema is not None and reduce.max_output_tokens is None,
        document=document)


def orchestrate_spec(config: Mapping[str, Any]) -> OrchestrateSpec:
    plan, work, reduce = config["plan"], config["work"], config["reduce"]
    return OrchestrateSpec(
        plan=StepSpec(plan["instructions"], plan.get("effort"), None),
        work=StepSpec(work["instructions"], work.get("effort"), work.get("output_schema")),
        reduce=StepSpec(reduce["instructions"], reduce.get("effort"), reduce.get("output_schema")),
        max_workers=int(plan["max_workers"]), plan_model=plan["model"], work_model=work["model"],
        reduce_model=reduce["model"], plan_output_tokens=int(plan["output_tokens"]),
        work_output_tokens=int(work["output_tokens"]), synthesis_output_tokens=int(reduce["output_tokens"]),
        synthesis_budget_tokens=int(config["synthesis_budget_tokens"]),
        synthesis_output_fit=bool(reduce.get("output_fit")), document=_document(config))


__all__ = ["PAGE_SEPARATOR", "DocumentSpec", "OrchestrateSpec", "SectionSpec", "StepSpec", "VoteSpec",
           "orchestrate_spec", "orchestrate_spec_of", "section_spec", "vote_spec"]


def _synthesis_budget(step: StepSpec, budget: int, fit: bool, parts: Sequence[Part], model: str) -> int:
    """A synthesis step's output budget: `budget`, or, when chorus fits it (`fit`) to a schema, the budget
    its parts' structured output needs (`fitted_synthesis_budget`, within the model's max output)."""
    if fit and step.output_schema is not None:
        return fitted_synthesis_budget(budget, step.output_schema, parts, model, max_output_tokens(model))
    return budget
