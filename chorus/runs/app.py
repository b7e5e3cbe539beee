"""The client's Celery app for the settings given, the store it reads, and the callbacks of the runs this
process sent (so waiting hears of a tally at once)."""

from __future__ import annotations

import atexit
import contextlib
import gc
from collections import OrderedDict
from pathlib import Path

from celery import Celery
from celery.result import AsyncResult

# The task modules define shared tasks: imported here, every app this client makes knows them, so
# what it sends carries the labels Flower shows (tasks.labels), as the worker's own sends do;
# tasks.all_patterns imports every pattern's module, which registers its entry (tasks.patterns).
import tasks.all_patterns  # noqa: F401
import tasks.batch  # noqa: F401
import worker
from chorus.embedded import commands as embedded_commands
from models import ensure_schema, get_engine
from settings import Settings, get_settings, user_data_dir
from workflows.errors import ConfigError, NotFoundError

_schema_ready: set[str] = set()
_apps: dict[str, Celery] = {}

# The callback's AsyncResult of runs this process sent, so `wait_for_run` hears of the tally at once
# (with Redis it is already subscribed to the result). Bounded: a caller that never waits (it only
# polls `get_run`, or submits and leaves) evicts the oldest; a run without an entry is waited on by
# polling the database, which is the truth anyway.
MAX_PENDING = 1024
_pending: OrderedDict[str, AsyncResult] = OrderedDict()


def store_exists(settings: Settings) -> bool:
    """False while the settings' default SQLite database was never created: a command that only reads
    (`chorus runs`, `chorus status`) then finds nothing and creates nothing."""
    url = settings.effective_database_url
    if not url.startswith("sqlite") or ":///" not in url:
        return True
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return not path or path.startswith(":memory:") or Path(path).exists()


def searched(settings: Settings) -> str:
    """The store a lookup searched, for a "not found" message."""
    return settings.store_name if store_exists(settings) else f"{settings.store_name}, empty so far"


def not_found(what: str, ref: str, accepts: str, settings: Settings) -> NotFoundError:
    """"No <what> <ref> in <the store searched>; <what the command accepts>", and in embedded mode where
    else it may be: a cluster's database, which the environment does not name (its URLs unset)."""
    message = f"no {what} {ref!r} in {searched(settings)}; {accepts}"
    if settings.database_url is None:
        message += ("; the runs of a cluster are in its own database: set CHORUS_DATABASE_URL and "
                    "CHORUS_BROKER_URL to look there")
    return NotFoundError(message)


def folder_store_note(settings: Settings) -> str | None:
    """A line saying that this command uses the ./.chorus of the current folder (where embedded mode kept
    its data before the per-user directory), and where the other folders' commands store; None otherwise."""
    if settings.data_origin != "folder" or settings.database_url is not None:
        return None
    return (f"chorus: using the store in ./.chorus of this folder ({settings.data_path}); commands run elsewhere "
            f"use {user_data_dir()}. Set CHORUS_DATA_DIR to use one store from every folder (or move this .chorus "
            f"there)")


def prepare(settings: Settings) -> None:
    """Bind the database of `settings` and bring its schema up to date (once per URL per process)."""
    # Whoever reads or writes work in embedded mode owns it while it lives: a new command leaves it alone.
    embedded_commands.register(settings)
    url = settings.effective_database_url
    if url not in _schema_ready:
        ensure_schema(url)
        _schema_ready.add(url)
    else:
        get_engine(url)  # the one sessionmaker follows the settings of this call


def celery_app(settings: Settings) -> Celery:
    """The Celery app for `settings`: the worker module's own for the environment's settings, else
    one made (once per distinct settings) from the broker and backend they name."""
    # Whoever sends work in embedded mode owns it while it lives: a new command leaves it alone.
    embedded_commands.register(settings)
    if settings == _environment_settings():
        return worker.app  # type: ignore[no-any-return]
    key = settings.model_dump_json()
    app = _apps.get(key)
    if app is None:
        app = _apps[key] = worker.make_app(settings, set_as_current=False)
    return app


def _environment_settings() -> Settings | None:
    """The environment's settings, or None when the environment is not valid (a caller that passes
    its own settings must not fail for a bad variable it does not use)."""
    try:
        return get_settings()
    except ConfigError:
        return None


def remember(run_id: str, pending: AsyncResult) -> None:
    _pending[run_id] = pending
    while len(_pending) > MAX_PENDING:
        _pending.popitem(last=False)


@atexit.register
def _release_results() -> None:
    """Celery's AsyncResult unsubscribes from the Redis result backend when it is collected. A result
    in a reference cycle (a chord's, with its parents) is otherwise collected during interpreter
    shutdown, after imports are gone, and printed "Exception ignored in AsyncResult.__del__ ...
    sys.meta_path is None" after every `chorus section`. Unsubscribe them while Python still runs,
    and leave their late `__del__` nothing to do."""
    _pending.clear()
    gc.collect()
    for result in [o for o in gc.get_objects() if isinstance(o, AsyncResult)]:
        if result.backend is not None:
            with contextlib.suppress(Exception):  # best effort on the way out: the process is ending
                result.backend.remove_pending_result(result)
            result.backend = None


def forget(run_id: str) -> AsyncResult | None:
    return _pending.pop(run_id, None)
