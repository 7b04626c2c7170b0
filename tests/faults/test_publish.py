"""Power-cut safety of publishing: the data are fsynced before the rename, the folder after it.

A kill -9 cannot lose written data (the page cache survives the process), but a power cut can:
without an fsync before the rename, the new name may point at blocks never written. These
tests record the order of ``os.fsync`` and ``os.replace`` calls (the real calls still run).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stitchkit import fileio
from stitchkit.fileio import atomic_output, publish


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """("fsync", (device, inode)) and ("replace", (src, dst)) in the order they happen."""
    log: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        log.append(("fsync", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    def replace(src: object, dst: object, **kw: object) -> None:
        log.append(("replace", (Path(src), Path(dst))))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_publish_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, calls: list[tuple[str, object]]
) -> None:
    tmp, final = tmp_path / ".x.partial", tmp_path / "x.bin"
    tmp.write_bytes(b"whole")
    file_key, dir_key = _key(tmp), _key(tmp_path)
    publish(tmp, final)
    assert calls == [("fsync", file_key), ("replace", (tmp, final)), ("fsync", dir_key)]
    assert final.read_bytes() == b"whole" and not tmp.exists()


def test_atomic_output_publishes_through_the_helper(
    tmp_path: Path, calls: list[tuple[str, object]]
) -> None:
    final = tmp_path / "scores.csv"
    with atomic_output(final) as tmp:
        tmp.write_text("id\n")
        file_key = _key(tmp)
    assert calls == [("fsync", file_key), ("replace", (tmp, final)), ("fsync", _key(tmp_path))]


def test_a_folder_is_fsynced_file_by_file_before_its_rename(
    tmp_path: Path, calls: list[tuple[str, object]]
) -> None:
    tmp, final = tmp_path / ".export.partial", tmp_path / "export"
    (tmp / "img_emb").mkdir(parents=True)
    (tmp / "img_emb" / "a.npy").write_bytes(b"a")
    (tmp / "stitchkit.json").write_text("{}")
    inner = {_key(tmp / "img_emb" / "a.npy"), _key(tmp / "stitchkit.json"), _key(tmp / "img_emb")}
    folder_key = _key(tmp)
    publish(tmp, final)
    kinds = [kind for kind, _ in calls]
    at = kinds.index("replace")
    assert kinds.count("replace") == 1 and calls[at] == ("replace", (tmp, final))
    before = [key for _, key in calls[:at]]
    assert set(before) == inner | {folder_key} and before[-1] == folder_key  # the folder last
    assert calls[at + 1:] == [("fsync", _key(tmp_path))]


def test_a_store_is_on_disk_before_its_name_appears(
    tmp_path: Path, calls: list[tuple[str, object]]
) -> None:
    from stitchkit.store import EmbeddingStore, write_store

    final = tmp_path / "s.h5"
    write_store(final, ["a", "b"], np.eye(2, 3, dtype=np.float32))
    at = [kind for kind, _ in calls].index("replace")
    assert calls[at][1][1] == final
    assert calls[at - 1] == ("fsync", _key(final))  # the same inode, before it had this name
    assert calls[at + 1] == ("fsync", _key(tmp_path))
    with EmbeddingStore(final) as store:
        assert list(store.ids) == ["a", "b"]


def test_publishing_renames_go_through_the_helper() -> None:
    """No module but fileio renames a result into place itself."""
    root = Path(fileio.__file__).resolve().parents[1]
    offenders = []
    for folder in ("stitchkit", "cli"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "fileio.py":
                continue
            text = path.read_text(encoding="utf-8")
            for needle in ("os.replace(", "os.rename(", ".rename("):
                if needle in text:
                    offenders.append(f"{path.relative_to(root)}: {needle}")
    assert not offenders, offenders


def test_a_folder_that_cannot_be_fsynced_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from a folder's fsync (some network and FUSE file systems) does not fail a write."""
    import errno

    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):  # Linux: the link names the open folder
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_output(tmp_path / "x.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "x.txt").read_text() == "x"


def test_scratch_folders_of_dead_runs_are_removed(tmp_path: Path) -> None:
    """classify's metrics spill (and export's folder being built) beside the output: a run killed
    mid-way leaves ``PREFIX<host>-<pid>-*``; the next run on this host removes it."""
    from stitchkit.fileio import _HOST, temporary_dir

    prefix = ".stitch-metrics-"
    dead = tmp_path / f"{prefix}{_HOST}-{2**22 + 12345}-abc_1"  # above pid_max: never running
    alive = tmp_path / f"{prefix}{_HOST}-{os.getppid()}-abc_2"
    other_host = tmp_path / f"{prefix}another-host-1-abc_3"
    for p in (dead, alive, other_host):
        (p / "rank-0.bin").parent.mkdir()
        (p / "rank-0.bin").write_bytes(b"\0")
    new = temporary_dir(tmp_path, prefix)
    assert new.is_dir() and new.name.startswith(f"{prefix}{_HOST}-{os.getpid()}-")
    assert not dead.exists() and alive.exists() and other_host.exists()
