"""`stitch export` to clip-retrieval's layout and `stitch import` back, on the session's real stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.export import export_store, import_folder
from stitchkit.store import EmbeddingStore

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def test_export_writes_chunked_npy_and_parquet(lite0_store: Path, tmp_path: Path):
    result = export_store(lite0_store, tmp_path / "emb", chunk_size=70)
    with EmbeddingStore(lite0_store) as store:
        n, ids, labels, emb = len(store), store.ids, store.labels, store.embeddings[()]
    assert result["chunks"] == -(-n // 70) and result["embeddings"] == "img_emb"
    parts = [np.load(tmp_path / "emb" / "img_emb" / f"img_emb_{i}.npy") for i in range(result["chunks"])]
    assert [len(p) for p in parts[:-1]] == [70] * (len(parts) - 1)
    assert np.array_equal(np.concatenate(parts), emb) and parts[0].dtype == np.float32
    meta = pa.concat_tables([pq.read_table(tmp_path / "emb" / "metadata" / f"metadata_{i}.parquet")
                             for i in range(result["chunks"])])
    assert meta.column("id").to_pylist() == ids.tolist()
    assert meta.column("label").to_pylist() == labels.tolist()
    info = json.loads((tmp_path / "emb" / "stitchkit.json").read_text())
    assert info["store"]["model_spec"] == "lite0" and info["rows"] == n


def test_import_gives_back_the_store_and_its_provenance(lite0_store: Path, tmp_path: Path):
    export_store(lite0_store, tmp_path / "emb", chunk_size=50)
    import_folder(tmp_path / "emb", tmp_path / "back.h5")
    with EmbeddingStore(lite0_store) as a, EmbeddingStore(tmp_path / "back.h5") as b:
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.embeddings[()], b.embeddings[()])
        assert a.space() == b.space()  # same model, weights and width: fit/apply accept it


def test_text_store_goes_to_text_emb_with_captions(minilm_store: Path, tmp_path: Path):
    export_store(minilm_store, tmp_path / "t", dtype="float16")
    arr = np.load(tmp_path / "t" / "text_emb" / "text_emb_0.npy")
    assert arr.dtype == np.float16
    meta = pq.read_table(tmp_path / "t" / "metadata" / "metadata_0.parquet")
    with EmbeddingStore(minilm_store) as store:
        assert meta.column("caption").to_pylist() == store.texts.tolist()
        assert np.abs(arr.astype(np.float32) - store.embeddings[()]).max() < 1e-3


def test_a_plain_clip_retrieval_folder_imports_with_unknown_provenance(tmp_path: Path):
    """A folder as clip-retrieval itself writes it: no stitchkit.json, ids in image_path."""
    rng = np.random.default_rng(0)
    (tmp_path / "cr" / "img_emb").mkdir(parents=True)
    (tmp_path / "cr" / "metadata").mkdir()
    for i in range(2):
        np.save(tmp_path / "cr" / "img_emb" / f"img_emb_{i}.npy", rng.normal(size=(5, 8)).astype(np.float16))
        pq.write_table(pa.table({"image_path": [f"img/{i}_{j}.jpg" for j in range(5)],
                                 "caption": [f"c{j}" for j in range(5)]}),
                       tmp_path / "cr" / "metadata" / f"metadata_{i}.parquet")
    result = import_folder(tmp_path / "cr", tmp_path / "cr.h5")
    assert result["rows"] == 10 and result["provenance"].startswith("none")
    with EmbeddingStore(tmp_path / "cr.h5") as store:
        assert store.ids[5] == "img/1_0.jpg" and store.texts[1] == "c1" and store.dim == 8


def test_export_refuses_a_non_empty_folder_and_import_a_mismatch(lite0_store: Path, tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        export_store(lite0_store, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    export_store(lite0_store, tmp_path / "e", chunk_size=100)
    (tmp_path / "e" / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(UsageError, match="2 embedding files but 1 metadata files"):
        import_folder(tmp_path / "e", tmp_path / "x.h5")


def test_cli_export_and_import_help_and_run(lite0_store: Path, tmp_path: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from faults.helpers import run_inprocess

    for cmd in ("export", "import"):
        assert run_inprocess(cmd, "--help").code == 0
    done = run_inprocess("export", lite0_store, "-o", tmp_path / "emb", "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["embeddings"] == "img_emb"
    done = run_inprocess("import", tmp_path / "emb", "-o", tmp_path / "b.h5")
    assert done.code == 0 and "provenance stitchkit.json" in done.stdout
    bad = run_inprocess("import", tmp_path, "-o", tmp_path / "c.h5")
    assert bad.code == 2 and "not a clip-retrieval folder" in bad.stderr
