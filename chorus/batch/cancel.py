"""Cancelling a batch (its runs and open provider batches), its lane status, and retrying what failed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chorus.batch.spec import find_batch
from chorus.batch.submit import batch_counts
from chorus.runs import cancel_runs, get_run, not_found, prepare
from models import in_session, repo
from providers import provider_capabilities
from settings import Settings, get_settings
from tasks import lane
from workflows.errors import ConfigError, NotFoundError

log = logging.getLogger("chorus.batch")



@dataclass(frozen=True)
class Cancellation:
    """What `cancel` did: runs it cancelled, votes whose voters had all finished (tallied instead),
    and runs that were already finished."""

    kind: str  # "run" or "batch"
    id: str
    name: str | None
    reason: str
    cancelled: list[str]
    settled: list[str]
    already_finished: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "reason": self.reason,
                "cancelled": len(self.cancelled), "settled": len(self.settled),
                "already_finished": self.already_finished, "cancelled_runs": self.cancelled}


def cancel(ref: str, *, reason: str = "cancelled by the user", settings: Settings | None = None) -> Cancellation:
    """Cancel a run (its id or a unique prefix) or a batch (id, prefix or name).

    Work not sent yet is never sent; queued calls are taken out of the broker where it allows (Redis,
    the embedded queue) and, if one arrives anyway, its slot is cancelled and nothing is called; calls
    already in flight finish and are recorded. Each open run ends `cancelled` with the reason, except
    a vote whose voters had all finished, which is tallied (it keeps its real result). A batch stops
    sending (a submitter still running it stops), and running it again resumes: cancelled documents
    are sent again."""
    settings = settings or get_settings()
    prepare(settings)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("give a run id or a batch id or name to cancel")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError("reason must be some text saying why")
    try:
        run = get_run(ref, settings=settings)
    except NotFoundError as exc:
        if "ambiguous" in str(exc):
            raise
        run = None
    if run is not None:
        done = cancel_runs([run.id], reason, settings)
        _cancel_provider_batches(done.cancelled, settings)
        return Cancellation("run", run.id, None, reason, done.cancelled, done.settled,
                            0 if done.cancelled or done.settled else 1)
    try:
        batch = find_batch(ref, settings=settings)
    except NotFoundError:
        raise not_found("run or batch", ref, "give a run id, a unique prefix of one, or a batch id or name "
                        "(`chorus runs` and `chorus batches` list them)", settings) from None
    in_session(lambda s: repo.set_batch_cancelled(s, batch.id, reason))
    open_runs = in_session(lambda s: repo.open_runs_of_batch(s, batch.id), write=False)
    done = cancel_runs(open_runs, reason, settings)
    _cancel_provider_batches(done.cancelled, settings)
    counts = batch_counts(batch.id, settings=settings)
    return Cancellation("batch", batch.id, batch.name, reason, done.cancelled, done.settled,
                        counts.succeeded + counts.partial + counts.failed)


def _cancel_provider_batches(cancelled: list[str], settings: Settings) -> None:
    """Cancel at the provider the batch-lane batches whose calls now all belong to cancelled runs (the
    poller would too, at its next tick); best effort: the runs are cancelled whatever the provider says."""
    if not cancelled or not provider_capabilities(settings).batches_api:
        return
    if not in_session(lambda s: repo.lane_runs_among(s, cancelled), write=False):
        return
    try:
        lane.cancel_provider_batches(settings)
    except Exception as exc:  # noqa: BLE001 - the poller cancels them at its next tick
        log.warning("could not cancel the provider batches now (%s); the lane's poller will", exc)
