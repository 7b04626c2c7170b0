"""Shared fixtures: small real stores embedded once per test session from ../shared/data.

Kermany ids are the relative paths from labels.csv, so ``id.startswith("train/")`` gives the
split. Everything runs offline on the packaged models.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from stitchkit.datasets import data_root, iu_reports, write_csv, write_jsonl  # noqa: E402

PER_CLASS = {"train": 60, "test": 30}  # 180 Kermany images: 120 train, 60 test


@pytest.fixture(scope="session")
def data() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def kermany_manifest(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A balanced Kermany subset as a CSV manifest with absolute paths."""
    root = data / "kermany-pneumonia-224"
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen, counts = [], {}
    for row in rows:
        key = (row["split"], row["label"])
        if counts.get(key, 0) < PER_CLASS[row["split"]]:
            counts[key] = counts.get(key, 0) + 1
            chosen.append({"id": row["path"], "path": str(root / row["path"]), "label": row["label"]})
    return write_csv(chosen, tmp_path_factory.mktemp("manifests") / "kermany.csv")


def _embed(manifest: Path, model: str, out: Path, *extra: str) -> Path:
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    tokens = "--tokens" in extra
    embed_store(read_inputs(manifest), load_encoder(model), out, tokens=tokens, workers=0)
    return out


@pytest.fixture(scope="session")
def lite0_store(kermany_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _embed(kermany_manifest, "lite0", tmp_path_factory.mktemp("stores") / "lite0.h5")


@pytest.fixture(scope="session")
def lite2_store(kermany_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _embed(kermany_manifest, "lite2", tmp_path_factory.mktemp("stores") / "lite2.h5")


@pytest.fixture(scope="session")
def iu_manifest(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = iu_reports(data / "iu-xray-reports" / "NLMCXR_reports.tgz")[:300]
    return write_jsonl(rows, tmp_path_factory.mktemp("manifests") / "iu.jsonl")


@pytest.fixture(scope="session")
def minilm_store(iu_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _embed(iu_manifest, "minilm", tmp_path_factory.mktemp("stores") / "minilm.h5")


def run_stitch(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `stitch` entry point as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "stitchkit.cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


@pytest.fixture
def stitch():
    return run_stitch


@pytest.fixture(scope="session")
def lite2_token_store(kermany_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 180 Kermany images of ``lite2_store`` with their 81 patch tokens (9x9 x 1280, float16)."""
    return _embed(kermany_manifest, "lite2", tmp_path_factory.mktemp("stores") / "lite2-tok.h5", "--tokens")


@pytest.fixture(scope="session")
def lite2_token_captions(lite2_token_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Label-derived MiniLM captions with word tokens, one per image of ``lite2_token_store``."""
    from stitchkit.zeroshot.captions import make_captions
    from stitchkit.zeroshot.prompts import load_prompts

    out = tmp_path_factory.mktemp("stores") / "captions-minilm-tok.h5"
    make_captions(lite2_token_store, out=out, text_model="minilm", prompts=load_prompts("pneumonia"), tokens=True)
    return out
