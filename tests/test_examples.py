"""Every example runs end to end in a reduced form (few images), as a user would run it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stitchkit.store import EmbeddingStore

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
                "OUT": str(tmp_path / "out"), "HF_HUB_OFFLINE": "1", **env}
    res = subprocess.run(["bash", str(EXAMPLES / script)], capture_output=True, text=True,
                         env=full_env, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def _auc(scores_csv: Path, positive: str = "pneumonia") -> float:
    from sklearn.metrics import roc_auc_score

    with open(scores_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    column = f"score:{positive}" if f"score:{positive}" in rows[0] else positive  # untied ranking scores
    return roc_auc_score([r["label"] == positive for r in rows], [float(r[column]) for r in rows])


def test_slurm_pipeline_runs_locally(tmp_path: Path, stitch) -> None:
    run_example("slurm/pipeline.sh", tmp_path, LIMIT="4", SHARDS="2")
    out = tmp_path / "out"
    assert len(list((out / "shards").glob("lite0-*.h5"))) == 2
    assert (out / "scores.csv").read_text().count("\n") == 9  # header + 8 test images
    # the example's claim: shards merged equal one run over the same manifest
    single = out / "single-lite0.h5"
    res = stitch("embed", out / "train.csv", "-m", "lite0", "-o", single)
    assert res.returncode == 0, res.stderr[-2000:]
    with EmbeddingStore(out / "train-lite0.h5") as merged, EmbeddingStore(single) as one:
        assert len(merged) == 8 and sorted(merged.ids) == sorted(one.ids)
        ids = list(one.ids)
        np.testing.assert_allclose(merged.read(merged.index_of(ids)), one.read(one.index_of(ids)), atol=1e-5)
        assert list(merged.labels[merged.index_of(ids)]) == list(one.labels[one.index_of(ids)])


def test_byo_backbone_matches_the_short_name(tmp_path: Path, kermany_manifest: Path) -> None:
    run_example("byo-backbone/run.sh", tmp_path, LIMIT="6")
    out = tmp_path / "out"
    with EmbeddingStore(out / "mine.h5") as mine, EmbeddingStore(out / "lite0.h5") as short:
        assert mine.dim == 1280 and len(mine) == 24
        assert mine.model_spec.startswith("timm:efficientnet_lite0?weights=") and short.model_spec == "lite0"
        # the example's claim: the timm spec and the short name give the same space
        ids = list(short.ids)
        np.testing.assert_allclose(mine.read(mine.index_of(ids)), short.read(short.index_of(ids)), atol=1e-5)
    assert (out / "mine-to-lite2.map").exists()


def test_iu_text_stitching_reduced(tmp_path: Path) -> None:
    from stitchkit.encoders.packaged import minilm_dir

    res = run_example("iu-text-stitching/run.sh", tmp_path, LIMIT="160", COUNTS="40,80",
                      TARGET=f"hf:{minilm_dir()}?pooling=cls")
    metrics = json.loads((tmp_path / "out" / "fit.json").read_text())["metrics"]
    assert metrics["top1"] > 0.2  # chance is 1/40 on 40 held-out reports
    assert "top1" in res.stdout


def test_covid_image_text_route_reduced(tmp_path: Path) -> None:
    run_example("covid-image-text/run.sh", tmp_path, LIMIT="25", EPOCHS="30")
    out = tmp_path / "out"
    assert (out / "native.csv").read_text().count("\n") == 51
    assert (out / "stitched.csv").read_text().count("\n") == 51
    # the example's claim: a head that saw only covid image-note pairs ranks Kermany test images
    # above chance (0.856 measured on these 50 images on 2026-12-07, LIMIT=25 EPOCHS=30). The
    # stitched route's map is fitted on the 217 covid images alone and is not claimed to carry
    # (0.858 measured the same day; 0.421 with the settings of 2026-12-01): it is only run.
    assert _auc(out / "native.csv") > 0.6


@pytest.mark.parametrize("script", ["python-api/walkthrough.py"])
def test_python_api_walkthrough(tmp_path: Path, script: str) -> None:
    res = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True,
                         env={**os.environ, "LIMIT": "12", "OUT": str(tmp_path)}, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "AUC pneumonia" in res.stdout and "round trip error" in res.stdout
