"""The layering that docs/architecture.md describes, checked on the source itself.

Imports run one way: cli → library → (store, maps, head, encoders, zeroshot); engines depend on
the library, never the reverse; only ``stitchkit/report/`` draws, and only ``cli/`` talks to a
terminal. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import re
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


def _in_store(name: str) -> bool:
    return name == "stitchkit.store" or name.startswith("stitchkit.store.")


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


@pytest.mark.slow
def test_importing_the_library_loads_no_plotting_or_terminal_package() -> None:
    code = (
        "import sys, stitchkit.store, stitchkit.maps, stitchkit.head, stitchkit.encoders,"
        " stitchkit.zeroshot, stitchkit.embed;"
        "print(sorted(m for m in ('matplotlib', 'click', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Modules outside stitchkit/store/ that open HDF5 files which are not stores, each its own format
# (nothing else may open one with h5py: a store's layout is read and written by store/ alone).
NOT_STORES = {
    # A Keras 3 .keras file's model.weights.h5, read from the zip in memory: Xception's weights.
    "stitchkit.encoders.xception",
    # `stitch classify`'s HDF5 score files (formats.SCORES_H5: ids, labels, scores, logits),
    # refused unless their `format` attribute says so.
    "stitchkit.zeroshot.score_writer",
}


def _opens_hdf5(source: str) -> list[int]:
    """The lines of ``source`` that use h5py's File (to open an HDF5 file): ``h5py.File``, the
    same under an alias (``import h5py as h``), or ``File`` imported from h5py under any name."""
    tree = ast.parse(source)
    modules, names = set(), set()  # local names of h5py, of h5py.File
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.asname or alias.name for alias in node.names if alias.name == "h5py")
        elif isinstance(node, ast.ImportFrom) and node.module == "h5py" and not node.level:
            names.update(alias.asname or alias.name for alias in node.names if alias.name == "File")
    return sorted(
        node.lineno for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr == "File"
            and isinstance(node.value, ast.Name) and node.value.id in modules)
        or (isinstance(node, ast.Name) and node.id in names)
    )


@pytest.mark.parametrize("source", [
    "import h5py\nwith h5py.File(path) as h5:\n    pass\n",
    "def f(path):\n    import h5py as h\n    return h.File(path, 'r')\n",
    "from h5py import File\nFile(path)\n",
    "from h5py import Dataset, File as Open\nOpen(path)\n",
])
def test_the_hdf5_check_finds_h5py_file(source: str) -> None:
    assert _opens_hdf5(source)


@pytest.mark.parametrize("source", [
    "import h5py\nh5py.is_hdf5(path)\nh5py.string_dtype('utf-8')\n",
    "from .store import read_attr\nread_attr(path, 'format')\n",
    "import zipfile\nzipfile.ZipFile(path)\nFile = open\nFile(path)\n",
])
def test_the_hdf5_check_passes_what_opens_none(source: str) -> None:
    assert not _opens_hdf5(source)


def test_the_head_is_a_leaf_and_only_the_store_opens_stores() -> None:
    """The head uses stores but not the maps, except in one place: a residual head's starting
    map is fitted with the maps' ridge estimator (stitchkit.head.residual); nothing outside
    ``stitchkit.store`` reaches into a store's HDF5 file (one reading layer: runs, tokens, masks,
    pooling) or opens an HDF5 file with h5py, except the modules in ``NOT_STORES``."""
    head_uses_maps = [f"{src} imports {dst}" for src, dsts in GRAPH.items() if src.startswith("stitchkit.head")
                      and src != "stitchkit.head.residual" for dst in dsts if dst.startswith("stitchkit.maps")]
    assert not head_uses_maps, "\n".join(head_uses_maps)
    reaching_in = [name for name, path in MODULES.items() if not _in_store(name)
                   and re.search(r"(?<!self)\._h5\b", path.read_text(encoding="utf-8"))]
    assert not reaching_in, f"modules reading a store's HDF5 file directly: {reaching_in}"
    assert NOT_STORES <= set(MODULES), f"NOT_STORES names modules that are gone: {NOT_STORES - set(MODULES)}"
    opening = [f"{MODULES[name].relative_to(ROOT)}:{line}" for name in sorted(MODULES)
               if not _in_store(name) and name not in NOT_STORES
               for line in _opens_hdf5(MODULES[name].read_text(encoding="utf-8"))]
    assert not opening, ("h5py.File outside stitchkit/store/ (use a function of stitchkit.store, or add "
                         f"a module that opens no store to NOT_STORES): {opening}")


def test_fit_functions_take_objects_not_twenty_arguments() -> None:
    """The estimator, an AnchorPlan and ReadOptions carry the options (six parameters at most)."""
    import inspect

    from stitchkit.maps import check_stitchability, fit_map, fit_token_map, sweep

    wide = {f.__name__: len(inspect.signature(f).parameters)
            for f in (fit_map, check_stitchability, fit_token_map, sweep)}
    assert all(n <= 6 for n in wide.values()), wide


def test_cli_choices_are_the_registries() -> None:
    """A method or strategy added to the library appears in `stitch fit` and `stitch sweep`."""
    from stitchkit.cli.fit import fit
    from stitchkit.cli.sweep import sweep

    from stitchkit.maps import METHODS
    from stitchkit.maps.anchors import STRATEGIES
    from stitchkit.maps.token_pairs import GRIDS

    fit_options = {p.name: p for p in fit.params}
    assert tuple(fit_options["method"].type.choices) == METHODS
    assert tuple(fit_options["strategy"].type.choices) == STRATEGIES
    assert tuple(fit_options["token_grid"].type.choices) == GRIDS
    sweep_options = {p.name: p for p in sweep.params}
    assert tuple(sweep_options["strategy"].type.choices) == STRATEGIES
    assert sweep_options["methods"].type.choices == METHODS
