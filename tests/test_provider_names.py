"""No provider is told apart by its name outside `providers/`: callers read its capabilities
(`providers.provider_capabilities`), and only `providers/` imports the Anthropic provider's module.

The check reads the syntax tree, not the text, so a comment or a docstring that names a provider, a
name printed or stored on a run (`provider=settings.provider_name`), is fine; a comparison is not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("chorus", "tasks", "workflows", "models", "worker.py", "settings.py")
NAMES = frozenset({"anthropic", "offline"})
NAME_ATTRIBUTES = frozenset({"provider_name"})
PROVIDER_MODULE = "providers.anthropic_provider"


def checked_files() -> Iterator[Path]:
    for entry in CHECKED:
        path = ROOT / entry
        if path.suffix == ".py":
            yield path
        else:
            yield from (p for p in sorted(path.rglob("*.py")) if "migrations" not in p.parts)


def _reads_name(node: ast.AST) -> bool:
    """An expression reading `provider_name`."""
    if isinstance(node, ast.Attribute):
        return node.attr in NAME_ATTRIBUTES
    return isinstance(node, ast.Name) and node.id in NAME_ATTRIBUTES


def _is_name(node: ast.AST) -> bool:
    """A provider's name: the string itself, or an expression reading `provider_name`."""
    if isinstance(node, ast.Constant):
        return node.value in NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_name(e) for e in node.elts)
    return _reads_name(node)


def _why(node: ast.AST) -> str | None:
    if isinstance(node, ast.Compare) and any(_is_name(n) for n in (node.left, *node.comparators)):
        return "compares a provider name"
    if isinstance(node, ast.Match) and _reads_name(node.subject):
        return "matches on a provider name"
    if isinstance(node, ast.Subscript) and _reads_name(node.slice):
        return "looks a provider name up"
    if isinstance(node, ast.Import) and any(a.name.startswith(PROVIDER_MODULE) for a in node.names):
        return f"imports {PROVIDER_MODULE}"
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if module.startswith(PROVIDER_MODULE) or (module == "providers" and
                                                   any(a.name == "anthropic_provider" for a in node.names)):
            return f"imports {PROVIDER_MODULE}"
    return None


def name_switches(source: str, where: str) -> list[str]:
    """`where:line: why` for every place the source switches on a provider's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        why = _why(node)
        if why is not None:
            found.append(f"{where}:{getattr(node, 'lineno', 0)}: {why} (read providers.provider_capabilities)")
    return sorted(found)


def test_no_code_outside_providers_switches_on_a_provider_name() -> None:
    found = [hit for path in checked_files()
             for hit in name_switches(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source", [
    'with_cache = cache_aware and settings.provider_name == "anthropic"',  # chorus/vote.py before issue 23
    'if lane_name == "batch" and settings.provider_name != "anthropic":\n    pass',
    'if get_settings().provider_name == "anthropic":\n    import providers.anthropic_provider',
    'ok = name in ("offline", "other")',
    'ok = provider_name in SUPPORTED',
    'match settings.provider_name:\n    case _:\n        pass',
    'size = SIZES[settings.provider_name]',
    'from providers.anthropic_provider import entry_size',
    'from providers import anthropic_provider',
])
def test_the_check_finds_a_switch_on_a_name(source: str) -> None:
    assert name_switches(source, "x.py")


@pytest.mark.parametrize("source", [
    'run = Run(provider=settings.provider_name)',
    '"""Uses providers.anthropic_provider when a key is set; anthropic == best."""',
    'with_cache = cache_aware and provider_capabilities(settings).caches_prompts',
    'print(f"provider: {settings.provider_name}")',
    'from providers import get_provider, provider_capabilities',
    'provider: Literal["auto", "anthropic", "offline"] = "auto"',
])
def test_the_check_lets_a_name_be_shown_or_stored(source: str) -> None:
    assert name_switches(source, "x.py") == []
