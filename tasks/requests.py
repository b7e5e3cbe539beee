"""What a slot asks the provider, and what its answer means: the request of a voter, a section or a
synthesis step, built from the stored run (config, text, and for a synthesis its inputs' outputs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from models import OutcomeStatus, Session, WorkerOutcome, repo
from models.tables import OutcomeRole
from workflows.calls import CallRequest, CallResult
from workflows.dispatch import shares_prefix
from workflows.sectioning import Part, Section, covered_sections, section_request, synthesis_request
from workflows.voting import Voter, parse_answer, vote_request

FINAL, PARTIAL = "final", "partial"


def build_request(claim: repo.Claim, config: dict[str, Any], text: str) -> CallRequest:
    tags = (("run", claim.run_id), ("slot", str(claim.slot)))
    if claim.role is OutcomeRole.VOTER:
        voter = Voter(claim.slot, claim.model, claim.prompt_variant or "direct", claim.temperature)
        request = vote_request(voter, config["labels"], text, tags=tags)
        if not shares_prefix([v["model"] for v in config["voters"]], claim.model):
            request = dataclasses.replace(request, cache_blocks=0)  # no voter could read it: skip the write
        return request
    if claim.role in (OutcomeRole.SECTION, OutcomeRole.SYNTHESIS):
        return section_call_request(claim, config, text, tags)
    raise ValueError(f"no request builder for role {claim.role}")


def interpret(claim: repo.Claim, config: dict[str, Any], result: CallResult) -> dict[str, Any]:
    """Outcome fields for a successful call."""
    fields: dict[str, Any] = {"raw_output": result.text, "error": None}
    if claim.role is OutcomeRole.VOTER:
        answer = parse_answer(result.text, config["labels"])
        fields["answer"] = answer
        if answer is None:
            fields["error"] = "abstained: the reply named no allowed label"
    return fields


def sections_of(config: dict[str, Any]) -> list[Section]:
    return [Section(i, title, start, end) for i, (start, end, title) in enumerate(config["sections"])]


def section_call_request(claim: repo.Claim, config: dict[str, Any], text: str,
                         tags: tuple[tuple[str, str], ...]) -> CallRequest:
    sections = sections_of(config)
    if claim.role is OutcomeRole.SECTION:
        return section_request(claim.model, config["task"], sections[claim.slot], text, len(sections),
                               max_tokens=config["section_output_tokens"], tags=tags)
    with Session() as s:
        by_slot = repo.outcomes_by_slot(s, claim.run_id)
    step = by_slot[claim.slot]
    parts = [Part(by_slot[i].title or f"part {i}", by_slot[i].raw_output or "") for i in step.inputs or []]
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(step.inputs or [], inputs_of(by_slot), succeeded(by_slot)))
        missing = [i + 1 for i in range(len(sections)) if i not in covered]
    return synthesis_request(claim.model, config["task"], parts, missing, final=final,
                             max_tokens=config["synthesis_output_tokens"], tags=tags)


def inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}


