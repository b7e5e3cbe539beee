"""A batch's cost before it runs: the upper bound its budget check trusts."""

from __future__ import annotations

from chorus.batch.spec import CHUNK, Prepared
from chorus.budget import estimate_plan
from chorus.runs import prepare
from models import RunStatus, Session, in_session, repo
from models.repo import content_hash
from settings import Settings
from workflows.cost import Cost, total
from workflows.errors import ConfigError
from workflows.intake import Record


def estimate_batch(prepared: Prepared, settings: Settings) -> tuple[Cost, int]:
    """(the estimate, the documents it covers): `estimate_plan` (an upper bound) with local token bounds
    (one count_tokens call per document and voter would be slow and rate-limited) of the documents a run
    of the batch would send: all of them but those that already succeeded with the same text, or are
    still running. Each run is priced in the batch's lane (the lane's half price and 1-hour cache writes)."""
    prepare(settings)
    with Session() as s:
        batch = repo.batch_named(s, prepared.name)
        batch_id = batch.id if batch is not None else None
    costs: list[Cost] = []
    chunk: list[Record] = []

    def price(records: list[Record]) -> None:
        existing = (in_session(lambda s: repo.documents_by_key(s, batch_id, [r.key for r in records]), write=False)
                    if batch_id is not None else {})
        for record in records:
            if record.text is None:
                continue
            doc = existing.get(record.key)
            if doc is not None and doc.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING) \
                    and doc.content_hash == (record.content_key or content_hash(record.text)):
                continue
            try:
                plan = prepared.spec.plan(record.document or record.text, record.key, record.label,
                                          batch_id or "estimate", settings)
            except ConfigError:
                continue  # a bad document fails with its reason and costs nothing
            costs.append(estimate_plan(plan, settings, count=False, lane=prepared.lane))

    for _, record in enumerate(prepared.records(settings)):
        chunk.append(record)
        if len(chunk) >= CHUNK:
            price(chunk)
            chunk = []
    if chunk:
        price(chunk)
    return total(costs), len(costs)
