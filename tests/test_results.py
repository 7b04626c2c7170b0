"""Flat result records (CLIP_benchmark's convention) and `stitch results` tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stitchkit.results import SCHEMA, flatten_metrics, load_records, to_record

from .conftest import run_stitch


def ok(*args: object) -> str:
    res = run_stitch(*map(str, args))
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def fits(lite0_store: Path, lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("fits")
    out = []
    for method in ("orthogonal", "ridge"):
        path = d / f"{method}.json"
        path.write_text(ok("fit", lite0_store, lite2_store, "--method", method, "-o", d / f"{method}.map", "--json"))
        out.append(path)
    path = d / "sweep.json"
    path.write_text(ok("sweep", lite0_store, lite2_store, "--n-anchors", "20,40", "--methods", "orthogonal,ridge",
                       "--seeds", "0", "-o", d / "sweep.csv", "--json"))
    out.append(path)
    return out


def test_fit_json_is_a_flat_record(fits: list[Path]) -> None:
    rec = json.loads(fits[1].read_text())
    assert rec["schema"] == SCHEMA and rec["task"] == "map_fit"
    assert rec["dataset"] == "kermany" and rec["model"] == "lite0 → lite2 (ridge)"
    assert all(not isinstance(v, dict | list) for v in rec["metrics"].values())
    assert 0 < rec["metrics"]["cosine_mean"] <= 1
    assert rec["provenance"]["command"] == "stitch fit" and rec["provenance"]["params"]["method"] == "ridge"
    assert rec["composition"]["source"]["model_spec"] == "lite0"
    assert rec["anchors"]["n_fit"] > 0  # the command's own keys stay beside the record's


def test_flatten_keeps_every_number_once() -> None:
    metrics = {"n": 4, "auc": {"a": 0.9, "b": 0.8}, "accuracy": 0.75, "threshold": "argmax over classes",
               "ci": {"level": 0.95, "n_boot": 10, "accuracy": [0.5, 1.0], "auc": {"a": [0.7, 1.0]}},
               "bad": float("nan")}
    flat = flatten_metrics(metrics)
    assert flat == {"n": 4, "auc_a": 0.9, "auc_b": 0.8, "accuracy": 0.75, "threshold": "argmax over classes",
                    "ci_level": 0.95, "ci_n_boot": 10, "accuracy_ci_low": 0.5, "accuracy_ci_high": 1.0,
                    "auc_a_ci_low": 0.7, "auc_a_ci_high": 1.0, "bad": None}
    rec = to_record("classify", {"n": 4, "classes": ["a", "b"], "metrics": metrics})
    assert to_record("classify", rec) is rec  # converting a record again changes nothing


def test_results_table_csv_and_markdown(fits: list[Path], tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    out = ok("results", *fits, "-o", table, "--columns", "dataset,model,task,n_anchors,cosine_mean,cosine_mean_mean")
    assert "4 rows" not in out and "6 rows" in out  # 2 fits + 2 methods x 2 counts of the sweep
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["task"] for r in rows] == ["map_fit"] * 2 + ["anchor_sweep"] * 4
    fit = json.loads(fits[0].read_text())
    assert float(rows[0]["cosine_mean"]) == pytest.approx(fit["metrics"]["cosine_mean"])
    sweep = json.loads(fits[2].read_text())
    ridge40 = next(s for s in sweep["summary"] if s["method"] == "ridge" and s["n_anchors"] == 40)
    row = next(r for r in rows if r["model"].endswith("(ridge)") and r["n_anchors"] == "40")
    assert float(row["cosine_mean_mean"]) == pytest.approx(ridge40["cosine_mean_mean"])
    md = ok("results", *fits[:2], "--columns", "model,cosine_mean", "--digits", "2")
    assert md.splitlines()[0] == "| model | cosine_mean |"
    assert f"| lite0 → lite2 (orthogonal) | {fit['metrics']['cosine_mean']:.2f} |" in md
    assert len(load_records(fits)) == 6


@pytest.mark.parametrize("args, message", [
    (["--columns", "nope"], "unknown column nope"),
    (["-o", "t.txt"], "give a .csv or .md"),
])
def test_results_usage_errors(fits: list[Path], tmp_path: Path, args: list[str], message: str) -> None:
    res = run_stitch("results", fits[0], *args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_results_refuses_json_no_command_wrote(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    res = run_stitch("results", tmp_path / "x.json")
    assert res.returncode == 2 and "not a stitchkit result" in res.stderr
