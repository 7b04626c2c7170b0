"""Every on-disk format is versioned, read by the reader beside its writer, and checked in one place.

tests/data/formats/v1/ holds one file of each kind written by stitchkit when every format was
at version 1 (tests/data/formats/make_v1.py, run once and never again). Each must still read,
with the content recorded beside it in expected.json, after every change. A copy of each
declaring the next version must be refused in one line (exit 2), and no module but
stitchkit/formats.py may compare format versions.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stitchkit import formats
from stitchkit.errors import FormatError, UsageError
from stitchkit.inspect import identify

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults.helpers import run_inprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "tests" / "data" / "formats"


def _unpacked(version: str, into: Path) -> Path:
    """A copy of the kept files of ``version`` with the gzipped HDF5 files unpacked."""
    out = into / version
    shutil.copytree(KEPT / version, out)
    for gz in list(out.glob("*.gz")):
        with gzip.open(gz, "rb") as src, open(gz.with_suffix(""), "wb") as dst:
            shutil.copyfileobj(src, dst)
        gz.unlink()
    return out


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpacked("v1", tmp_path_factory.mktemp("kept"))


@pytest.fixture(scope="module")
def expected(v1: Path) -> dict:
    return json.loads((v1 / "expected.json").read_text(encoding="utf-8"))


# -- the kept version-1 files read, with the content they were written with -----------------------

def test_the_kept_files_are_small_and_complete() -> None:
    names = {p.relative_to(KEPT / "v1").as_posix() for p in (KEPT / "v1").rglob("*") if p.is_file()}
    assert {"store.h5.gz", "map.map", "head.head", "head.ckpt", "scores.csv", "scores.h5.gz",
            "export/stitchkit.json", "expected.json"} <= names
    assert all(p.stat().st_size < 16_000 for p in (KEPT / "v1").rglob("*") if p.is_file())


def test_v1_store_reads(v1: Path, expected: dict) -> None:
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(v1 / "store.h5") as store:
        assert store.is_stitchkit and int(store.attrs["format_version"]) == 1
        assert list(store.ids) == expected["ids"]
        assert list(store.labels) == expected["labels"] and list(store.groups) == expected["groups"]
        assert [list(f) for f in store.failed] == expected["failed"]
        assert store.read().astype(np.float64).sum() == pytest.approx(expected["embeddings_sum"], rel=1e-6)
        assert store.has_tokens and tuple(store.token_shape) == (4, 8)
        tokens, mask = store.read_tokens(np.arange(len(store)))
        assert mask.all() and tokens.astype(np.float64).sum() == pytest.approx(expected["tokens_sum"], rel=1e-5)


def test_v1_map_reads_and_maps_as_it_did(v1: Path, expected: dict) -> None:
    from stitchkit.maps import load_map

    m = load_map(v1 / "map.map")
    assert type(m).__name__.lower().startswith(expected["map"]["method"])
    out = m.transform(np.asarray(expected["map"]["input"]))
    np.testing.assert_allclose(out, expected["map"]["output"], rtol=1e-6, atol=1e-6)


def test_v1_head_reads_and_scores_as_it_did(v1: Path, expected: dict) -> None:
    from stitchkit.head import Head

    head = Head.load(v1 / "head.head")
    # Settings added since (the cosine residual, the initialisation) read as heads had them then.
    assert head.config_.to_dict() == {**expected["head"]["config"], "residual": False, "init": "torch"}
    e = expected["head"]
    tokens = np.asarray(e["image_tokens"], dtype=np.float32)
    logits = head.score(np.asarray(e["image"]), np.asarray(e["texts"]), tokens,
                        np.ones(tokens.shape[:2], dtype=bool))
    np.testing.assert_allclose(logits, e["logits"], rtol=1e-4, atol=1e-5)


def test_v1_head_checkpoint_reads_into_its_model(v1: Path, expected: dict) -> None:
    import torch

    from stitchkit.artifacts import read_header
    from stitchkit.head.checkpoint import load_checkpoint
    from stitchkit.head.config import HeadConfig
    from stitchkit.head.model import CrossAttentionHead, state_to_numpy

    assert read_header(v1 / "head.ckpt")["epoch"] == expected["checkpoint"]["epoch"]
    model = CrossAttentionHead(8, 6, HeadConfig.from_dict(expected["head"]["config"]))
    opt = torch.optim.AdamW(model.parameters())
    state = load_checkpoint(v1 / "head.ckpt", model, opt, None)
    assert state.epoch == 1 and len(state.history) == 1
    assert state.step == 0 and state.rng is None  # written at an epoch's end, before mid-epoch steps
    assert set(state.best) == set(state_to_numpy(model))
    assert len(opt.state) == len(list(model.parameters()))  # AdamW's moments came back


@pytest.mark.parametrize("name", ["scores.csv", "scores.h5"])
def test_v1_score_files_read(v1: Path, expected: dict, name: str) -> None:
    from stitchkit.zeroshot.score_writer import read_scores

    sf = read_scores(v1 / name)
    assert sf.format_version == 1
    assert sf.classes == expected["scores"]["classes"]
    assert sf.ids == expected["ids"] and sf.labels == expected["labels"]
    np.testing.assert_allclose(sf.probabilities, expected["scores"]["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(sf.ranking, expected["scores"]["ranking"], rtol=1e-6, atol=1e-7)
    if name.endswith(".csv"):
        assert sf.predicted is not None and len(sf.predicted) == len(sf.ids)
    else:
        assert sf.meta["mode"] == "multiclass"


def test_v1_export_folder_imports(v1: Path, expected: dict, tmp_path: Path) -> None:
    from stitchkit.export import import_folder
    from stitchkit.store import EmbeddingStore

    import_folder(v1 / "export", tmp_path / "back.h5")
    with EmbeddingStore(tmp_path / "back.h5") as store:
        assert list(store.ids) == expected["ids"] and list(store.labels) == expected["labels"]
        assert store.model_spec == "synthetic-image"
        assert store.read().astype(np.float64).sum() == pytest.approx(expected["embeddings_sum"], rel=1e-6)


@pytest.mark.parametrize("name", ["store.h5", "map.map", "head.head", "head.ckpt", "scores.csv", "scores.h5",
                                  "export"])
def test_stitch_info_reads_every_kept_kind(v1: Path, name: str) -> None:
    res = run_inprocess("info", v1 / name, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["format_version"] == 1


@pytest.mark.slow
def test_report_reads_the_kept_score_files(v1: Path, tmp_path: Path) -> None:
    from stitchkit.report.build import build_report

    result = build_report([v1 / "scores.csv", v1 / "scores.h5"], tmp_path / "report")
    text = Path(result["markdown"]).read_text(encoding="utf-8")
    assert "2 score files" in text and text.count("## Classification: scores") == 2


# -- a file one version too new is refused in one line, for each kind ----------------------------

def _set_header(path: Path, **changes: object) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="numpy") as fh:
        meta = json.loads(fh.metadata()["stitchkit"])
    save_file(load_file(str(path)), str(path), metadata={"stitchkit": json.dumps({**meta, **changes})})


def _newer(v1: Path, name: str, into: Path) -> tuple[Path, formats.Format]:
    """A copy of the kept ``name`` that declares its kind's version + 1."""
    dst = into / name
    (shutil.copytree if (v1 / name).is_dir() else shutil.copy2)(v1 / name, dst)
    if name == "store.h5":
        with h5py.File(dst, "r+") as h5:
            h5.attrs["format_version"] = formats.STORE.version + 1
        return dst, formats.STORE
    if name == "scores.h5":
        with h5py.File(dst, "r+") as h5:
            h5.attrs["format_version"] = formats.SCORES_H5.version + 1
        return dst, formats.SCORES_H5
    if name == "scores.csv":
        with open(dst, newline="", encoding="utf-8") as fh:
            columns = next(csv.reader(fh))
        from stitchkit.zeroshot.score_writer import metadata_path

        metadata_path(dst).write_text(json.dumps({
            "format": formats.SCORES_CSV.encoding_type, "format_version": formats.SCORES_CSV.version + 1,
            "columns": columns}))
        return dst, formats.SCORES_CSV
    if name == "export":
        info = json.loads((dst / "stitchkit.json").read_text())
        info["format_version"] = formats.EXPORT.version + 1
        (dst / "stitchkit.json").write_text(json.dumps(info))
        return dst, formats.EXPORT
    fmt = {"map.map": formats.MAP, "head.head": formats.HEAD, "head.ckpt": formats.HEAD_CHECKPOINT}[name]
    _set_header(dst, format_version=fmt.version + 1)
    return dst, fmt


def _one_line_refusal(res: object, path: Path, fmt: formats.Format) -> None:
    assert res.code == 2, (res.code, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0]
    assert f"version {fmt.version + 1}" in lines[0] and "upgrade stitchkit" in lines[0], lines[0]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("name", ["store.h5", "map.map", "head.head", "head.ckpt", "scores.csv", "scores.h5",
                                  "export"])
def test_a_newer_file_is_refused_in_one_line_by_stitch_info(v1: Path, tmp_path: Path, name: str) -> None:
    path, fmt = _newer(v1, name, tmp_path)
    _one_line_refusal(run_inprocess("info", path), path, fmt)


def test_the_commands_that_read_them_refuse_newer_files_too(v1: Path, tmp_path: Path) -> None:
    store, fmt = _newer(v1, "store.h5", tmp_path)
    _one_line_refusal(run_inprocess("export", store, "-o", tmp_path / "out"), store, fmt)
    folder, fmt = _newer(v1, "export", tmp_path)
    _one_line_refusal(run_inprocess("import", folder, "-o", tmp_path / "x.h5"), folder, fmt)
    assert not (tmp_path / "x.h5").exists()
    scores, fmt = _newer(v1, "scores.csv", tmp_path)
    _one_line_refusal(run_inprocess("report", scores, "-o", tmp_path / "report"), scores, fmt)
    head, fmt = _newer(v1, "head.head", tmp_path)
    with pytest.raises(FormatError, match="upgrade stitchkit"):
        from stitchkit.head import Head

        Head.load(head)


def test_a_newer_file_in_a_folder_is_listed_as_skipped_by_report(v1: Path, tmp_path: Path) -> None:
    from stitchkit.report.build import find

    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy2(v1 / "scores.h5", folder / "old.h5")
    _newer(v1, "scores.h5", folder)
    found = find([folder])
    assert [p.name for p in found.scores] == ["old.h5"]
    assert any("upgrade stitchkit" in s for s in found.skipped)


def test_an_unknown_artifact_kind_is_refused_in_one_line(v1: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.map"
    shutil.copy2(v1 / "map.map", path)
    _set_header(path, kind="token-map")
    res = run_inprocess("info", path)
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "'token-map'" in res.stderr and "upgrade stitchkit" in res.stderr


def test_an_older_unreadable_or_damaged_version_is_refused(tmp_path: Path) -> None:
    old = formats.Format("thing", "stitchkit.thing", 3, (2, 3))
    with pytest.raises(FormatError, match="no longer reads"):
        formats.check_format(tmp_path / "t", old, 1)
    with pytest.raises(FormatError, match="not a whole number"):
        formats.check_format(tmp_path / "t", old, "two")
    assert formats.check_format(tmp_path / "t", old, np.int64(2)) == 2
    assert formats.check_format(tmp_path / "t", formats.STORE, None) == 1  # no version: 1


# -- unknown head settings are refused, never dropped -------------------------------------------

def test_unknown_head_settings_are_refused_in_one_line(v1: Path, tmp_path: Path) -> None:
    from stitchkit.head import Head
    from stitchkit.head.config import HeadConfig, TrainConfig

    with pytest.raises(UsageError, match=r"'gate'.*upgrade stitchkit") as err:
        HeadConfig.from_dict({"width": 4, "heads": 1, "gate": True})
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match=r"'mixup', 'schedule'"):
        TrainConfig.from_dict({"epochs": 2, "mixup": 0.1, "schedule": "cosine"})
    with pytest.raises(UsageError, match="'gate'"):
        TrainConfig.from_dict({"head": {"gate": True}})
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=8, heads=2), epochs=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg

    path = tmp_path / "newer.head"
    shutil.copy2(v1 / "head.head", path)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        head_config = json.loads(fh.metadata()["stitchkit"])["head_config"]
    _set_header(path, head_config={**head_config, "gate": True})
    with pytest.raises(UsageError, match=rf"{re.escape(str(path))}: HeadConfig setting 'gate' unknown"):
        Head.load(path)


# -- writers and readers side by side ------------------------------------------------------------

def test_score_writer_records_format_and_version_and_the_reader_uses_them(tmp_path: Path) -> None:
    from stitchkit.report.build import find
    from stitchkit.results import load_records
    from stitchkit.zeroshot.score_writer import ScoreWriter, metadata_path, read_scores

    ids, labels = np.array(["a", "b"]), np.array(["x", "y"])
    logits = np.array([[1.0, -1.0], [-2.0, 2.0]], dtype=np.float32)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    meta = {"mode": "multilabel", "scoring": "cosine"}
    for name in ("s.csv", "s.h5"):
        with ScoreWriter(tmp_path / name, ["x", "y"], meta, True, "multilabel") as w:
            w.write(ids, labels, logits, probs)
        sf = read_scores(tmp_path / name)
        assert sf.format_version == 1 and sf.meta["mode"] == "multilabel" and sf.ids == ["a", "b"]
    with h5py.File(tmp_path / "s.h5") as h5:
        assert h5.attrs["format"] == formats.SCORES_H5.encoding_type
        assert h5.attrs["format_version"] == formats.SCORES_H5.version
    side = json.loads(metadata_path(tmp_path / "s.csv").read_text())
    assert side["format"] == formats.SCORES_CSV.encoding_type
    assert side["format_version"] == formats.SCORES_CSV.version and side["table"] == "s.csv"
    # `stitch results *.json` in the folder passes over the metadata file, and so does the report
    assert load_records([metadata_path(tmp_path / "s.csv")]) == []
    found = find([tmp_path])
    assert sorted(p.name for p in found.scores) == ["s.csv", "s.h5"] and not found.skipped
    # metadata that belongs to another table is refused, not trusted
    side["columns"] = ["id", "label", "z", "score:z", "predicted"]
    metadata_path(tmp_path / "s.csv").write_text(json.dumps(side))
    with pytest.raises(UsageError, match="describes another table"):
        read_scores(tmp_path / "s.csv")


def test_a_failed_score_run_leaves_no_metadata(tmp_path: Path) -> None:
    from stitchkit.zeroshot.score_writer import ScoreWriter, metadata_path

    with pytest.raises(RuntimeError), ScoreWriter(tmp_path / "s.csv", ["x"], {}, False) as w:
        w.write(np.array(["a"]), None, np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32))
        raise RuntimeError("stopped")
    assert not (tmp_path / "s.csv").exists() and not metadata_path(tmp_path / "s.csv").exists()


def test_the_figures_module_reads_no_score_files() -> None:
    from stitchkit.report import figures

    assert not hasattr(figures, "read_scores")


@pytest.mark.slow
def test_only_the_formats_module_compares_format_versions() -> None:
    """A comparison whose names mention a version (``format_version``, ``*_VERSION``, a
    ``version`` variable) anywhere but stitchkit/formats.py is a second version check."""
    found = []
    for folder in (ROOT / "stitchkit", ROOT / "cli"):
        for path in folder.rglob("*.py"):
            if path == ROOT / "stitchkit" / "formats.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Compare):
                    continue
                names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
                names += [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
                names += [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                          and n.value == "format_version" and not isinstance(node.ops[0], ast.In | ast.NotIn)]
                names = [n for n in names if n not in ("__version__", "version_info")]  # Python's, a library's
                if any(re.search("version|readable", n, re.IGNORECASE) for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"format versions compared outside stitchkit/formats.py: {found}"


def test_docs_list_every_format() -> None:
    text = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    for fmt in formats.KINDS:
        assert f"`{fmt.encoding_type}`" in text, fmt
    assert "tests/data/formats" in text and "upgrade stitchkit" in text


# -- one registry of file kinds: identify(path) ------------------------------------------------------
def _record(**extra: object) -> dict:
    return {"schema": "stitchkit.result/1", "task": "map_fit", "dataset": "d", "model": "m", "metrics": {}, **extra}


KIND_FILES = {  # name -> (content, the kind identify must name)
    "fit.json": (json.dumps(_record()), formats.RECORD),
    "records.json": (json.dumps([_record(), _record()]), formats.RECORDS),
    "raw-fit.json": (json.dumps({"method": "ridge", "anchors": {}, "metrics": {}}), formats.COMMAND_OUTPUT),
    "benchmark.json": (json.dumps({"schema": "stitchkit.benchmark/1", "datasets": []}), formats.BENCHMARK),
    "curve.json": (json.dumps({"schema": "stitchkit.learning-curve/1", "curve": []}), formats.LEARNING_CURVE),
    "s.csv-metadata.json": (json.dumps({"format": "stitchkit.scores-csv", "format_version": 1}),
                            formats.SCORES_CSV_METADATA),
    "sweep.csv": ("method,n_anchors,top1_mean\nridge,50,0.5\n", formats.SWEEP_TABLE),
    "manifest.csv": ("id,path,label\na,/x/a.png,normal\n", formats.MANIFEST),
    "reports.jsonl": ('{"id": "1", "text": "clear"}\n{"id": "2", "text": "effusion"}\n', formats.MANIFEST),
    "one-row.jsonl": ('{"id": "1", "text": "clear"}\n', formats.MANIFEST),
    "train-ids.txt": ("# label_use: none\na/1.png\na/2.png\n", formats.ID_FILE),
    "suite.yaml": ((ROOT / "anchors" / "suites" / "demo.yaml").read_text(encoding="utf-8"), formats.SUITE),
    "index.html": ("<!doctype html><html><body></body></html>", formats.PAGE),
    "table.md": ("# Zero-shot benchmark\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", formats.MARKDOWN),
}


@pytest.mark.parametrize("name", sorted(KIND_FILES))
def test_identify_names_each_kind_by_content_whatever_the_file_is_called(tmp_path: Path, name: str) -> None:
    content, kind = KIND_FILES[name]
    path = tmp_path / "renamed.bin"  # by content, never by name
    path.write_text(content, encoding="utf-8")
    found = identify(path)
    assert found is not None and found.format is kind and found.version == 1
    info = run_inprocess("info", str(path), "--json")
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout)["kind"] == kind.name


def test_identify_reads_a_figure_and_a_parts_folder_and_refuses_others(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1), dpi=50)
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    assert identify(tmp_path / "f.png").format is formats.FIGURE
    assert json.loads(run_inprocess("info", str(tmp_path / "f.png"), "--json").stdout)["pixels"] == "100x50"
    parts = tmp_path / "o.h5.parts"
    parts.mkdir()
    with h5py.File(parts / "part-00000.h5", "w") as h5:
        h5["embeddings"] = np.zeros((2, 3), dtype=np.float32)
    assert identify(parts).format is formats.PARTS
    prose = tmp_path / "notes.txt"
    prose.write_text("There is pneumonia.\n")
    assert identify(prose) is None
    res = run_inprocess("info", str(prose))
    assert res.code == 2 and res.stderr.count("\n") == 1 and "not a stitchkit file" in res.stderr


def test_a_record_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(_record(schema="stitchkit.result/2")))
    with pytest.raises(FormatError, match="upgrade stitchkit"):
        identify(path)
    res = run_inprocess("info", str(path))
    assert res.code == 2 and "upgrade stitchkit" in res.stderr


def test_embed_part_files_carry_their_version_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    from stitchkit.store.parts import PartRows, read_part_index, write_part

    part = tmp_path / "part-000000.h5"
    write_part(part, [0, 1], PartRows(np.ones((2, 3), np.float32)), [(2, "unreadable")])
    with h5py.File(part, "r") as h5:
        assert (h5.attrs["format"], h5.attrs["format_version"]) == (formats.PARTS.encoding_type, 1)
    assert read_part_index(part).failed == [(2, "unreadable")]
    with h5py.File(part, "r+") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(FormatError, match="99"):
        read_part_index(part)
