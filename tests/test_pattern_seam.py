"""No pattern is told apart outside its own modules: everything else reads the `chorus.plans.Plan`
protocol (client) and the `tasks.patterns` registry (worker), so a new pattern is new modules plus a
registration, not a branch in budget, batch, dispatch, the reaper, the lane, cancel or status."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chorus", "tasks", "models", "workflows")

# What switching on a pattern looks like: its plan or spec type, its fields, its enum value or its name.
SWITCHES = re.compile(
    r"isinstance\([^)]*\b\w*(Plan|Spec)\b"
    r"|hasattr\([^)]*[\"'](panel|sections)[\"']"
    r"|\bPattern\.(VOTE|SECTION|ORCHESTRATE)\b"
    r"|[!=]=\s*[\"'](vote|section|orchestrate)[\"']"
    r"|[\"'](vote|section|orchestrate)[\"']\s*[!=]="
)

# A pattern's own modules, and the places that are about one pattern by nature.
OWN = {
    "chorus/vote.py", "chorus/section.py", "chorus/orchestrate.py",  # the plans
    "tasks/vote.py", "tasks/section.py", "tasks/orchestrate.py",  # the worker side
    "chorus/cli/orchestrate.py",  # the pattern's own command (it checks a task file is of its pattern)
    "workflows/voting.py", "workflows/sectioning.py", "workflows/runspec.py", "workflows/escalation.py",
    "workflows/cascade.py", "workflows/orchestrating.py",
    "chorus/planners.py", "tasks/patterns.py",  # the registries
    "workflows/taskfile.py", "chorus/taskfile.py",  # task files: each pattern's own fields
    "chorus/analysis/advise.py", "chorus/analysis/report.py", "chorus/analysis/failures.py",  # about votes
    "chorus/analysis/measure.py",  # `chorus advise` measures votes
}
# Single lines elsewhere that are about one pattern by nature: (file, text on the line).
LINES = {
    ("chorus/cli/runs.py", "pattern=Pattern.VOTE"),  # `chorus demo` is a vote on the bundled reviews
}


def switches(root: Path = ROOT) -> list[str]:
    """file:line: text of every switch on a pattern outside the pattern's own modules."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if name in OWN or "/migrations/" in name or "/testing/" in name:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if SWITCHES.search(code) and not any(name == f and text in code for f, text in LINES):
                    found.append(f"{name}:{n}: {line.strip()}")
    return found


def test_no_module_switches_on_a_pattern_outside_its_own():
    assert switches() == []


def test_the_check_finds_each_kind_of_switch(tmp_path):
    lines = ['if isinstance(plan, VotePlan):', 'if hasattr(probe, "panel"):', 'if hasattr(p, "sections"):',
             'if pattern is Pattern.SECTION:', 'if run.pattern == "vote":', 'if "section" != kind:',
             'if isinstance(spec, SectionSpec):', 'if p is Pattern.ORCHESTRATE:', 'if kind == "orchestrate":']
    (tmp_path / "chorus").mkdir()
    (tmp_path / "chorus" / "budget.py").write_text("\n".join(lines) + "\nok = plan.pattern\n", encoding="utf-8")
    assert [f.split(":")[1] for f in switches(tmp_path)] == [str(n) for n in range(1, len(lines) + 1)]


def test_every_pattern_has_one_entry_on_the_worker_side_and_a_planner_on_the_client_side():
    from chorus.planners import PLANNERS
    from models import OutcomeRole, Pattern
    from tasks import all_patterns, patterns  # noqa: F401 - all_patterns registers every entry

    registry = patterns.registry()
    assert set(registry) == set(PLANNERS) == set(Pattern)
    assert {role for e in registry.values() for role in e.roles} == set(OutcomeRole)
    assert patterns.settling() == {p for p, e in registry.items() if e.settle is not None}


def test_the_worker_imports_the_module_of_every_pattern():
    import worker
    from tasks import all_patterns, patterns

    modules = {m.__name__ for m in all_patterns.PATTERN_MODULES}
    assert {e.send.__module__ for e in patterns.registry().values()} == modules
    assert modules <= set(worker.TASK_MODULES)
