"""The layering that docs/architecture.md describes, checked on the source itself.

Imports run one way: cli → library → (store, maps, head, encoders, zeroshot); engines depend on
the library, never the reverse; only ``stitchkit/report/`` draws, and only ``cli/`` talks to a
terminal. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"stitchkit": ROOT / "stitchkit", "stitchkit.cli": ROOT / "cli",
                "stitchkit.anchors": ROOT / "anchors"}


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every stitchkit module that ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _is_package_init(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its own submodules is not a cycle of the design; any
    # other loop (a module reaching itself) is.
    graph = {
        src: {dst for dst in dsts if not (_is_package_init(src) and dst.startswith(src + "."))}
        for src, dsts in GRAPH.items()
    }
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" → ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_library_never_imports_the_cli_or_the_engines() -> None:
    wrong = [
        f"{src} imports {dst}"
        for src, dsts in GRAPH.items()
        if not src.startswith(("stitchkit.cli", "stitchkit.engines"))
        for dst in dsts
        if dst.startswith(("stitchkit.cli", "stitchkit.engines"))
    ]
    assert not wrong, "\n".join(wrong)


def _third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("forbidden", ["matplotlib", "click", "rich"])
def test_only_report_draws_and_only_cli_talks_to_a_terminal(forbidden: str) -> None:
    allowed = ("stitchkit.cli",) + (("stitchkit.report",) if forbidden == "matplotlib" else ())
    wrong = [name for name, path in MODULES.items()
             if not name.startswith(allowed) and forbidden in _third_party(path)]
    assert not wrong, f"{forbidden} imported by {wrong}"


def test_importing_the_library_loads_no_plotting_or_terminal_package() -> None:
    code = (
        "import sys, stitchkit.store, stitchkit.maps, stitchkit.head, stitchkit.encoders,"
        " stitchkit.zeroshot, stitchkit.embed;"
        "print(sorted(m for m in ('matplotlib', 'click', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
