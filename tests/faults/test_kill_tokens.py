"""SIGKILL during the token paths: `embed --tokens`, `apply` of a token store and token head
training; the same command re-run gives the uninterrupted result, tokens included.

Same machinery as ``test_kill.py`` (seeded kill points, ``STITCHKIT_FAULT_TRIALS`` trials).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from .helpers import Kill, appeared, run_inprocess
from .scenarios import (
    Scenario,
    _ckpt_epoch_at_least,
    assert_trials_survive,
    same_head,
    same_store,
    small_manifest,
)

TRIALS = int(os.environ.get("STITCHKIT_FAULT_TRIALS", "2"))
N_IMAGES = 16  # four batches of four


def same_tokens(a: Path, b: Path, *, exact: bool = True) -> None:
    """Stores equal in globals, columns and tokens with their masks."""
    from stitchkit.store import EmbeddingStore

    same_store(a, b, exact=exact)
    with EmbeddingStore(a) as x, EmbeddingStore(b) as y:
        assert x.token_shape == y.token_shape and x.token_shape is not None
        rows = np.arange(len(x))
        tx, mx = x.read_tokens(rows)
        ty, my = y.read_tokens(rows)
    assert np.array_equal(mx, my)
    if exact:
        assert np.array_equal(tx, ty)
    else:  # batches of another size may pick other kernels: float16 rounding differs
        np.testing.assert_allclose(tx, ty, rtol=0, atol=2e-2 * max(1.0, float(np.abs(ty).max())) / 10)


@pytest.fixture(scope="module")
def scenarios(kermany_manifest: Path, lite2_store: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    from stitchkit.maps import AnchorPlan, fit_map

    work = tmp_path_factory.mktemp("faults-tokens")
    manifest = small_manifest(kermany_manifest, work, N_IMAGES)

    def embed_args(out: Path) -> list[str]:
        return ["embed", str(manifest), "-m", "lite0", "--tokens", "-o", str(out), "--batch-size", "4",
                "--workers", "0"]

    def embed_kill(rng: random.Random, out: Path) -> Kill:
        parts = out.with_name(out.name + ".parts")
        k = rng.randint(1, N_IMAGES // 4 - 1)
        return Kill(rng.uniform(0, 0.2), appeared("part-*.h5", parts, k), f"after {k} parts")

    # The token store the other two scenarios read, and a map from it into Lite2.
    tokens = work / "lite0-tok.h5"
    res = run_inprocess(*embed_args(tokens))
    assert res.code == 0, res.stderr
    map_path = work / "lite0-to-lite2.map"
    fit_map(tokens, lite2_store, "ridge", plan=AnchorPlan(metrics=False)).save(map_path)

    def apply_args(out: Path) -> list[str]:
        return ["apply", str(map_path), str(tokens), "-o", str(out), "--chunk-size", "1"]

    def while_writing(rng: random.Random, out: Path) -> Kill:
        return Kill(rng.uniform(0, 0.3), appeared(f".{out.name}.*.partial", out.parent), "while writing")

    captions = work / "captions.h5"
    res = run_inprocess("head", "captions", tokens, "--from-labels", "pneumonia", "-m", "minilm",
                        "--tokens", "-o", captions)
    assert res.code == 0, res.stderr

    def head_args(out: Path) -> list[str]:
        return ["head", "train", str(tokens), str(captions), "-o", str(out), "--epochs", "10", "--min-steps", "0",
                "--batch-size", "4", "--width", "16", "--heads", "2", "--patience", "100",
                "--threads", "1", "--no-plot"]

    def head_kill(rng: random.Random, out: Path) -> Kill:
        k = rng.randint(1, 8)
        return Kill(rng.uniform(0, 0.1), _ckpt_epoch_at_least(out.with_name(out.name + ".ckpt"), k),
                    f"after epoch {k}")

    return {s.name: s for s in [
        Scenario("embed --tokens", embed_args, embed_kill, lambda a, b: same_tokens(a, b, exact=False),
                 lambda out: [out.with_name(out.name + ".parts")]),
        Scenario("apply tokens", apply_args, while_writing, same_tokens),
        Scenario("head train tokens", head_args, head_kill, same_head,
                 lambda out: [out.with_name(out.name + ".ckpt")]),
    ]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["embed --tokens", "apply tokens", "head train tokens"])
def test_a_killed_token_run_resumes_to_the_uninterrupted_result(
    name: str, scenarios: dict[str, Scenario], tmp_path: Path
) -> None:
    assert_trials_survive(scenarios[name], tmp_path, TRIALS)
