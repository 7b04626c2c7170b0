"""The suite's own rules (tests/conftest.py): caches of the run's own, state left as found,
stores copied bit for bit."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tests.conftest import _state, changed_state, copy_store


def test_caches_are_the_runs_own_not_the_users() -> None:
    from stitchkit.encoders.onnx_runtime import cache_dir as onnx_cache
    from stitchkit.zeroshot.prompt_cache import cache_dir as prompt_cache

    run_cache = Path(os.environ["STITCHKIT_CACHE"])
    assert run_cache.is_relative_to(tempfile.gettempdir()) and run_cache.name.startswith("stitchkit-test-cache-")
    home = Path.home() / ".cache"
    for folder in (onnx_cache(), prompt_cache(), Path(os.environ["XDG_CACHE_HOME"]), Path(os.environ["MPLCONFIGDIR"])):
        assert folder.is_relative_to(run_cache) and not folder.is_relative_to(home), folder


def test_a_change_of_threads_environment_or_folder_is_seen(tmp_path: Path, monkeypatch) -> None:
    import torch

    before = _state()
    assert changed_state(before, _state()) == []
    n = torch.get_num_threads()
    torch.set_num_threads(n + 1)
    try:
        assert changed_state(before, _state()) == [f"torch threads {n} -> {n + 1}"]
    finally:
        torch.set_num_threads(n)
    monkeypatch.setenv("STITCHKIT_SUITE_PROBE", "1")
    monkeypatch.chdir(tmp_path)
    changes = changed_state(before, _state())
    assert changes == ["$STITCHKIT_SUITE_PROBE None -> '1'", f"working folder {before['working folder']} -> {tmp_path}"]


def test_a_copied_store_holds_the_rows_bit_for_bit(tmp_path: Path) -> None:
    from stitchkit.store import EmbeddingStore, StoreWriter
    from stitchkit.store.store import base_attrs

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(6)]
    glob = rng.normal(size=(6, 4)).astype(np.float32)
    toks = rng.normal(size=(6, 3, 4)).astype(np.float16)
    mask = np.ones((6, 3), bool)
    with StoreWriter(tmp_path / "a.h5", dim=4, attrs=base_attrs(modality="image", model_spec="toy"),
                     columns=["labels"], token_shape=(3, 4)) as w:
        w.append(ids, glob, columns={"labels": list("ababab")}, tokens=toks, tokens_mask=mask)
    copy = copy_store(tmp_path / "a.h5", tmp_path / "b.h5", ids=["s4", "s1"], tokens=False)
    with EmbeddingStore(copy) as s:
        assert list(s.ids) == ["s1", "s4"] and not s.has_tokens  # the store's order, not the request's
        np.testing.assert_array_equal(s.read(np.arange(2)), glob[[1, 4]])
        assert list(s.labels) == ["b", "a"] and s.model_spec == "toy"
    with EmbeddingStore(copy_store(tmp_path / "a.h5", tmp_path / "c.h5", ids=["s2"])) as s:
        got, got_mask = s.read_tokens(np.arange(1), dtype=np.float16)
        np.testing.assert_array_equal(got, toks[[2]])
        assert got_mask.all()
