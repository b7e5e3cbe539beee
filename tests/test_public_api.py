"""`chorus.__all__` is the public API, and it covers what the README's Python API section shows."""

from __future__ import annotations

import re
from pathlib import Path

import chorus

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def python_api_section() -> str:
    start = README.index("## Python API")
    return README[start:README.index("\n## ", start + 1)]


def names_the_readme_uses() -> set[str]:
    section = python_api_section()
    imported = {name.strip() for line in re.findall(r"^from chorus import (.+)$", section, re.M)
                for name in line.split(",")}
    called = set(re.findall(r"`([a-z_]+)\(", section))  # `submit_section(text, ...)`
    types = set(re.findall(r"`([A-Z][A-Za-z]+)`", section))  # `Settings`, `ConfigError`, `RunView`
    return imported | called | types


def test_every_name_the_readme_shows_is_exported_by_chorus():
    used = names_the_readme_uses()
    assert {"submit_vote", "wait_for_run", "submit_section", "run_batch", "load_settings"} <= used
    assert sorted(used - set(chorus.__all__)) == []


def test_everything_in_all_exists_and_nothing_is_listed_twice():
    assert len(chorus.__all__) == len(set(chorus.__all__))
    assert [name for name in chorus.__all__ if not hasattr(chorus, name)] == []


def test_the_public_functions_take_the_settings_they_should_use():
    import inspect

    takes = [name for name in chorus.__all__ if inspect.isfunction(getattr(chorus, name))
             and name not in ("load_settings", "celery_app", "load_task")]  # load_task only reads a file
    assert [n for n in takes if "settings" not in inspect.signature(getattr(chorus, n)).parameters] == []
