"""Head scoring with tokens hands them over as stored (float16: views of the file's pages, or
h5py reads one block ahead in a thread where the layout allows no views) and converts them into
one reused float32 buffer (stitchkit.zeroshot.query_blocks): the scores are bit for bit those of
the float32 reads in the scoring thread that it replaced. The views themselves
(stitchkit.store.pages) are checked against h5py's reads."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stitchkit.errors import StoreError
from stitchkit.head import Head, HeadConfig
from stitchkit.head.model import CrossAttentionHead
from stitchkit.store import EmbeddingStore, StoreWriter
from stitchkit.store.pages import TokenPages
from stitchkit.store.store import base_attrs
from stitchkit.zeroshot import query_blocks, scoring
from stitchkit.zeroshot.prompts import from_classes
from stitchkit.zeroshot.query_blocks import Float32Tokens, PagedTokens
from stitchkit.zeroshot.scoring import classify_store

IMG = {"model_spec": "img", "weights_sha256": "i"}
TXT = {"model_spec": "txt", "weights_sha256": "t"}
CLASSES = ["effusion", "mass", "nodule"]
T, D, DT = 9, 24, 16


def test_float32_tokens_are_exact_and_reuse_one_buffer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, T, D)).astype(np.float16)
    x[0, 0, :5] = [6e-8, -6e-8, 65504, np.inf, -np.inf]  # subnormals, the largest, infinities
    convert = Float32Tokens()
    first = convert(x)
    assert first.dtype == np.float32 and np.array_equal(first.view(np.uint32), x.astype(np.float32).view(np.uint32))
    again = convert(x[:3] / np.float16(2))
    assert np.shares_memory(first, again), "the buffer is reused"
    assert np.array_equal(again, (x[:3] / np.float16(2)).astype(np.float32))
    f32 = x.astype(np.float32)
    assert convert(f32) is f32 and convert(None) is None  # float32 and None pass as they are


def _stores(folder: Path, n: int, bad_row: int | None = None) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(1)
    glob = rng.normal(size=(n, D)).astype(np.float32)
    if bad_row is not None:
        glob[bad_row, 3] = np.nan
    tokens = rng.normal(size=(n, T, D)).astype(np.float16)
    labels = list(np.array(CLASSES, dtype=object)[rng.integers(0, 3, n)])
    query = folder / "q.h5"
    with StoreWriter(query, dim=D, attrs=base_attrs(modality="image", **IMG), columns=["labels"],
                     token_shape=(T, D)) as w:
        w.append([f"q{i}" for i in range(n)], glob, columns={"labels": labels}, tokens=tokens,
                 tokens_mask=np.ones((n, T), bool))
    texts = from_classes(CLASSES).texts()
    prompts = folder / "p.h5"
    with StoreWriter(prompts, dim=DT, attrs=base_attrs(modality="text", **TXT), columns=["texts"],
                     token_shape=(6, DT)) as w:
        w.append([f"p{i}" for i in range(len(texts))], rng.normal(size=(len(texts), DT)).astype(np.float32),
                 columns={"texts": texts}, tokens=rng.normal(size=(len(texts), 6, DT)),
                 tokens_mask=np.arange(6)[None, :] < 3 + np.arange(len(texts))[:, None] % 4)
    torch.manual_seed(0)
    module = CrossAttentionHead(D, DT, HeadConfig(width=16, heads=2))
    module.set_cosine_map(rng.normal(size=(D, DT)), rng.normal(size=DT))
    for p in module.parameters():  # the corrections start at zero: give them something to say
        p.data.add_(0.05 * torch.randn_like(p))
    head = folder / "h.head"
    Head(module, image_space={**IMG, "dim": D}, text_space={**TXT, "dim": DT},
         meta={"image_tokens": True, "text_tokens": True, "image_token_count": T}).save(head)
    return query, prompts, head


def _classify(query: Path, prompts: Path, head: Path, out: Path, **kw: object) -> dict:
    r = classify_store(query, from_classes(CLASSES), prompt_store=prompts, head_path=head, output=out,
                       bootstrap=50, chunk_size=7, **kw)
    with h5py.File(out) as h5:
        return {"metrics": r.metrics, **{k: h5[k][()] for k in ("ids", "labels", "scores", "logits")}}


@pytest.mark.parametrize(("prior", "pages"), [("none", True), ("em", True), ("none", False)])
def test_scores_equal_the_float32_reads_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     prior: str, pages: bool) -> None:
    """em: a first pass over the blocks, read the same way; pages False: the h5py reads ahead."""
    query, prompts, head = _stores(tmp_path, 45)  # 7 blocks of 7 rows, the last one short
    if not pages:
        monkeypatch.setattr(query_blocks, "token_pages", lambda plan: None)
    seen: list[str] = []
    convert = Float32Tokens.__call__
    monkeypatch.setattr(Float32Tokens, "__call__",
                        lambda self, t: seen.append("pages" if isinstance(t, PagedTokens) else str(t.dtype))
                        or convert(self, t))
    new = _classify(query, prompts, head, tmp_path / "new.h5", prior=prior)
    assert seen and set(seen) == {"pages" if pages else "float16"}, "the head's tokens came as stored"
    for module in (query_blocks, scoring):  # the former way: float32 reads, in this thread
        monkeypatch.setattr(module, "tokens_as_stored", lambda plan: False)
    old = _classify(query, prompts, head, tmp_path / "old.h5", prior=prior)
    for k in ("ids", "labels", "scores", "logits"):
        assert np.array_equal(new[k], old[k]), k
    assert new["metrics"] == old["metrics"]


def test_a_bad_row_read_ahead_is_refused_by_its_id(tmp_path: Path) -> None:
    query, prompts, head = _stores(tmp_path, 30, bad_row=23)  # in the fourth block
    with pytest.raises(StoreError, match="id 'q23'"):
        classify_store(query, from_classes(CLASSES), prompt_store=prompts, head_path=head,
                       output=tmp_path / "s.h5", bootstrap=0, chunk_size=7)
    assert not (tmp_path / "s.h5").exists()


def test_page_views_are_the_rows_h5py_reads(tmp_path: Path) -> None:
    query, _, _ = _stores(tmp_path, 45)
    with EmbeddingStore(query) as store:
        pages = store.token_pages()
        assert pages is not None
        for rows in (np.arange(45), np.arange(3, 17), np.array([0, 1, 2, 9, 10, 44]), np.array([30, 2, 2, 7])):
            got = np.empty((len(rows), T, D), np.float16)
            for a, piece in pages.views(rows):
                got[a : a + len(piece)] = piece
            pages.prefetch(rows)
            pages.release(rows)  # unmapped from the process, never changed
            assert np.array_equal(got.view(np.uint16), store.read(rows, tokens=True, dtype=np.float16).view(np.uint16))
        assert len(pages.runs(np.array([0, 1, 2, 9, 10, 44]))) >= 3  # one view per run of bytes


@pytest.mark.parametrize("layout", [{"compression": "gzip"}, {"chunks": (2, T, D)}, {"dtype": ">f2"}])
def test_other_token_layouts_give_no_pages(tmp_path: Path, layout: dict) -> None:
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        data = h5.create_dataset("tokens", data=np.ones((4, T, D)), **{"dtype": "<f2", "chunks": (1, T, D), **layout})
        assert TokenPages.of(h5, data) is None
