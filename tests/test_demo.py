"""The demo's success path, reduced (`stitch demo --limit 8`: 8 images per class and split).

One run serves every test of this module: its results table, its report and the
`stitch results` table built from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stitchkit.results import SCHEMA, load_records

from .conftest import run_stitch

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)

LIMIT = 8
# Routes that must beat chance even on 16 Kermany test images: native Lite2 + head, Lite0
# stitched into Lite2 + the same head, and the two routes through MiniLM's text space. The
# covid-notes head (zero-shot) and the Kermany head on adult NIH (a measured domain shift)
# are not required to. Every route's AUC is determined by its inputs (the under-determined
# orthogonal map is the canonical partial isometry; tests/test_cross_machine.py holds the maps
# equal across BLAS kernels and thread counts), so these bounds cannot flip with the CPU.
MUST_WORK = ("(a)", "(b)", "(c)", "(d)")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    res = run_stitch("demo", "-o", out, "--limit", str(LIMIT), "--json", timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    return out, json.loads(res.stdout)


def test_results_table_shape(demo_out: tuple[Path, dict]) -> None:
    out, printed = demo_out
    records = json.loads((out / "results" / "demo-results.json").read_text())
    assert records == printed["results"]
    assert len(records) == 31
    assert len({r["route"] for r in records}) == 31
    for r in records:
        assert r["schema"] == SCHEMA and r["task"] == "zeroshot_classification"
        assert {"dataset", "model", "metrics", "composition", "provenance", "command"} <= set(r)
        m = r["metrics"]
        assert all(not isinstance(v, dict | list) for v in m.values())  # flat, after CLIP_benchmark
        assert m["auc_pneumonia_ci_low"] <= m["auc_pneumonia"] <= m["auc_pneumonia_ci_high"]
        assert r["command"].startswith("stitch classify ")
        assert r["provenance"]["command"] == "stitch classify"
    kermany = [r for r in records if r["dataset"] == "kermany-test"]
    assert len(kermany) == 25 and all(r["metrics"]["n"] == 2 * LIMIT for r in kermany)
    # NIH by patient: the held-out 40 % of patients only, never an image of a training patient
    by_patient = [r for r in records if r["route"].startswith("NIH by patient")]
    assert [r["dataset"] for r in by_patient] == ["nih [nih-test-ids]"] * 4
    train_ids = set((out / "manifests" / "nih-train-ids.txt").read_text().split())
    test_ids = set((out / "manifests" / "nih-test-ids.txt").read_text().split())
    assert train_ids and test_ids and not train_ids & test_ids
    assert by_patient[0]["metrics"]["n"] == len(test_ids)


@pytest.mark.parametrize("route", MUST_WORK)
def test_routes_that_must_work_beat_chance(demo_out: tuple[Path, dict], route: str) -> None:
    records = [r for r in demo_out[1]["results"] if r["route"].startswith(route)]
    assert records
    for r in records:
        assert r["metrics"]["auc_pneumonia"] > 0.6, (r["route"], r["metrics"]["auc_pneumonia"])


def test_report_states_the_figures_numbers(demo_out: tuple[Path, dict]) -> None:
    out, _ = demo_out
    report = out / "report"
    page = (report / "report.md").read_text()
    html = (report / "index.html").read_text()
    images = sorted(p.name for p in report.glob("*.png"))
    for kind in ("maps", "sweep-", "loss-", "classify-", "scores-", "cosine-", "pca-"):
        assert any(name.startswith(kind) for name in images), kind
    for name in images:
        assert f"]({name})" in page and f"src='{name}'" in html
    # the held-out cosine stated for the ridge map is the one its file records
    from stitchkit.artifacts import read_header

    cosine = read_header(out / "lite0-to-lite2.ridge.map")["metrics"]["cosine_mean"]
    row = next(line for line in page.splitlines() if line.startswith("| lite0-to-lite2.ridge.map | ridge |"))
    assert f"| {cosine:.3f} |" in row


def test_results_command_gathers_the_demo(demo_out: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo_out
    table = tmp_path / "t.csv"
    res = run_stitch("results", *sorted((out / "results").glob("fit-*.json")), "-o", table)
    assert res.returncode == 0, res.stderr
    lines = table.read_text().splitlines()
    assert lines[0].startswith("dataset,model,task,") and len(lines) == 1 + 8  # 8 fit steps
    records = load_records(sorted((out / "results").glob("fit-*.json")))
    assert {r["task"] for r in records} == {"map_fit"}


def test_rerun_skips_every_step(demo_out: tuple[Path, dict]) -> None:
    out, printed = demo_out
    res = run_stitch("demo", "-o", out, "--limit", str(LIMIT), "--json", timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    total = int(re.search(r"\[1/(\d+)\]", res.stderr).group(1))
    skipped = res.stderr.count(": done already (")
    embedded = res.stderr.count(" is already complete: ")  # embed steps check their store themselves
    assert skipped + embedded == total  # the report too: drawn after every input was written
    from stitchkit.cli.demo import Step, report_is_current

    steps = [Step("scores", [], output=out / "scores" / "a.csv")]
    assert report_is_current(out, steps)
    steps[0].output.write_text("id\n")  # a step re-run after the report was drawn: stale
    assert not report_is_current(out, steps)
    steps[0].output.unlink()
    again = json.loads(res.stdout)["results"]
    assert [r["metrics"]["auc_pneumonia"] for r in again] == [r["metrics"]["auc_pneumonia"] for r in printed["results"]]


def test_the_learning_curve_example_runs_on_the_demo(demo_out: tuple[Path, dict], tmp_path: Path) -> None:
    """examples/learning-curve/curve.py on the reduced demo's stores: a row per N, seed and route,
    the summary `stitch report` draws, and a rerun that skips what is done."""
    import subprocess
    import sys

    out, _ = demo_out
    script = Path(__file__).resolve().parents[1] / "examples" / "learning-curve" / "curve.py"
    args = [sys.executable, str(script), str(out), "-o", str(tmp_path / "curve"), "--sizes", "10,16",
            "--seeds", "0", "--steps", "4", "--adapt", str(out / "kermany.adapt.map")]
    res = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "curve" / "learning-curve.json").read_text())
    assert summary["schema"] == "stitchkit.learning-curve/1"
    assert [c["n"] for c in summary["curve"]] == [10, 16]
    assert all(set(summary["routes"]) <= set(c) for c in summary["curve"])
    rows = (tmp_path / "curve" / "learning-curve.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 * 2  # each route also through the adaptation map
    assert "global head + adaptation" in summary["routes"]
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "AUC" not in again.stdout  # every row was there: none trained again
    report = run_stitch("report", str(tmp_path / "curve" / "learning-curve.json"), "-o", str(tmp_path / "r"))
    assert report.returncode == 0 and (tmp_path / "r" / "learning-curve-00.png").exists()


def test_every_stitched_route_carries_its_control_and_the_paired_difference(demo_out: tuple[Path, dict]) -> None:
    records = demo_out[1]["results"]
    stitched = [r for r in records if "Lite0" in r["route"]]
    assert len(stitched) == 15
    for r in stitched:
        m = r["metrics"]
        assert m["delta_auc_pneumonia"] == pytest.approx(m["auc_pneumonia"] - m["control_auc_pneumonia"], abs=1e-9)
        assert m["delta_auc_pneumonia_ci_low"] <= m["delta_auc_pneumonia"] <= m["delta_auc_pneumonia_ci_high"]
        assert 0 <= m["delta_auc_pneumonia_p"] <= 1
        # The control is the reference (Lite2) through the same kind of route: no Lite0 store.
        assert "lite0" not in r["control_command"].split(" -o ")[0]
    assert all("control_auc_pneumonia" not in r["metrics"] for r in records if "Lite0" not in r["route"])


def test_adapted_routes_name_their_adaptation_and_use_no_label(demo_out: tuple[Path, dict]) -> None:
    adapted = [r for r in demo_out[1]["results"] if "adaptation" in r["route"]]
    assert len(adapted) == 7
    for r in adapted:
        assert r["composition"]["adapt"]["images"] > 0
        assert r["composition"]["adapt"]["path"].endswith(("kermany.adapt.map", "nih.adapt.map"))
        assert r["label_use"] == "none"


def test_stitch_info_names_the_kind_and_version_of_every_file_the_demo_writes(demo_out: tuple[Path, dict]) -> None:
    from stitchkit.inspect import describe_file, identify

    out, _ = demo_out
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    unknown = [str(p.relative_to(out)) for p in files if identify(p) is None]
    assert not unknown, unknown
    kinds = {identify(p).format.name for p in files}
    assert {"embedding store", "map", "head", "score file", "result record", "results table", "benchmark summary",
            "sweep table", "manifest", "id file", "benchmark suite", "figure (PNG)", "report page"} <= kinds
    described = [describe_file(p) for p in files]  # what `stitch info` prints
    assert all(d["kind"] and d["format_version"] >= 1 for d in described)
    res = run_stitch("info", out / "results" / "demo-results.json", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["records"] == 31
