"""The two lanes of the suite (a pytest plugin, loaded by tests/conftest.py).

`pytest -m "not integration"` is the fast lane: pure tests only, in-process. `pytest` (CI) runs both.
A test is in the integration lane when

- it lives under tests/ops/ (docker-compose, Flower, migrations, an install),
- it uses a fixture that starts or reaches a real part (`INTEGRATION_FIXTURES`), or
- it is marked `@pytest.mark.integration` (a module's `pytestmark`, a test, or one `pytest.param`).

Every other test runs guarded (its setup and its call): starting a process (subprocess, fork,
multiprocessing), binding or connecting an internet socket (a server, Redis, the HTTP stub) or asking
for PostgreSQL fails it with a message saying how to mark it. So an unmarked test cannot quietly slow
the fast lane down or need a service, and a marked one is a decision visible in its file.
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
INTEGRATION_DIRS = ("ops",)  # tests/integration holds a few pure tests too: they stay in the fast lane
# The fixtures of real parts; a fixture built on one (`schema`, `cluster`) brings it along. `stub_server`:
# a module's own HTTP stub process (tests/providers, tests/chorus/testing/stub).
INTEGRATION_FIXTURES = frozenset({"postgres", "redis_db", "stub", "workers", "stub_server"})
_INET = (socket.AF_INET, socket.AF_INET6)

_guarded: str | None = None  # the node id of the running unmarked test, while it runs


def is_integration(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        uses = INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
        if (len(parts) > 1 and parts[0] in INTEGRATION_DIRS) or uses:
            item.add_marker(pytest.mark.integration)


def refuse(what: str) -> None:
    """Fail the running unmarked test for using `what`. Only on the test's own thread: a thread that an
    integration test left behind (a worker's supervisor, a client's pool) is not the unmarked test's doing."""
    if threading.current_thread() is not threading.main_thread():
        return
    pytest.fail(f"{_guarded} {what} but is not marked integration: mark it `@pytest.mark.integration` (or "
                f"`pytest.param(..., marks=pytest.mark.integration)`), or keep it in-process (the `stub_client` "
                f"fixture answers through the stub with no server). See tests/lanes.py.", pytrace=False)


def require_integration(what: str) -> None:
    """Called by the fixtures of real parts: fails an unmarked test that reached one dynamically
    (`request.getfixturevalue`)."""
    if _guarded is not None:
        refuse(what)


def _refusing(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        refuse(what)
        return original(*args, **kwargs)

    return refused


def _inet_only(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    def checked(sock: socket.socket, *args: Any) -> Any:
        if sock.family in _INET:
            refuse(what)
        return original(sock, *args)

    return checked


@contextlib.contextmanager
def _guard(item: pytest.Item) -> Iterator[None]:
    global _guarded
    if is_integration(item):
        yield
        return
    patches: list[tuple[Any, str, Callable[[Callable[..., Any], str], Callable[..., Any]], str]] = [
        (subprocess.Popen, "_execute_child", _refusing, "starts a process (subprocess)"),
        (os, "fork", _refusing, "forks a process"),
        (os, "posix_spawn", _refusing, "starts a process (posix_spawn)"),
        (os, "posix_spawnp", _refusing, "starts a process (posix_spawnp)"),
        (multiprocessing.util, "spawnv_passfds", _refusing, "starts a process (multiprocessing)"),
        (socket.socket, "bind", _inet_only, "binds a socket (a server)"),
        (socket.socket, "connect", _inet_only, "opens a network connection"),
        (socket.socket, "connect_ex", _inet_only, "opens a network connection"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _, _ in patches]
    _guarded = item.nodeid
    for owner, name, wrap, what in patches:
        setattr(owner, name, wrap(getattr(owner, name), what))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        _guarded = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _guard(item):
        return (yield)

# Teardown is not guarded: the session's fixtures (workers, Redis, PostgreSQL) end in the teardown of
# the session's last test, whichever lane it is in.
