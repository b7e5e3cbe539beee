"""The reaper: every run reaches a terminal status even when its callback never fires.

A callback can be lost (a header task's message lost with a broker, a crash between the last
slot's write and the chord's join, or, in embedded mode, a worker stopped mid-run with no
visibility timeout to bring the message back). Beat runs `chorus.maintenance.reap` every
CHORUS_REAP_INTERVAL_S; the waiting CLI of embedded mode runs the same check itself when a run
stalls. Four cases:

- a slot was never claimed (still pending with no attempt) longer than CHORUS_REAP_RESEND_AFTER_S,
  and the broker holds no message of its run (neither queued nor taken; `tasks.broker`): its
  message was lost. A slot merely waiting in a long backlog is still in the queue, and is left
  alone. kombu's Redis transport takes a message with BRPOP and only then records it as unacked,
  so a worker killed in between loses it for good (kombu #305, #1733). The reaper sends that
  slot's call again, once; the claim on (run_id, slot) makes a duplicate harmless. The
  re-sent task is not part of the chord, so the run is then finished by the next case;
- a slot was claimed and its holder is gone: it is `running` with a lease that ended more than
  CHORUS_REAP_GRACE_S ago (the holder renews it every few seconds while it lives, so it was killed),
  or `retrying` (or pending again after a rate-limit wait) past CHORUS_REAP_RESEND_AFTER_S with no
  message of its run in the broker. Redis brings a killed worker's message back only after the
  visibility timeout (an hour by default), and not at all when it was acknowledged early or lost in
  the BRPOP window, so the reaper does not wait for it: it sends the call again, once per lost
  holder, within CHORUS_MAX_ATTEMPTS (the re-sent task's claim takes the expired lease and counts the
  attempt; a copy of the old message that comes back later finds the slot held or finished and makes
  no call). A slot at its attempt limit is failed with the reason instead. The broker is not asked
  about a `running` slot: a message of its run still queued (a tally waiting for it, a copy of its own
  task) cannot finish it any sooner, and the lease makes a second message harmless;
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

import tasks.all_patterns  # noqa: F401 - every pattern's entry, for `_finisher`
from models import OutcomeRole, Pattern, Session, repo
from models.tables import utcnow
from settings import Settings, get_settings
from tasks import broker, db, dispatch, patterns
from tasks.files import release_files

log = logging.getLogger("chorus.reaper")
RESENT = "resent-by-reaper"


def _finisher(app: Celery, pattern: Pattern) -> Callable[[str], dict[str, Any]]:
    """How the reaper ends a run of this pattern (`PatternEntry.finish`: it may also go on with the run)."""
    finish = patterns.entry(pattern).finish
    return lambda run_id: finish(app, run_id)


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
    queued = _runs_still_queued(app, [c.id for c in candidates if not c.lane])
    held_edge = now - dt.timedelta(seconds=settings.reap_grace_s)
    lane_edge = now - dt.timedelta(seconds=settings.lane_expire_s)
    for run_id, pattern, began, lane in candidates:
        if queued is None or lane:
            resent = []  # the broker cannot be read (a re-send now would fail the same way), or a lane run
        else:
            clear = run_id not in queued
            resent = _resend_abandoned_slots(app, run_id, settings, held_before=held_edge,
                                             waiting_before=resend_edge if clear else None)
            if clear:
                resent += _resend_lost_slots(app, run_id, resend_edge)
        if resent:
            done["resent"].append(run_id)
            continue
        with Session() as s:
            open_slots = repo.count_open_slots(s, run_id, sent_only=True)
        if open_slots:
            if (began or now) >= (lane_edge if lane else expire_edge):
                continue  # still within its time; slots may be waiting for a retry, a token or a provider batch
            after_s = settings.lane_expire_s if lane else settings.reap_after_s
            reason = f"never finished: the reaper gave up on it {after_s:.0f} s after submit"
            with Session.begin() as s:
                repo.fail_open_slots(s, run_id, reason)
            done["expired"].append(run_id)
        else:
            done["lost_callback"].append(run_id)
        _finisher(app, pattern)(run_id)
        log.warning("reaped run %s (%s)", run_id, "expired" if open_slots else "callback never fired")
    return done


def _runs_still_queued(app: Celery, run_ids: list[str]) -> set[str] | None:
    """Runs whose messages the broker still holds (queued, or taken and not yet acknowledged): a slot
    of theirs that was never claimed is waiting its turn in a backlog, not lost. None if the broker
    cannot be read: then nothing is re-sent this round, since a re-send now would fail the same way."""
    try:
        return broker.runs_in_broker(app, run_ids)
    except Exception as exc:  # noqa: BLE001 - Redis can fail in many ways; the next round looks again
        log.warning("could not read the broker (%s); no slot is re-sent this round", exc)
        return None


def _resend_lost_slots(app: Celery, run_id: str, edge: dt.datetime) -> list[int]:
    """Send again, once, the calls of slots never claimed since before `edge`; their slots."""
    with Session.begin() as s:
        lost = repo.mark_lost_slots(s, run_id, queued_before=edge, marker=RESENT)
    return _resend(app, run_id, lost, "its task was never picked up")


def lost_holder_reason(max_attempts: int) -> str:
    """Why a slot whose holder was lost at its attempt limit is failed ("{attempts}": its own count)."""
    return (f"its worker was lost (killed or stopped) during attempt {{attempts}} of {max_attempts}, "
            "and no attempt is left: not sent again")


def _resend_abandoned_slots(app: Celery, run_id: str, settings: Settings, *, held_before: dt.datetime,
                            waiting_before: dt.datetime | None) -> list[int]:
    """Send again the calls of slots whose holder is gone (`repo.take_abandoned_slots`), failing those at
    their attempt limit; the slots re-sent."""
    with Session.begin() as s:
        taken = repo.take_abandoned_slots(s, run_id, held_before=held_before, waiting_before=waiting_before,
                                          marker=RESENT, max_attempts=settings.max_attempts,
                                          reason=lost_holder_reason(settings.max_attempts))
    for slot, attempts in taken.failed:
        log.warning("failed run %s slot %s: its worker was lost during attempt %s, its last", run_id, slot, attempts)
    return _resend(app, run_id, taken.resend, "its holder is gone (lease ended, no copy took it over)")


def _resend(app: Celery, run_id: str, slots: list[tuple[int, str, OutcomeRole]], why: str) -> list[int]:
    """Send the calls of slots marked for a re-send; a slot whose message the broker refuses loses its mark,
    so the next round finds it again. The slots sent."""
    sent: list[int] = []
    for slot, model, role in slots:
        try:
            dispatch.resend_call(app, run_id, slot, model, role)
        except Exception as exc:  # noqa: BLE001 - the broker can fail in many ways; the next round tries again
            log.warning("could not re-send the call of run %s slot %s (%s); trying again next round", run_id, slot, exc)
            with Session.begin() as s:
                repo.drop_resend_marks(s, run_id, [slot], marker=RESENT)
            continue
        sent.append(slot)
        log.warning("re-sent the call of run %s slot %s: %s", run_id, slot, why)
    return sent


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


class BatchStallWatch:
    """For a process waiting on a batch (`chorus batch`, `wait_for_batch`): once the batch has shown no
    progress for CHORUS_REAP_GRACE_S, run the reaper's check for its open runs, at most every `every_s`
    seconds. Beat's reaper does the same for every run; this covers a cluster whose beat is not running
    (or is down), so a batch whose messages were lost with the broker is not left waiting for ever. The
    check is the reaper's own: a slot is re-sent only when its message is gone and at most once at a time,
    so running it beside beat changes nothing."""

    def __init__(self, app: Celery, settings: Settings, open_runs: Callable[[], list[str]],
                 every_s: float = 5.0) -> None:
        self.app = app
        self.settings = settings
        self.open_runs = open_runs
        self.every_s = every_s
        self.progress: object = None
        self.quiet_since = time.monotonic()
        self.last = self.quiet_since - every_s

    def __call__(self, progress: object) -> None:
        """`progress`: anything that changes when the batch moves (its counts)."""
        now = time.monotonic()
        if progress != self.progress:
            self.progress, self.quiet_since = progress, now
            return
        if now - self.quiet_since < self.settings.reap_grace_s or now - self.last < self.every_s:
            return
        self.last = now
        try:
            run_ids = self.open_runs()
            if run_ids:
                done = reap_stalled(self.app, self.settings, run_ids=run_ids)
                if any(done.values()):
                    log.warning("the batch had stalled; reaper check: %s", {k: len(v) for k, v in done.items() if v})
        except Exception as exc:  # noqa: BLE001 - the broker or database may be down; the next round tries again
            log.warning("could not check the stalled batch's runs (%s); trying again in %.0f s", exc, self.every_s)
