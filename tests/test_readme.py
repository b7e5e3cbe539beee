from pathlib import Path

import pytest

from settings import Settings, _env_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [_env_name((name,)) for name in Settings.model_fields if f"`{_env_name((name,))}`" not in README]
    assert missing == []


def test_the_readme_gives_the_two_setup_commands():
    assert "pip install -e . && chorus demo" in README
    assert "bash .ci/run" in README


def test_the_readme_names_the_fast_lane_by_the_marker_the_suite_defines():
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert 'python3 -m pytest -q -m "not integration"' in README
    assert '"integration: ' in pyproject  # a registered marker (--strict-markers refuses a typo)


def test_the_task_files_the_readme_shows_are_the_shipped_examples():
    import re
    import tomllib

    from workflows.taskfile import parse_task, task_hash

    blocks = re.findall(r"```toml\n(.*?)```", README, re.S)
    tasks = [data for data in map(tomllib.loads, blocks) if "pattern" in data and "jobs" not in data]
    shown = {t.name: task_hash(t) for t in map(parse_task, tasks)}
    examples = Path(__file__).resolve().parent.parent / "examples"
    files = [tomllib.loads(p.read_text()) for p in examples.glob("*.toml")]
    shipped = {t.name: task_hash(t) for t in map(parse_task, files)}
    assert set(shown) == {"ticket-urgency", "man-options", "contract-review"}
    assert shown == {name: shipped[name] for name in shown}


def test_the_readmes_worker_commands_each_have_a_node_name_of_their_own():
    import re

    commands = [line for line in README.splitlines() if line.startswith("celery -A worker worker")]
    names = [re.search(r"-n (\S+)", line) for line in commands]
    assert commands and all(names), "a worker without -n is celery@hostname: Flower warns of duplicate nodes"
    assert len({m.group(1) for m in names if m}) == len(commands)


@pytest.mark.integration  # `python -m bench list`, a process
def test_the_benchmarks_the_readme_and_benchmarks_md_name_are_the_ones_bench_runs():
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run([sys.executable, "-m", "bench", "list"], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    modules = {line.split()[1] for line in listed.splitlines() if line.strip()}
    named = set(re.findall(r"python -m (bench\.[a-z_]+)", README + (root / "BENCHMARKS.md").read_text()))
    named -= {"bench.manpages", "bench.peers"}  # a data set and the peers' package, not benchmarks
    assert named and named <= modules, named - modules


def test_the_readmes_models_file_is_a_valid_user_models_file_with_prices():
    import re

    from workflows import registry
    from workflows.cost import TokenUsage, cost_of

    blocks = [b for b in re.findall(r"```toml\n(.*?)```", README, re.S) if "[[model]]" in b]
    assert len(blocks) == 1
    table = registry.parse_user_models(blocks[0], "README.md")
    try:
        registry.use_user_models(table)
        (model_id,) = {info.id for info in table.values()}
        info = registry.model_info(model_id)
        assert info is not None and info.origin == "README.md"
        assert cost_of(model_id, TokenUsage(1_000_000, 0)).total_usd > 0
    finally:
        registry.use_user_models(None)
