"""Who is using an embedded data directory, and the stale work a new command clears before it starts.

In embedded mode the work of a command lives in `.chorus/broker/queue` (kombu's filesystem transport)
and only that command's own worker runs it. A command that was interrupted, timed out or was killed
leaves its messages there, and the next command's worker would work through them before its own
(the issue's one-line vote that waited 300 s behind a stale batch). So every process that sends work
registers itself as an *owner* of the directory (`.chorus/owners/<pid>`), and a command that starts a
worker first sweeps the queue:

- a message whose runs are all terminal (finished, or cancelled) is deleted;
- when no other owner is alive, nothing else can be working on what is left: the open runs are
  cancelled with the reason (a batch run again resumes them: cancelled documents are sent again) and
  their messages deleted. With the default SQLite database (under the data directory) every open run
  is such a run; with a database of your own only the runs the queue names are touched.

With another live owner (two commands at once in one directory) only terminal runs' messages go.

A run of the batch lane that was sent (running) is not stale: its calls wait for a collector or sit in
provider batches, paid for, which the next command waiting on the lane collects and polls (the same
`chorus batch` command resumes it). It is left open, with its queued messages (a tally, a reduce).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import RunStatus, in_session, repo
from settings import Settings
from tasks.dispatch import message_run_ids

OWNERS = "owners"
STALE_REASON = "its command ended before it finished (embedded mode: nothing else runs its work)"

_registered: dict[Path, float] = {}  # owners folder -> when this process registered


def queue_folder(settings: Settings) -> Path:
    return settings.data_path / "broker" / "queue"


def _owners_folder(settings: Settings) -> Path:
    return settings.data_path / OWNERS


def register(settings: Settings) -> None:
    """Record this process as an owner of the data directory, until it exits (once per directory)."""
    if not settings.embedded:
        return
    folder = _owners_folder(settings)
    if folder in _registered:
        return
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / str(os.getpid())
    now = time.time()
    mine.write_text(str(now))
    _registered[folder] = now
    atexit.register(_unregister, mine, folder)


def registered_at(settings: Settings) -> float:
    """When this process became an owner (work sent before then is not its own); now if it is not one."""
    return _registered.get(_owners_folder(settings), time.time())


def _unregister(mine: Path, folder: Path) -> None:
    mine.unlink(missing_ok=True)
    _registered.pop(folder, None)


def other_owners(settings: Settings) -> list[int]:
    """The pids of other live processes that own work in this directory (dead ones are forgotten)."""
    folder = _owners_folder(settings)
    alive: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            if _alive(int(entry.name)):
                alive.append(int(entry.name))
            else:
                entry.unlink(missing_ok=True)
    return alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        if any(line.startswith("State:") and "zombie" in line for line in status.read_text().splitlines()):
            return False
    return True


@dataclass
class Swept:
    deleted: int = 0  # messages removed from the queue
    cancelled: list[str] = field(default_factory=list)  # open runs left by a command that ended


def queued_messages(settings: Settings) -> list[tuple[Path, set[str]]]:
    """Every message waiting in the embedded queue, with the run ids its task names."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(queue_folder(settings).glob("*.msg")):
            try:
                found.append((path, message_run_ids(path.read_bytes())))
            except OSError:
                continue  # taken by a worker meanwhile
    return found


def purge_runs(settings: Settings, run_ids: Iterable[str]) -> int:
    """Delete the queued messages that name only runs among `run_ids` (cancelled runs); how many."""
    wanted = set(run_ids)
    deleted = 0
    for path, named in queued_messages(settings):
        if named and named <= wanted:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
    return deleted


def sent_lane_runs(run_ids: list[str]) -> set[str]:
    """Those of `run_ids` that run in the batch lane and were sent (running): a later command resumes them."""
    def read(s: Any) -> set[str]:
        lane_runs = repo.lane_runs_among(s, run_ids)
        return {r for r, status in repo.run_statuses(s, sorted(lane_runs)).items() if status is RunStatus.RUNNING}

    return in_session(read, write=False) if run_ids else set()


def sweep(settings: Settings, *, since: float, terminal: Callable[[list[str]], set[str]],
          open_runs: Callable[[], list[str]] | None,
          cancel: Callable[[list[str], str], list[str]],
          resumable: Callable[[list[str]], set[str]] = sent_lane_runs) -> Swept:
    """Clear stale work before this process's worker starts (see the module's docstring). Only work
    older than `since` (when this process became an owner) can be stale: what it sent is its own.

    `terminal(ids)` are those of `ids` that are terminal; `open_runs()` the open runs created before
    `since` (None when the database is not this directory's own); `cancel(ids, reason)` cancels runs
    and returns those it did; `resumable(ids)` those of `ids` left open for a later command (sent lane
    runs), with their messages."""
    swept = Swept()
    messages = [(path, ids, _mtime(path)) for path, ids in queued_messages(settings)]
    named = sorted({run_id for _, ids, _ in messages for run_id in ids})
    done = terminal(named) if named else set()
    alone = not other_owners(settings)
    old = [(path, ids) for path, ids, mtime in messages if mtime < since]
    kept: set[str] = set()
    if alone:
        stale = {r for _, ids in old for r in ids if r not in done}
        if open_runs is not None:
            stale |= set(open_runs())
        kept = resumable(sorted(stale)) if stale else set()
        stale -= kept
        if stale:
            swept.cancelled = cancel(sorted(stale), STALE_REASON)
    for path, ids, mtime in messages:
        if (alone and mtime < since and not ids & kept) or (ids and ids <= done):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                swept.deleted += 1
    return swept


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")
