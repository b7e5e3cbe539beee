"""What a slot asks the provider, and what its answer means: the request of a voter, a section or a
synthesis step, built from the stored run by its spec (`workflows.runspec`, the one request builder):
its config, its text, its document's bytes (a PDF or an image read natively) and, for a synthesis, its
inputs' outputs."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from models import OutcomeStatus, Session, WorkerOutcome, in_session, repo
from models.tables import OutcomeRole
from workflows.calls import CallRequest, CallResult
from workflows.dispatch import expects_cache_read
from workflows.registry import supports_structured_outputs
from workflows.runspec import SectionSpec, StepSpec, VoteSpec, section_spec, vote_spec
from workflows.sectioning import Part, covered_sections, read_section_reply
from workflows.voting import read_answer

FINAL, PARTIAL = "final", "partial"

# A run's spec, parsed once per process for the config it was parsed from (tasks.calls reads a run's
# config once per process, and it never changes once its calls are sent).
_SPECS: OrderedDict[str, tuple[dict[str, Any], VoteSpec | SectionSpec]] = OrderedDict()
_SPECS_MAX = 512


def spec_of(run_id: str, config: dict[str, Any], role: OutcomeRole) -> VoteSpec | SectionSpec:
    cached = _SPECS.get(run_id)
    if cached is not None and cached[0] is config:
        return cached[1]
    spec = vote_spec(config) if role in (OutcomeRole.VOTER, OutcomeRole.PREWARM) else section_spec(config)
    _SPECS[run_id] = (config, spec)
    if len(_SPECS) > _SPECS_MAX:
        _SPECS.popitem(last=False)
    return spec


# The bytes of documents read natively, kept per process (content-addressed, so never stale) up to
# BLOBS_MAX_BYTES in all: the voters of one run read the PDF once, and a PDF may be tens of MB.
_BLOBS: OrderedDict[str, bytes] = OrderedDict()
BLOBS_MAX_BYTES = 64 * 1024 * 1024


_BLOBS_LOCK = threading.Lock()


def _blob(sha256: str) -> bytes:
    with _BLOBS_LOCK:
        data = _BLOBS.get(sha256)
        if data is not None:
            _BLOBS.move_to_end(sha256)
            return data
    data = in_session(lambda s: repo.blob_data(s, sha256), write=False)
    with _BLOBS_LOCK:
        _BLOBS[sha256] = data
        while len(_BLOBS) > 1 and sum(len(v) for v in _BLOBS.values()) > BLOBS_MAX_BYTES:
            _BLOBS.popitem(last=False)
    return data


def _bytes(sha256: str | None, files: dict[str, str]) -> bytes | None:
    """A blob's bytes, unless the run sends it by its Files API id (then nothing is read)."""
    return None if sha256 is None or sha256 in files else _blob(sha256)


def build_request(claim: repo.Claim, config: dict[str, Any], text: str) -> CallRequest:
    tags = (("run", claim.run_id), ("slot", str(claim.slot)))
    spec = spec_of(claim.run_id, config, claim.role)
    if isinstance(spec, VoteSpec):
        doc = spec.document
        document = doc.attachment(text, _bytes(doc.blob, dict(doc.files))) if doc is not None else text
        if claim.role is OutcomeRole.PREWARM:
            return spec.prewarm_request(claim.model, document, tags)
        voter = spec.voter(claim.slot, claim.model, claim.prompt_variant, claim.temperature)
        return spec.voter_request(voter, document, tags)
    if claim.role is OutcomeRole.SECTION:
        files = dict(spec.document.files) if spec.document else {}
        document = spec.section_document(claim.slot, text, _bytes(spec.blob_of(claim.slot), files))
        return spec.section_request(claim.model, claim.slot, document, tags)
    if claim.role is OutcomeRole.SYNTHESIS:
        return synthesis_call_request(claim, spec, tags)
    raise ValueError(f"no request builder for role {claim.role}")


def interpret(claim: repo.Claim, config: dict[str, Any], result: CallResult) -> dict[str, Any]:
    """Outcome fields for a successful call."""
    fields: dict[str, Any] = {"raw_output": result.text, "error": None}
    if claim.role is OutcomeRole.VOTER:
        answer, abstained = read_answer(result.text, config["labels"], stop_reason=result.stop_reason,
                                        no_answer=result.no_answer,
                                        structured=supports_structured_outputs(claim.model))
        fields["answer"] = answer
        fields["error"] = abstained
        if expects_cache_read(config, claim.slot, claim.model) and not result.usage.estimated:
            # A follower of cache-aware dispatch: it was sent after its leader so as to read the prefix.
            fields["cache_miss"] = result.usage.cache_read_input_tokens == 0
    elif claim.role in (OutcomeRole.SECTION, OutcomeRole.SYNTHESIS):
        # A reply that is no result (a refusal; with an output schema, a cut, non-JSON or off-schema
        # reply) fails its slot with the reason; the call's usage is kept, it was paid.
        spec = spec_of(claim.run_id, config, claim.role)
        assert isinstance(spec, SectionSpec)
        schema = (spec.map if claim.role is OutcomeRole.SECTION else spec.reduce).output_schema
        _, problem = read_section_reply(result.text, schema, result.stop_reason, result.no_answer)
        if problem is not None:
            fields["status"] = OutcomeStatus.FAILED
            fields["error"] = problem
    return fields


def retry_request(claim: repo.Claim, config: dict[str, Any], request: CallRequest, result: CallResult
                  ) -> CallRequest | None:
    """The one retry a paid reply gets before its slot fails: a map reply cut at max_tokens before its JSON
    was complete is sent again with a larger budget (`SectionSpec.retry_request`); None otherwise."""
    if claim.role is not OutcomeRole.SECTION or result.stop_reason != "max_tokens" or result.no_answer:
        return None
    spec = spec_of(claim.run_id, config, claim.role)
    return spec.retry_request(request) if isinstance(spec, SectionSpec) else None


def step_of(config: dict[str, Any], role: OutcomeRole) -> StepSpec:
    """The map (section) or reduce (synthesis) step of a run."""
    spec = section_spec(config)
    return spec.map if role is OutcomeRole.SECTION else spec.reduce


def synthesis_call_request(claim: repo.Claim, spec: SectionSpec, tags: tuple[tuple[str, str], ...]) -> CallRequest:
    with Session() as s:
        by_slot = repo.outcomes_by_slot(s, claim.run_id)
    row = by_slot[claim.slot]
    parts = [Part(by_slot[i].title or f"part {i}", by_slot[i].raw_output or "", by_slot[i].output_tokens or 0)
             for i in row.inputs or []]
    final = claim.prompt_variant == FINAL
    missing: list[int] = []
    if final:
        covered = set(covered_sections(row.inputs or [], inputs_of(by_slot), succeeded(by_slot)))
        missing = [i + 1 for i in range(len(spec.sections)) if i not in covered]
    return spec.synthesis_request(claim.model, parts, missing, final=final, tags=tags)


def inputs_of(by_slot: dict[int, WorkerOutcome]) -> dict[int, list[int]]:
    return {slot: list(o.inputs) for slot, o in by_slot.items() if o.inputs}


def succeeded(by_slot: dict[int, WorkerOutcome]) -> set[int]:
    return {slot for slot, o in by_slot.items() if o.status is OutcomeStatus.SUCCEEDED}
