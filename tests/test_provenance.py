"""The code that made a file (stitchkit.provenance): version, commit, dirty; and every writer
stamps it."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest

from stitchkit.provenance import PACKAGE_ROOT, code_provenance, describe_code

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="no git on the PATH")


def _version() -> str:
    try:
        return version("stitchkit")
    except PackageNotFoundError:
        return "unknown"


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _repo(root: Path) -> str:
    """A git repository at ``root`` with one commit of a tracked file; its commit."""
    root.mkdir()
    _git(root, "init", "-q")
    (root / "tracked.txt").write_text("one\n")
    _git(root, "add", "tracked.txt")
    _git(root, "commit", "-q", "-m", "one")
    return _git(root, "rev-parse", "HEAD")


@needs_git
@pytest.mark.skipif(not (PACKAGE_ROOT / ".git").exists(), reason="stitchkit is not imported from a checkout")
def test_in_this_checkout_the_commit_is_git_rev_parse_head() -> None:
    code = code_provenance()
    assert code["stitchkit"] == _version()
    assert code["commit"] == _git(PACKAGE_ROOT, "rev-parse", "HEAD")
    assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
    assert code_provenance() == code  # cached: the same answer, no second look


def test_outside_a_checkout_only_the_version(tmp_path: Path) -> None:
    (tmp_path / "stitchkit").mkdir()  # as in site-packages: the package, no .git beside it
    assert code_provenance(tmp_path) == {"stitchkit": _version()}
    assert describe_code(code_provenance(tmp_path)) == _version()


@needs_git
def test_a_clean_repo_is_not_dirty_and_untracked_files_do_not_count(tmp_path: Path) -> None:
    commit = _repo(tmp_path / "clean")
    (tmp_path / "clean" / "untracked.txt").write_text("new\n")
    assert code_provenance(tmp_path / "clean") == {"stitchkit": _version(), "commit": commit, "dirty": False}


@needs_git
def test_a_changed_tracked_file_is_dirty(tmp_path: Path) -> None:
    commit = _repo(tmp_path / "changed")
    (tmp_path / "changed" / "tracked.txt").write_text("two\n")
    code = code_provenance(tmp_path / "changed")
    assert code["commit"] == commit and code["dirty"] is True
    assert describe_code(code) == f"{_version()} (commit {commit[:12]}, dirty)"


@needs_git
def test_the_commit_is_read_from_packed_refs_a_detached_head_and_a_worktree(tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    commit = _repo(packed)
    _git(packed, "pack-refs", "--all")
    assert not any((packed / ".git" / "refs" / "heads").iterdir())
    assert code_provenance(packed)["commit"] == commit

    detached = tmp_path / "detached"
    first = _repo(detached)
    (detached / "tracked.txt").write_text("two\n")
    _git(detached, "commit", "-q", "-am", "two")
    _git(detached, "checkout", "-q", "--detach", first)
    assert code_provenance(detached) == {"stitchkit": _version(), "commit": first, "dirty": False}

    _git(packed, "worktree", "add", "-q", "-b", "side", str(tmp_path / "tree"))
    assert (tmp_path / "tree" / ".git").is_file()  # "gitdir: ...": refs in the main repository
    assert code_provenance(tmp_path / "tree")["commit"] == commit


def test_describe_code_of_a_file_written_before_it_was_recorded() -> None:
    assert describe_code(None).startswith("not recorded")
    assert describe_code({"stitchkit": "0.1.0", "commit": "a" * 40, "dirty": None}) == \
        "0.1.0 (commit aaaaaaaaaaaa, dirty: unknown)"


def test_every_writer_names_the_code(tmp_path: Path) -> None:
    """Stores, maps, heads' files (save_artifact), score files and records carry the one answer."""
    from stitchkit.artifacts import read_header, save_artifact
    from stitchkit.inspect import describe_file
    from stitchkit.results import to_record
    from stitchkit.store import EmbeddingStore, write_store
    from stitchkit.zeroshot.score_writer import ScoreWriter, metadata_path

    code = code_provenance()
    write_store(tmp_path / "s.h5", np.array(["a", "b"]), np.ones((2, 3), "f4"), attrs={"modality": "image"})
    with EmbeddingStore(tmp_path / "s.h5") as store:
        assert json.loads(store.attrs["code"]) == code

    save_artifact(tmp_path / "m.map", "map", {"W": np.eye(2)}, {"code": {"stitchkit": "old"}})
    assert read_header(tmp_path / "m.map")["code"] == code  # the writer's, not one read from an old file

    for name in ("scores.csv", "scores.h5"):
        with ScoreWriter(tmp_path / name, ["x", "y"], {"scoring": "cosine"}, with_labels=False) as w:
            w.write(np.array(["a"]), None, np.zeros((1, 2), "f4"), np.full((1, 2), 0.5, "f4"))
        assert describe_file(tmp_path / name)["code"] == code
    assert json.loads(metadata_path(tmp_path / "scores.csv").read_text())["code"] == code

    record = to_record("classify", {"n": 1, "classes": ["x"], "metrics": {"auc": {"x": 0.5}}})
    assert {k: record["provenance"][k] for k in code} == code and "created" in record["provenance"]
    assert not set(code) & set(record["metrics"])  # provenance never enters compared metrics
    (tmp_path / "r.json").write_text(json.dumps(record))
    assert describe_file(tmp_path / "r.json")["code"] == code
    assert describe_file(tmp_path / "s.h5")["code"] == code
