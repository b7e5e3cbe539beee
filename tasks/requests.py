"""What a slot asks the provider, and what its answer means: the request of a voter, a section or a
synthesis step, built from the stored run (config, text, and for a synthesis its inputs' outputs)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from models import OutcomeStatus, Session, WorkerOutcome, in_session, repo
from models.tables import OutcomeRole
from workflows.attachments import attachment_of, pages_text, stored_document
from workflows.calls import Attachment, CallRequest, CallResult
from workflows.dispatch import expects_cache_read, shares_prefix
from workflows.registry import supports_structured_outputs
from workflows.sectioning import (
    Part,
    Section,
    covered_sections,
    read_section_reply,
    section_request,
    synthesis_request,
)
from workflows.voting import Voter, read_answer, task_of, vote_request

FINAL, PARTIAL = "final", "partial"


def build_request(claim: repo.Claim, config: dict[str, Any], text: str) -> CallRequest:
    tags = (("run", claim.run_id), ("slot", str(claim.slot)))
    if claim.role is OutcomeRole.VOTER:
        document = run_document(config, text)
        voter = voter_of(claim, config)
        request = vote_request(voter, task_of(config), document, structured=supports_structured_outputs(voter.model),
                               tags=tags)
        if not shares_prefix([v["model"] for v in config["voters"]], claim.model):
            request = dataclasses.replace(request, cache_blocks=0)  # no voter could read it: skip the write
        counted = (config.get("dispatch") or {}).get("prefix_tokens", {}).get(claim.model)
        if counted is not None:
            request = dataclasses.replace(request, prefix_tokens=int(counted))
        return request
    if claim.role is OutcomeRole.PREWARM:
        # The request of the model's first voter, cut to `max_tokens: 0`: the same prefix (system, cache
        # blocks, output format) is written to the cache, nothing is generated.
        stored = next(v for v in config["voters"] if v["model"] == claim.model)
        voter = Voter(**stored)
        request = vote_request(voter, task_of(config), run_document(config, text),
                               structured=supports_structured_outputs(voter.model), tags=tags)
        counted = (config.get("dispatch") or {}).get("prefix_tokens", {}).get(claim.model)
        return dataclasses.replace(request, max_tokens=0,
                                   prefix_tokens=int(counted) if counted is not None else request.prefix_tokens)
    if claim.role in (OutcomeRole.SECTION, OutcomeRole.SYNTHESIS):
        return section_call_request(claim, config, text, tags)
    raise ValueError(f"no request builder for role {claim.role}")


@functools.lru_cache(maxsize=8)
def _blob(sha256: str) -> bytes:
    # Content-addressed, so never stale; a few entries, as a PDF may be tens of MB.
    return in_session(lambda s: repo.blob_data(s, sha256), write=False)


def stored_bytes(config: dict[str, Any], sha256: str) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, file_id) when the run uploaded these bytes through the Files API."""
    file_id = (config.get("files") or {}).get(sha256)
    if file_id:
        return None, str(file_id)
    return _blob(sha256), None


def run_document(config: dict[str, Any], text: str) -> str | Attachment:
    """The run's document as its calls send it: its text, or a PDF or image read natively."""
    entry = stored_document(config)
    if entry is None:
        return text
    data, file_id = stored_bytes(config, str(entry["blob"]))
    return attachment_of(entry, text=text, data=data, file_id=file_id)


def section_document(config: dict[str, Any], text: str, slot: int) -> str | Attachment:
    """What a map call reads: the document's text, or for a page-range section the PDF of its pages."""
    sections = config.get("page_sections") or []
    if not sections:
        return run_document(config, text)  # the text (its span is cut by the section), or an image whole
    section = sections[slot]
    entry = {**(stored_document(config) or {}), **section, "pages": section["last"] - section["first"] + 1,
             "title": f"pages {section['first']}-{section['last']}"}
    data, file_id = stored_bytes(config, str(section["blob"]))
    return attachment_of(entry, text=pages_text(text, section["first"], section["last"]), data=data,
                         file_id=file_id)


def interpret(claim: repo.Claim, config: dict[str, Any], result: CallResult) -> dict[str, Any]:
    """Outcome fields for a successful call."""
    fields: dict[str, Any] = {"raw_output": result.text, "error": None}
    if claim.role is OutcomeRole.VOTER:
        answer, abstained = read_answer(result.text, config["labels"], stop_reason=result.stop_reason,
                                        structured=supports_structured_outputs(claim.model))
        fields["answer"] = answer
        fields["error"] = abstained
        if expects_cache_read(config, claim.slot, claim.model) and not result.usage.estimated:
            # A follower of cache-aware dispatch: it was sent after its leader so as to read the prefix.
            fields["cache_miss"] = result.usage.cache_read_input_tokens == 0
    elif claim.role in (OutcomeRole.SECTION, OutcomeRole.SYNTHESIS):
        # A reply that is no result (a refusal; with an output schema, a cut, non-JSON or off-schema
        # reply) fails its slot with the reason; the call's usage is kept, it was paid.
        schema = step_of(config, claim.role).get("output_schema")
        _, problem = read_section_reply(result.text, schema, result.stop_reason)
        if problem is not None:
            fields["status"] = OutcomeStatus.FAILED
            fields["error"] = problem
    return fields


def voter_of(claim: repo.Claim, config: dict[str, Any]) -> Voter:
    stored = next((v for v in config.get("voters", []) if v.get("slot") == claim.slot), None)
    if stored is None:
        return Voter(claim.slot, claim.model, claim.prompt_variant or "direct", claim.temperature)
    return Voter(**{**stored, "model": claim.model})


def sections_of(config: dict[str, Any]) -> list[Section]:
    return [Section(i, title, start, end) for i, (start, end, title) in enumerate(config["sections"])]


def step_of(config: dict[str, Any], role: OutcomeRole) -> dict[str, Any]:
    """The map (section) or reduce (synthesis) step of a run: instructions, effort, output schema. A run
    stored before task files has only `task`, the instructions of both steps."""
    step = config.get("map" if role is OutcomeRole.SECTION else "reduce")
    if step:
        return dict(step)
    return {"instructions": config["task"], "effort": None,
            "output_schema": (config.get("map") or {}).get("output_schema")}


def section_call_request(claim: repo.Claim, config: dict[str, Any], text: str,
                         tags: tuple[tuple[str, str], ...]) -> CallRequest:
    sections = sections_of(config)
    step = step_of(config, claim.role)
    structured = supports_structured_outputs(claim.model)
    if claim.role is OutcomeRole.SECTION:
        return section_request(claim.model, step["instructions"], sections[claim.slot],
                               section_document(config, text, claim.slot), len(sections),
                               max_tokens=config["section_output_tokens"], output_schema=step.get("output_schema"),
                               structured=structured, effort=step.get("effort"), tags=tags)
    with Session() as s:
        by_slot = repo.outcomes_by_slot(s, claim.run_id)
    row = by_slot[claim.slot]
    parts = [Part(by_slot[i].title or f"part {i}", by_slot[i].raw_output or "") for i in row.inputs or []]
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(row.inputs or [], inputs_of(by_slot), succeeded(by_slot)))
        missing = [i + 1 for i in range(len(sections)) if i not in covered]
    return synthesis_request(claim.model, step["instructions"], parts, missing, final=final,
                             max_tokens=config["synthesis_output_tokens"], output_schema=step.get("output_schema"),
                             structured=structured, effort=step.get("effort"), tags=tags)


def inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}


