"""`stitch fit`, `apply`, `sweep` and `anchors select` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from stitchkit.cli.main import cli

from stitchkit.fileio import read_id_file
from stitchkit.store import EmbeddingStore, write_store


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    n, dx, dy = 400, 20, 12
    labels = np.array(["normal", "pneumonia"])[rng.integers(0, 2, n)]
    X = (rng.standard_normal((n, dx)) + (labels == "pneumonia")[:, None]).astype(np.float32)
    Y = (X @ rng.standard_normal((dx, dy)) + 0.05 * rng.standard_normal((n, dy))).astype(np.float32)
    ids = [f"img{i:04d}" for i in range(n)]
    attrs = {"modality": "image"}
    src = write_store(tmp_path / "src.h5", ids, X, columns={"labels": list(labels)},
                      attrs={**attrs, "model_spec": "lite0", "weights_sha256": "s0"})
    tgt = write_store(tmp_path / "tgt.h5", ids[::-1], Y[::-1], columns={"labels": list(labels[::-1])},
                      attrs={**attrs, "model_spec": "lite2", "weights_sha256": "s2"})
    return tmp_path, str(src), str(tgt)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def failure(*args) -> tuple[int, str]:
    """Exit code and message the entry point's error table gives the exception a command raised."""
    from stitchkit.cli.errors import describe

    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exception is not None, r.output
    if isinstance(r.exception, SystemExit):
        return r.exit_code, r.output
    return describe(r.exception)


@pytest.mark.parametrize("cmd", [["fit"], ["apply"], ["sweep"], ["anchors"], ["anchors", "select"]])
def test_help_has_examples(cmd):
    r = invoke(*cmd, "--help")
    assert r.exit_code == 0
    assert "stitch " + cmd[0] in r.output


def test_fit_apply_round_trip(pair):
    tmp, src, tgt = pair
    r = invoke("fit", src, tgt, "-o", tmp / "m.map", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["method"] == "ridge" and result["dims"] == [20, 12]
    assert result["metrics"]["top1"] > 0.9 and "probe_auc_ratio" in result["metrics"]
    r = invoke("fit", src, tgt, "-o", tmp / "o.map", "--method", "orthogonal", "--n-anchors", "100")
    assert r.exit_code == 0 and "orthogonal map 20 → 12" in r.output and "retrieval top-1" in r.output
    r = invoke("apply", tmp / "m.map", src, "-o", tmp / "out.h5", "--json")
    assert r.exit_code == 0, r.output
    with EmbeddingStore(tmp / "out.h5") as s:
        assert s.dim == 12 and s.model_spec == "lite2" and s.attrs["source"] == src


def test_apply_to_a_new_output_does_not_say_resuming(pair):
    """apply reports progress after each chunk; its first report is no earlier run's work."""
    tmp, src, tgt = pair
    assert invoke("fit", src, tgt, "-o", tmp / "m.map", "--overwrite").exit_code == 0
    r = invoke("apply", tmp / "m.map", src, "-o", tmp / "fresh.h5", "--chunk-size", "100")
    assert r.exit_code == 0, r.output
    assert "resuming" not in r.stderr and "apply: 400/400" in r.stderr


def test_progress_says_resuming_only_when_its_caller_resumed(capsys):
    """embed's job starts the bar at the batches an earlier run left (Progress.start); a
    library's (done, total) callback only reports, so its first report is no resume."""
    from stitchkit.cli.output import Progress

    resumed, reported = Progress("embed"), Progress("apply")
    resumed.start(10, 4)
    reported.update(4, 10)
    reported.update(10, 10)
    err = capsys.readouterr().err
    assert "embed: resuming at 4/10" in err
    assert "apply: 4/10\n" in err and "apply: 10/10" in err and "apply: resuming" not in err


def test_sweep_writes_table_and_plot(pair):
    tmp, src, tgt = pair
    r = invoke("sweep", src, tgt, "--n-anchors", "30,100", "--methods", "orthogonal,ridge",
               "--seeds", "0,1", "-o", tmp / "s.csv", "--plot", tmp / "s.png")
    assert r.exit_code == 0, r.output
    assert "ridge" in r.output and "±" in r.output
    lines = (tmp / "s.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("method,n_anchors,n_seeds")
    assert (tmp / "s.png").stat().st_size > 1000


def test_anchors_select_then_fit_with_the_list(pair):
    tmp, src, tgt = pair
    r = invoke("anchors", "select", src, "-o", tmp / "ids.txt", "--n", "60",
               "--strategy", "stratified", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["n"] == 60 and sum(res["labels"].values()) == 60
    ids = read_id_file(tmp / "ids.txt")  # after the header's comment lines (how they were chosen)
    assert len(ids) == 60 and len(set(ids)) == 60
    r = invoke("fit", src, tgt, "-o", tmp / "a.map", "--ids", tmp / "ids.txt", "--json")
    assert json.loads(r.stdout)["anchors"]["n_pool"] == 60


@pytest.mark.slow
def test_errors_are_one_line_with_exit_codes(pair, stitch):
    tmp, src, tgt = pair
    write_store(tmp / "other.h5", ["x", "y"], np.zeros((2, 20), np.float32),
                attrs={"model_spec": "lite0", "weights_sha256": "s0"})
    # One run through the real entry point: one line on stderr, exit 2.
    r = stitch("fit", src, tmp / "other.h5", "-o", tmp / "m.map")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "share no ids" in r.stderr
    # Too few anchors for exact least squares: the minimum-norm map, with a warning naming ridge.
    r = CliRunner().invoke(cli, ["fit", src, tgt, "-o", str(tmp / "m.map"), "--overwrite", "--method", "affine",
                                 "--alpha", "0", "--n-anchors", "15"])
    assert r.exit_code == 0 and "minimum-norm" in r.stderr and "ridge" in r.stderr
    invoke("fit", src, tgt, "-o", tmp / "m.map", "--overwrite")
    code, msg = failure("apply", tmp / "m.map", tgt, "-o", tmp / "x.h5")
    assert code == 2 and "widths differ" in msg
    code, msg = failure("fit", src, tgt, "-o", tmp / "m.map", "--alpha", "-3")
    assert code == 2 and "alpha takes" in msg
