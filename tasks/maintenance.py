"""The reaper: every run reaches a terminal status even when its callback never fires.

A callback can be lost (a header task's message lost with a broker, a crash between the last
slot's write and the chord's join, or, in embedded mode, a worker stopped mid-run with no
visibility timeout to bring the message back). Beat runs `chorus.maintenance.reap` every
CHORUS_REAP_INTERVAL_S; the waiting CLI of embedded mode runs the same check itself when a run
stalls. Three cases:

- a slot was never claimed (still pending with no attempt) longer than CHORUS_REAP_RESEND_AFTER_S,
  and the broker holds no message of its run (neither queued nor taken; `tasks.broker`): its
  message was lost. A slot merely waiting in a long backlog is still in the queue, and is left
  alone. kombu's Redis transport takes a message with BRPOP and only then records it as unacked,
  so a worker killed in between loses it for good (kombu #305, #1733). The reaper sends that
  slot's call again, once; the claim on (run_id, slot) makes a duplicate harmless. The
  re-sent task is not part of the chord, so the run is then finished by the next case;
- every slot is terminal but the run is not, for longer than CHORUS_REAP_GRACE_S: the callback was
  lost; the run is finished from its stored outcomes by the same function the callback calls;
- the run is older than CHORUS_REAP_AFTER_S: its open slots are failed with a reason, then the run
  is finished the same way (partial or failed, with the reason in words).

A run of the batch lane (`tasks/lane.py`) has no messages to lose: its slots wait for the collector or
for a provider batch, which may take hours. Its slots are never re-sent here, and it expires after
CHORUS_LANE_EXPIRE_S (a provider batch ends within 24 h) instead of CHORUS_REAP_AFTER_S.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, shared_task

from models import Pattern, Session, repo
from models.tables import utcnow
from settings import Settings, get_settings
from tasks import broker, db, dispatch
from tasks.files import release_files
from tasks.section import reap_section
from tasks.vote import advance_vote

log = logging.getLogger("chorus.reaper")
RESENT = "resent-by-reaper"


def _finisher(app: Celery, pattern: Pattern) -> Callable[[str], dict[str, Any]]:
    if pattern is Pattern.SECTION:
        # All slots done but no synthesis yet may be a callback still queued or lost: go on with it.
        return lambda run_id: reap_section(app, run_id)
    return lambda run_id: advance_vote(app, run_id)  # an adaptive vote may still have a wave to send


def reap_stalled(app: Celery, settings: Settings | None = None, *, now: dt.datetime | None = None,
                 run_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Finish stalled runs (optionally only `run_ids`); returns the ids it finished, by case.
    Lost calls are sent again on `app`."""
    settings = settings or get_settings()
    db.bind()
    now = now or utcnow()
    grace_edge = now - dt.timedelta(seconds=settings.reap_grace_s)
    expire_edge = now - dt.timedelta(seconds=settings.reap_after_s)
    done: dict[str, list[str]] = {"lost_callback": [], "expired": [], "resent": []}
    resend_edge = now - dt.timedelta(seconds=settings.reap_resend_after_s)
    with Session() as s:
        candidates = repo.stalled_runs(s, started_before=grace_edge, run_ids=run_ids)
    queued = _runs_still_queued(app, [run_id for run_id, _, _ in candidates])
    for run_id, pattern, began in candidates:
        if run_id not in queued and _resend_lost_slots(app, run_id, resend_edge):
            done["resent"].append(run_id)
            continue
        with Session() as s:
            open_slots = repo.count_open_slots(s, run_id, sent_only=True)
        if open_slots:
            if (began or now) >= expire_edge:
                continue  # still within its time; slots may be waiting for a retry or a token
            reason = f"never finished: the reaper gave up on it {settings.reap_after_s:.0f} s after submit"
            with Session.begin() as s:
                repo.fail_open_slots(s, run_id, reason)
            done["expired"].append(run_id)
        else:
            done["lost_callback"].append(run_id)
        _finisher(app, pattern)(run_id)
        log.warning("reaped run %s (%s)", run_id, "expired" if open_slots else "callback never fired")
    return done


def _runs_still_queued(app: Celery, run_ids: list[str]) -> set[str]:
    """Runs whose messages the broker still holds (queued, or taken and not yet acknowledged): a slot
    of theirs that was never claimed is waiting its turn in a backlog, not lost. If the broker cannot
    be read, every run counts as queued this round: a re-send now would fail the same way."""
    try:
        return broker.runs_in_broker(app, run_ids)
    except Exception as exc:  # noqa: BLE001 - Redis can fail in many ways; the next round looks again
        log.warning("could not read the broker (%s); no slot is re-sent this round", exc)
        return set(run_ids)


def _resend_lost_slots(app: Celery, run_id: str, edge: dt.datetime) -> list[int]:
    """Send again, once, the calls of slots never claimed since before `edge`; their slots."""
    with Session.begin() as s:
        lost = repo.mark_lost_slots(s, run_id, queued_before=edge, marker=RESENT)
    for slot, model, role in lost:
        dispatch.resend_call(app, run_id, slot, model, role)
        log.warning("re-sent the call of run %s slot %s: its task was never picked up", run_id, slot)
    return [slot for slot, _, _ in lost]


@shared_task(name="chorus.maintenance.reap", bind=True)
def reap(self: Task) -> dict[str, list[str]]:
    finished = reap_stalled(self.app)
    try:
        release_files()  # uploads whose run ended without its callback releasing them (a kill, a cancel)
    except Exception:  # noqa: BLE001 - the sweep is retried on the next beat; the reaper's work stands
        log.exception("sweeping the uploads of finished runs failed")
    return finished


class StallWatch:
    """For a waiting process with no beat (embedded mode): run the reaper's check for the awaited run
    at most every `every_s` seconds, once the run has been waiting longer than the grace period."""

    def __init__(self, app: Celery, run_id: str, settings: Settings, every_s: float = 5.0) -> None:
        self.app = app
        self.run_id = run_id
        self.settings = settings
        self.every_s = every_s
        self.began = time.monotonic()
        self.last = self.began - every_s

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.began < self.settings.reap_grace_s or now - self.last < self.every_s:
            return
        self.last = now
        reap_stalled(self.app, self.settings, run_ids=[self.run_id])
