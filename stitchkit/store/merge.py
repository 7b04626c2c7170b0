"""Merge shard stores (from `stitch embed --shard i/N`) into one store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ProvenanceError, StoreError, UsageError
from .checks import require_finite
from .store import EmbeddingStore, IdIndex, StoreWriter, _keys_to_str, base_attrs


def _refuse_repeated_ids(stores: Sequence[EmbeddingStore]) -> None:
    """Ids repeated within a shard, or shared by two: one sort of all ids, no dict of them."""
    keys = np.concatenate([s.id_keys for s in stores])
    shard = np.repeat(np.arange(len(stores)), [len(s) for s in stores])
    index = IdIndex(keys)
    same = np.flatnonzero(index.sorted[1:] == index.sorted[:-1])
    if not len(same):
        return
    # The first repeat in merge order, as a loop over the ids would have met it.
    later = index.order[same + 1]
    at = int(np.argmin(later))
    a, b = shard[index.order[same[at]]], shard[later[at]]
    i = _keys_to_str(keys[later[at:at + 1]])[0]
    if a == b:
        raise StoreError(f"id {i!r} appears twice in {stores[b].path}: ids must be unique; "
                         "re-create that shard")
    raise UsageError(f"id {i!r} is in both {stores[a].path} and {stores[b].path}: shards overlap")


def merge_stores(paths: Sequence[str | Path], out: str | Path, *, chunk_size: int = 8192) -> dict:
    """Concatenate complete stores of one space; refuses mixed models, shapes or repeated ids."""
    if len(paths) < 1:
        raise UsageError("give at least one shard store to merge")
    if str(Path(out).resolve()) in {str(Path(p).resolve()) for p in paths}:
        raise UsageError(f"-o {out} is also an input: write the merged store elsewhere")
    from ..fileio import check_writable_dir

    check_writable_dir(out)  # before reading anything: a read-only -o fails at once
    stores = [EmbeddingStore(p) for p in paths]  # refuses incomplete shards with a clear line
    try:
        first = stores[0]
        space = first.space()
        columns = first.columns
        token_t, token_d = 0, first.dim
        for store in stores:
            if store.space() != space:
                diff = [k for k in space if store.space()[k] != space[k]]
                raise ProvenanceError(
                    f"{store.path} differs from {first.path} in {', '.join(diff)}: "
                    "merge only shards of one model"
                )
            if store.columns != columns or store.has_tokens != first.has_tokens:
                raise StoreError(f"{store.path} has other columns than {first.path}: shards must match")
            grid, first_grid = (s.attrs.get("token_grid") for s in (store, first))  # --token-grid
            if store.has_tokens and grid != first_grid:
                grid, first_grid = (f"a {g} grid" if g else "the model's grid" for g in (grid, first_grid))
                raise StoreError(f"{store.path} holds tokens on {grid}, {first.path} on {first_grid}: "
                                 "merge only shards embedded with one --token-grid")
            if store.has_tokens:
                token_t = max(token_t, store.token_shape[0])
                token_d = store.token_shape[1]
        _refuse_repeated_ids(stores)
        attrs = {k: v for k, v in first.attrs.items() if k not in ("complete", "created", "shard", "versions", "code", "format", "format_version")}
        attrs["merged_from"] = json.dumps([str(s.path) for s in stores])
        attrs["shard"] = ""
        with StoreWriter(
            out, dim=first.dim, attrs=base_attrs(**attrs), columns=columns,
            token_shape=(token_t, token_d) if first.has_tokens else None,
            expected_rows=sum(len(s) for s in stores),
        ) as writer:
            for store in stores:
                cols = {c: store.column(c) for c in columns}
                for rows, block in store.iter_chunks(chunk_size=chunk_size):
                    # caught here, not three commands later in fit or classify
                    require_finite(block, store.ids_at(rows), store.path)
                    toks = mask = None
                    if store.has_tokens:
                        toks, mask = store.read_tokens(rows)
                    writer.append(
                        list(store.ids[rows]), block,
                        columns={c: v[rows] for c, v in cols.items()},
                        tokens=toks, tokens_mask=mask,
                    )
                writer.add_failed(store.failed)
            n = writer.n
        return {"path": str(out), "samples": n, "shards": len(stores), "dim": first.dim}
    finally:
        for store in stores:
            store.close()


