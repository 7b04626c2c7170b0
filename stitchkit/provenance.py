"""Which code made a file: stitchkit's version, and its git commit when it runs from a checkout.

Every record, score file, map, head and embedding store stitchkit writes carries
:func:`code_provenance` (under ``code``; a record's ``provenance`` holds its keys), so two runs
of different code are told apart even when both say version 0.1.0:

- ``stitchkit``: the installed version (``importlib.metadata``; "unknown" in a source tree
  that was never installed);
- ``commit``: the 40-hex commit checked out, when the package is imported from a git checkout
  (a folder holding both ``stitchkit/`` and ``.git``); absent otherwise (a wheel install);
- ``dirty``: whether tracked files differ from that commit (untracked files do not count);
  null when git could not say (no ``git`` on the PATH, a repository git refuses to read, a
  timeout).

It is computed once per process. The commit is read from the files under ``.git`` (HEAD, then
the loose ref or ``packed-refs``, worktrees' ``gitdir:`` and ``commondir`` followed): no
process, and it works where no ``git`` is installed. "Dirty" needs the index compared with the
tree, which only git does well: one ``git status --porcelain=v2 --branch
--untracked-files=no`` with a short timeout and ``GIT_OPTIONAL_LOCKS=0`` (so it never takes the
index lock from a ``git`` someone runs at the same time); its ``# branch.oid`` line gives the
commit where the ref files cannot (a reftable repository).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, or site-packages
GIT_TIMEOUT_S = 5.0
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories


def code_provenance(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"stitchkit": version, "commit": sha, "dirty": bool}`` of the code running now, or
    ``{"stitchkit": version}`` when ``root`` (the folder the ``stitchkit`` package sits in; by
    default the one this module was imported from) is not a git checkout. Cached per root."""
    return dict(_cached(Path(root).resolve() if root is not None else PACKAGE_ROOT))


def describe_code(code: dict[str, Any] | None) -> str:
    """One line for people: ``0.1.0 (commit 1a2b3c4d5e6f, dirty)``; "unknown" for a file
    written before stitchkit recorded it."""
    if not code:
        return "not recorded (written before stitchkit recorded it, or by another tool)"
    text = str(code.get("stitchkit", "unknown"))
    if code.get("commit"):
        dirty = {True: ", dirty", False: "", None: ", dirty: unknown"}[code.get("dirty")]
        text += f" (commit {str(code['commit'])[:12]}{dirty})"
    return text


@functools.lru_cache(maxsize=8)
def _cached(root: Path) -> tuple[tuple[str, Any], ...]:
    out: dict[str, Any] = {"stitchkit": _version()}
    git_dir = _git_dir(root)
    if git_dir is not None:
        commit = _read_commit(git_dir)
        status_commit, dirty = _status(root)
        commit = commit or status_commit
        if commit:
            out["commit"], out["dirty"] = commit, dirty
    return tuple(out.items())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stitchkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _git_dir(root: Path) -> Path | None:
    """``root/.git`` (a folder, or a worktree's ``gitdir:`` file followed); None when absent."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        text = _read(dot)
        if text and text.startswith("gitdir:"):
            target = Path(text[len("gitdir:"):].strip())
            target = target if target.is_absolute() else root / target
            return target if target.is_dir() else None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_commit(git_dir: Path) -> str | None:
    """The commit HEAD names, from the files alone; None where they cannot say."""
    common = git_dir
    pointer = _read(git_dir / "commondir")  # a linked worktree: refs live in the main .git
    if pointer:
        common = Path(pointer) if Path(pointer).is_absolute() else git_dir / pointer
    value = _read(git_dir / "HEAD")
    for _ in range(5):  # HEAD → refs/heads/x → (a symbolic ref may point once more)
        if value is None:
            return None
        if _SHA.match(value):
            return value
        if not value.startswith("ref:"):
            return None
        ref = value[len("ref:"):].strip()
        value = _read(git_dir / ref) or _read(common / ref) or _packed(common, ref)
    return None


def _packed(common: Path, ref: str) -> str | None:
    for line in (_read(common / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and _SHA.match(sha):
            return sha
    return None


def _status(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) from one ``git status``; (None, None) when git cannot say."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if done.returncode != 0:
        return None, None
    commit, dirty = None, False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[-1]
            commit = oid if _SHA.match(oid) else None
        elif line and not line.startswith("#"):
            dirty = True
    return commit, dirty
