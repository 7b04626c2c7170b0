"""`stitch fit --require` (a quality gate that writes nothing when short) and `--dry-run`."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from stitchkit.cli.main import cli

from stitchkit.maps import fit_map
from stitchkit.maps.api import check_stitchability
from stitchkit.maps.stitchability import mutual_knn
from stitchkit.store import write_store

from .test_fit_cli import pair  # noqa: F401  (the shared synthetic pair of stores)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_require_met_writes_the_map(pair):  # noqa: F811
    tmp, src, tgt = pair
    r = run("fit", src, tgt, "-o", tmp / "m.map", "--require", "top1>=0.9",
            "--require", "relative_mse<0.5", "--json")
    assert r.exit_code == 0, r.output
    assert (tmp / "m.map").exists() and json.loads(r.stdout)["metrics"]["top1"] >= 0.9


def test_require_short_exits_1_with_one_line_and_writes_nothing(pair):  # noqa: F811
    from stitchkit.cli.errors import describe

    tmp, src, tgt = pair
    r = run("fit", src, tgt, "-o", tmp / "m.map", "--require", "cosine_mean>=0.5",
            "--require", "probe_auc_ratio>=1.5")
    code, msg = describe(r.exception)
    assert code == 1 and "\n" not in msg
    assert msg.startswith("map not written: probe_auc_ratio = ") and "required >= 1.5" in msg
    assert "cosine_mean" not in msg  # the met requirement is not listed
    assert not (tmp / "m.map").exists()


def test_require_on_an_unmeasured_metric_fails_and_bad_syntax_is_a_usage_error(pair):  # noqa: F811
    from stitchkit.cli.errors import describe

    tmp, src, tgt = pair
    r = run("fit", src, tgt, "-o", tmp / "m.map", "--holdout", "0", "--require", "top1>=0.5")
    code, msg = describe(r.exception)
    assert code == 1 and "could not be checked (no held-out anchors)" in msg
    assert not (tmp / "m.map").exists()
    for bad in ("top1=>0.5", "top_one>=0.5", "top1>=x"):
        r = run("fit", src, tgt, "-o", tmp / "m.map", "--require", bad)
        assert r.exit_code == 2 and "--require" in r.output, bad
    r = run("fit", src, tgt, "-o", tmp / "m.map", "--require", "top1")  # `top1>=0.5` unquoted
    assert r.exit_code == 2 and "quote it" in r.output


def test_mutual_knn_identity_rotation_and_chance():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16))
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert mutual_knn(X, X, 10) == 1.0
    assert mutual_knn(X, X @ Q, 10) > 0.99  # cosine neighbourhoods survive a rotation
    chance = mutual_knn(X, rng.standard_normal((300, 16)), 10)
    assert chance < 0.1  # k / n = 0.033


def test_dry_run_reports_alignment_and_predicts_the_fit(pair):  # noqa: F811
    tmp, src, tgt = pair
    r = run("fit", src, tgt, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    # A random linear map (not a rotation): CKA well above unrelated spaces but below 1.
    assert rep["mutual_knn_k"] == 10 and 0.4 < rep["linear_cka"] < 1.0
    assert rep["mutual_knn"] > 5 * rep["mutual_knn_chance"]
    assert rep["n_anchors"] == 320 and rep["n_heldout"] == 80
    assert not list(tmp.glob("*.map"))
    fitted = fit_map(src, tgt).metrics_
    assert abs(rep["expected_cosine_mean"] - fitted["cosine_mean"]) < 0.02
    assert abs(rep["expected_relative_mse"] - fitted["relative_mse"]) < 0.05
    r = run("fit", src, tgt, "--dry-run", "--knn-k", "5")
    assert r.exit_code == 0 and "k=5" in r.output and "expected held-out quality" in r.output


def test_dry_run_tells_unrelated_spaces_apart(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(300)]
    a = write_store(tmp_path / "a.h5", ids, rng.standard_normal((300, 12)).astype(np.float32))
    b = write_store(tmp_path / "b.h5", ids, rng.standard_normal((300, 8)).astype(np.float32))
    rep = check_stitchability(a, b)
    assert rep["linear_cka"] < 0.2 and rep["mutual_knn"] < 0.15
    assert rep["expected_relative_mse"] > 0.95  # nothing to predict: no better than the mean


def test_dry_run_measures_an_l2_map_as_the_fit_does(pair):  # noqa: F811
    """Under --l2 the fit measures its held-out anchors against L2-normalised targets; the
    prediction compared the mapped rows with the raw ones (relative MSE off by orders)."""
    from stitchkit.maps import make_map

    tmp, src, tgt = pair
    r = run("fit", src, tgt, "--dry-run", "--l2", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    fitted = fit_map(src, tgt, make_map("ridge", l2=True)).metrics_
    assert abs(rep["expected_relative_mse"] - fitted["relative_mse"]) < 0.05
    assert abs(rep["expected_cosine_mean"] - fitted["cosine_mean"]) < 0.02


def test_a_map_worse_than_the_mean_says_so(pair, tmp_path):  # noqa: F811
    """Held-out relative MSE > 1 (here: unrelated spaces, whose ridge map rescaled to the
    targets' spread lands farther than their mean) is one warning line with what to try, from
    the fit and from the dry run; a good map says nothing."""
    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(300)]
    a = write_store(tmp_path / "a.h5", ids, rng.standard_normal((300, 12)).astype(np.float32))
    b = write_store(tmp_path / "b.h5", ids, rng.standard_normal((300, 8)).astype(np.float32))
    r = run("fit", a, b, "-o", tmp_path / "m.map", "--json")
    assert r.exit_code == 0, r.output
    rel = json.loads(r.stdout)["metrics"]["relative_mse"]
    assert rel > 1
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: held-out (60 anchors) relative MSE {rel:.3f} > 1: the map predicts the held-out "
                      "targets worse than their mean; try more anchors or a larger --alpha"]
    r = run("fit", a, b, "-o", tmp_path / "o.map", "--method", "affine")
    assert "worse than their mean; try more anchors, --method ridge or a larger --alpha" in r.stderr
    r = run("fit", a, b, "--dry-run")
    assert r.exit_code == 0 and "warning: expected (3-fold CV on the fit anchors) relative MSE" in r.stderr
    tmp, src, tgt = pair
    r = run("fit", src, tgt, "-o", tmp / "good.map")
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_missing_output_without_dry_run_is_a_usage_error(pair):  # noqa: F811
    tmp, src, tgt = pair
    r = run("fit", src, tgt)
    assert r.exit_code == 2 and "--output" in r.output
