"""`stitch report` recognises a run's files by content and states every figure's numbers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from stitchkit.artifacts import read_header

from .conftest import run_stitch


def ok(*args: object) -> str:
    res = run_stitch(*map(str, args))
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def run_files(lite0_store: Path, lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small real run: a map, a sweep, captions, a text-space map, cosine scores and their JSON."""
    d = tmp_path_factory.mktemp("run")
    f = {"lite0": d / "lite0.h5", "lite2": d / "lite2.h5", "map": d / "l0-l2.map", "sweep": d / "sweep.csv",
         "captions": d / "captions.h5", "textmap": d / "l2-text.map", "scores": d / "scores.csv",
         "classify": d / "classify.json", "fit": d / "fit.json"}
    shutil.copy(lite0_store, f["lite0"])
    shutil.copy(lite2_store, f["lite2"])
    f["fit"].write_text(ok("fit", f["lite0"], f["lite2"], "--method", "ridge", "-o", f["map"], "--json"))
    ok("sweep", f["lite0"], f["lite2"], "--n-anchors", "20,40", "--methods", "orthogonal,ridge",
       "--seeds", "0,1", "-o", f["sweep"])
    ok("head", "captions", f["lite2"], "-t", "minilm", "--from-labels", "pneumonia", "-o", f["captions"])
    ok("fit", f["lite2"], f["captions"], "--method", "ridge", "-o", f["textmap"])
    f["classify"].write_text(ok("classify", f["lite2"], "--map", f["textmap"], "--scoring", "cosine",
                                "--prompts", "pneumonia", "--text-model", "minilm", "-o", f["scores"], "--json"))
    return f


def test_files_are_recognised_by_content_not_name(run_files: dict[str, Path], tmp_path: Path) -> None:
    # the same files under names that say nothing about what they hold
    renamed = tmp_path / "in"
    renamed.mkdir()
    for n, key in enumerate(("lite0", "lite2", "map", "sweep", "scores")):
        shutil.copy(run_files[key], renamed / f"file{n}.bin")
    from stitchkit.report.build import find

    found = find([renamed])
    assert [p.name for p in found.stores] == ["file0.bin", "file1.bin"]
    assert [p.name for p in found.maps] == ["file2.bin"]
    assert [p.name for p in found.sweeps] == ["file3.bin"]
    assert [p.name for p in found.scores] == ["file4.bin"]
    out = tmp_path / "rep"
    ok("report", renamed, "-o", out)
    names = {p.name for p in out.glob("*.png")}
    assert {"maps.png", "sweep-0.png", "cosine-0.png", "pca-0.png"} <= names
    assert any(n.startswith("classify-") for n in names)


def test_report_numbers_match_the_files(run_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    page = ok("report", run_files["map"], run_files["sweep"], run_files["scores"], run_files["classify"],
              run_files["lite0"], run_files["lite2"], "-o", out, "--markdown")
    assert page == (out / "report.md").read_text() + "\n"
    metrics = read_header(run_files["map"])["metrics"]
    row = next(line for line in page.splitlines() if line.startswith("| l0-l2.map | ridge |"))
    assert f"| {metrics['cosine_mean']:.3f} |" in row and f"| {metrics['top1']:.3f} |" in row
    # sweep: the stated mean ± std is the CSV's row
    with open(run_files["sweep"], newline="") as fh:
        ridge40 = next(r for r in csv.DictReader(fh) if r["method"] == "ridge" and r["n_anchors"] == "40")
    expect = f"| ridge | 40 | {float(ridge40['cosine_mean_mean']):.3f} ± {float(ridge40['cosine_mean_std']):.3f} |"
    assert expect in page
    # classification: the AUC stated per class is the one `stitch classify --json` measured
    m = json.loads(run_files["classify"].read_text())["metrics"]
    auc = m.get("auc_pneumonia", (m.get("auc") or {}).get("pneumonia"))
    positives = m.get("positives_pneumonia", (m.get("positives") or {}).get("pneumonia"))
    assert positives == 90  # the session stores: 60 train + 30 test images per class
    assert f"| pneumonia | {positives} | {auc:.3f} |" in page
    assert "Confusion matrix (argmax over classes" in page
    # the map was fitted on these very stores, and the report says so
    assert "l0-l2.map (fitted on these stores)" in page


@pytest.mark.slow
def test_nothing_to_draw_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    res = run_stitch("report", tmp_path, "-o", tmp_path / "rep")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: nothing to draw") and len(res.stderr.strip().splitlines()) == 1
