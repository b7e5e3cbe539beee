"""A non-editable install (`pip install .`): what it adds to site-packages, and `chorus demo` from an
empty directory, importing the installed copy rather than this checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, clean_env, user_store

pytestmark = pytest.mark.integration

LAYERS = {"chorus", "worker", "settings", "tasks", "workflows", "models", "providers"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """chorus installed from this tree as `pip install .` builds it (a wheel, not editable), into a
    folder of its own; its dependencies are this interpreter's (in a fresh venv or not)."""
    work = tmp_path_factory.mktemp("install")
    source, target = work / "source", work / "site"
    # A copy: building writes build/ and *.egg-info into the source tree, which the linters would then read.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", ".chorus", ".venv",
                                                                "__pycache__", "*_cache", "results"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(source)], capture_output=True, text=True, timeout=300,
                          env=clean_env(PIP_ROOT_USER_ACTION="ignore"))
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def on(target: Path) -> dict[str, str]:
    """A user's environment with the installed copy first on the path (and no checkout in sight)."""
    return clean_env(PYTHONPATH=str(target))


def test_the_install_adds_only_chorus_and_the_layers_top_level_names(installed):
    record = next(installed.glob("chorus-*.dist-info")) / "RECORD"
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    names = {t.removesuffix(".py") for t in tops
             if not t.endswith(".dist-info") and t not in ("..", "bin", "__pycache__")}
    assert names == LAYERS


def test_chorus_demo_runs_from_an_empty_directory_on_the_installed_copy(installed, tmp_path):
    where = subprocess.run([sys.executable, "-c", "import chorus, worker; print(chorus.__file__, worker.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=on(installed), timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(installed)) for path in where.stdout.split()), where.stdout

    demo = subprocess.run([str(installed / "bin" / "chorus"), "demo", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, env=on(installed), timeout=240, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stderr[-3000:]
    report = json.loads(demo.stdout)
    assert report["mode"] == "embedded" and report["documents"] == 8
    assert all(run["status"] == "succeeded" for run in report["runs"])
    assert user_store(tmp_path).is_dir() and not (tmp_path / ".chorus").exists()  # the user's one store
