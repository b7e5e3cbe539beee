"""Start-up (issue 25: `chorus --help` took 3.2 s): the CLI and `import chorus` import no heavy package
before a command needs it, and the lazy public API still has every name. Times are in bench/startup.py;
these tests check what is imported, which does not depend on the machine's load."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import chorus
from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
# Each costs from 50 ms to a second to import; none is needed to list commands or models.
HEAVY = ("celery", "kombu", "sqlalchemy", "alembic", "anthropic", "httpx", "pypdf", "docx", "bs4", "PIL", "redis")


def modules_after(code: str, tmp_path: Path) -> set[str]:
    """The top-level packages imported by a fresh Python that ran `code` (its SystemExit ignored)."""
    out = tmp_path / "modules.json"
    script = (f"import sys, json\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
              f"open({str(out)!r}, 'w').write(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean_env(CHORUS_DATA_DIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(out.read_text()))


def run_cli(*args: str) -> str:
    return f"import sys\nsys.argv = ['chorus', *{list(args)!r}]\nfrom chorus.cli import app\napp()\n"


@pytest.mark.integration  # the command, in a process of its own
@pytest.mark.parametrize("args", [["--help"], ["models"], ["models", "--json"], ["vote", "--help"],
                                  ["batch", "--help"], ["task", "check", "--help"]])
def test_the_help_and_models_commands_import_no_heavy_package(args, tmp_path):
    loaded = modules_after(run_cli(*args), tmp_path)
    assert "typer" in loaded  # the command ran
    assert sorted(loaded & set(HEAVY)) == []


@pytest.mark.integration  # a fresh interpreter
def test_import_chorus_imports_nothing_heavy_until_a_name_is_used(tmp_path):
    assert sorted(modules_after("import chorus", tmp_path) & set(HEAVY)) == []
    assert {"sqlalchemy", "celery"} <= modules_after("import chorus\nchorus.submit_vote", tmp_path)


@pytest.mark.integration  # a fresh interpreter
def test_the_help_still_lists_every_command(tmp_path):
    from typer.testing import CliRunner

    from chorus.cli import app

    done = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    names = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None]
    assert len(names) >= 15
    assert [n for n in [*names, "db", "task"] if n not in done.output] == []


def test_every_public_name_has_one_home_and_the_type_checking_imports_name_the_same():
    homes = chorus._MODULE_OF
    assert sorted(set(chorus.__all__) ^ set(homes)) == []
    tree = ast.parse((ROOT / "chorus" / "__init__.py").read_text(encoding="utf-8"))
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {(node.module, alias.name) for node in guarded.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == {(module, name) for name, module in homes.items()}
    for name in chorus.__all__:
        assert getattr(chorus, name) is getattr(__import__(homes[name], fromlist=[name]), name)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'submit_everything'"):
        chorus.submit_everything  # noqa: B018
