"""Readers during writes: a store at its final path is absent or whole, never half-written.

Eight reader processes open an ``EmbeddingStore`` at one path over and over while another
process publishes new versions of a store at that path (``StoreWriter``, the writer behind
`stitch embed`, `apply`, `merge` and the prompt cache), as a re-run with --overwrite does.
Every open must find no file (before the first version), or a complete store whose every row
is the one its version wrote: never an HDF5 error, a truncated file or rows of two versions.
About 10 s.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

N, DIM = 3000, 256  # a 3 MB store written in 15 appends: a long window for a torn read
READERS = 8
WRITE_SECONDS = 6.0


def _rows(version: int) -> tuple[list[str], np.ndarray]:
    """Version ``version`` of the store: ids and values a reader can check row by row."""
    ids = [f"v{version}-{i}" for i in range(N)]
    values = version * 10_000 + np.arange(N, dtype=np.float32)[:, None] + np.zeros((1, DIM), np.float32)
    return ids, values


def _writer(path: str, published) -> None:  # noqa: ANN001 - a multiprocessing Value
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs

    version, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < WRITE_SECONDS:
        ids, values = _rows(version)
        with StoreWriter(path, dim=DIM, attrs=base_attrs(modality="image", version=version),
                         expected_rows=N) as w:
            for a in range(0, N, 200):
                w.append(ids[a:a + 200], values[a:a + 200])
        version += 1
        published.value = version


def _reader(path: str, ready, stop, results) -> None:  # noqa: ANN001 - multiprocessing proxies
    from stitchkit.errors import StoreError
    from stitchkit.store import EmbeddingStore

    absent = whole = 0
    problems: list[str] = []
    deadline = time.monotonic() + 120  # never spin on if the test that started us is gone
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with EmbeddingStore(path) as store:
                version = int(store.attrs["version"])
                ids, values = _rows(version)
                assert store.complete, "marked incomplete"
                assert len(store) == N and store.dim == DIM, f"{len(store)} x {store.dim} rows"
                assert list(store.ids) == ids, "ids of another version"
                assert np.array_equal(store.read(), values), "rows of another version"
            whole += 1
        except StoreError as exc:
            if f"{path}: no such file" in str(exc):
                absent += 1
            else:
                problems.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any other failure is what this test looks for
            problems.append(f"{type(exc).__name__}: {exc}")
        if absent + whole + len(problems) == 1:
            with ready.get_lock():
                ready.value += 1
    results.put((absent, whole, problems[:5], len(problems)))


@pytest.mark.slow
def test_readers_see_no_store_or_a_whole_one_while_it_is_published(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # no HDF5 state inherited from this process
    path = str(tmp_path / "live.h5")
    ready, stop, published, results = ctx.Value("i", 0), ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(path, ready, stop, results)) for _ in range(READERS)]
    writer = ctx.Process(target=_writer, args=(path, published))
    try:
        for r in readers:
            r.start()
        deadline = time.monotonic() + 60
        while ready.value < READERS and time.monotonic() < deadline:  # all read "no file" once
            time.sleep(0.05)
        writer.start()
        writer.join(120)
    finally:
        stop.set()
    got = [results.get(timeout=60) for _ in readers]
    for p in (*readers, writer):
        p.join(30)
        if p.is_alive():
            p.kill()
    assert writer.exitcode == 0
    absent = sum(g[0] for g in got)
    whole = sum(g[1] for g in got)
    problems = [p for g in got for p in g[2]]
    n_problems = sum(g[3] for g in got)
    assert not n_problems, f"{n_problems} torn reads of {absent + whole + n_problems}, e.g. {problems}"
    assert published.value >= 5, f"only {published.value} versions published"
    assert absent >= READERS and whole > 0, (absent, whole)
