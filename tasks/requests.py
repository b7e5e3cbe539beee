"""What a slot asks the provider, and what its answer means, for any pattern: the run's stored config
read back as its spec (`workflows.runspec`, the one request builder) by the pattern's entry
(`tasks.patterns`), which builds each slot's request from it (its text, its document's bytes: a PDF or
an image read natively) and reads the reply. This module holds what every pattern shares: the spec and
blob caches, and the fields every paid reply sets."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from models import in_session, repo
from models.tables import OutcomeRole
from tasks import patterns
from workflows.calls import CallRequest, CallResult

# A run's spec, parsed once per process for the config it was parsed from (tasks.calls reads a run's
# config once per process, and it never changes once its calls are sent).
_SPECS: OrderedDict[str, tuple[dict[str, Any], Any]] = OrderedDict()
_SPECS_MAX = 512


def spec_of(run_id: str, config: dict[str, Any], role: OutcomeRole) -> Any:
    """The run's spec, as the pattern of a slot of this role reads its config."""
    cached = _SPECS.get(run_id)
    if cached is not None and cached[0] is config:
        return cached[1]
    spec = patterns.for_role(role).spec(config)
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


def document_bytes(sha256: str | None, files: dict[str, str]) -> bytes | None:
    """A blob's bytes, unless the run sends it by its Files API id (then nothing is read)."""
    return None if sha256 is None or sha256 in files else _blob(sha256)


def build_request(claim: repo.Claim, config: dict[str, Any], text: str) -> CallRequest:
    """The request of a claimed slot, built by its pattern from the run's spec; tagged with the run and slot."""
    tags = (("run", claim.run_id), ("slot", str(claim.slot)))
    return patterns.for_role(claim.role).build_request(claim, spec_of(claim.run_id, config, claim.role), text, tags)


def interpret(claim: repo.Claim, config: dict[str, Any], result: CallResult) -> dict[str, Any]:
    """Outcome fields for a successful call: its text, and what its pattern reads in it (a voter's answer;
    a reply that is no result fails its slot with the reason, its usage kept: it was paid)."""
    fields: dict[str, Any] = {"raw_output": result.text, "error": None}
    pattern = patterns.for_role(claim.role)
    return fields | pattern.interpret(claim, spec_of(claim.run_id, config, claim.role), config, result)


def retry_request(claim: repo.Claim, config: dict[str, Any], request: CallRequest, result: CallResult
                  ) -> CallRequest | None:
    """The one retry a paid reply gets before its slot fails (a map reply cut at max_tokens before its JSON
    was complete, sent again with a larger budget); None when its pattern gives none."""
    retry = patterns.for_role(claim.role).retry_request
    return None if retry is None else retry(claim, spec_of(claim.run_id, config, claim.role), request, result)
