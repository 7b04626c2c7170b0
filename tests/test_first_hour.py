"""A new user's first hour: no failure exits 0 (issue 23, item 4), on real models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stitchkit.store import EmbeddingStore
from tests.faults.helpers import run_inprocess

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)

REPORTS = [("normal", "The lungs are clear. No pleural effusion or pneumothorax."),
           ("normal", "Heart size normal. Lungs clear."),
           ("pneumonia", "Right lower lobe consolidation consistent with pneumonia."),
           ("pneumonia", "Patchy airspace opacity in the left base, likely pneumonia.")]


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real report sentences embedded with MiniLM, labelled normal / pneumonia."""
    d = tmp_path_factory.mktemp("texts")
    with open(d / "reports.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        w.writerows((f"r{i}", text, label) for i, (label, text) in enumerate(REPORTS))
    res = run_inprocess("embed", d / "reports.csv", "-m", "minilm", "-o", d / "reports.h5")
    assert res.code == 0, res.stderr
    return d / "reports.h5"


def test_a_misspelled_class_is_an_error_naming_the_close_label(text_store: Path, tmp_path: Path) -> None:
    res = run_inprocess("classify", text_store, "--classes", "normal,pnuemonia", "--text-model", "minilm",
                        "-o", tmp_path / "s.csv")
    assert res.code == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pnuemonia" in lines[0] and "'pneumonia'" in lines[0], lines
    assert "--allow-missing-classes" in lines[0]
    assert not (tmp_path / "s.csv").exists()
    # Asked for, the class is scored without a positive: its AUC is n/a, the run succeeds.
    res = run_inprocess("classify", text_store, "--classes", "normal,pnuemonia", "--text-model", "minilm",
                        "--allow-missing-classes", "--json")
    assert res.code == 0, res.stderr
    res = run_inprocess("classify", text_store, "--classes", "normal,pneumonia", "--text-model", "minilm")
    assert res.code == 0, res.stderr


def test_every_input_failing_exits_non_zero_and_keeps_the_failed_table(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "o.h5"
    res = run_inprocess("embed", folder, "-m", "lite0", "-o", out, "--workers", "0")
    assert res.code == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "every input failed (2)" in errors[0] and str(out) in errors[0]
    assert str(folder / "notes.png") in res.stderr  # the warning names the file it tried
    with EmbeddingStore(out) as store:  # kept for `stitch info`
        assert len(store) == 0 and {i for i, _ in store.failed} == {"notes.png", "empty.png"}


def test_strict_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "notes.png").write_text("not an image")
    res = run_inprocess("embed", folder, "-m", "lite0", "-o", tmp_path / "o.h5", "--strict", "--workers", "0")
    assert res.code == 2 and "notes.png" in res.stderr


def test_the_readmes_results_command_runs() -> None:
    repo = Path(__file__).resolve().parents[1]
    res = run_inprocess("results", repo / "docs" / "results" / "demo-results.json", "--columns", "route,command")
    assert res.code == 0, res.stderr
    assert "stitch classify demo-out/k-test-lite2.h5" in res.stdout and "(a) Lite2 native" in res.stdout


def test_the_help_pipeline_runs_as_printed(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stitch --help`'s pipeline, line by line, on a small copy of Kermany's published folders."""
    from click.testing import CliRunner
    from stitchkit.cli.main import cli

    text = CliRunner().invoke(cli, ["--help"]).output
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("stitch ")]
    assert [c.split()[1] for c in commands] == ["embed", "head", "head", "embed", "fit", "embed", "classify"]
    for split, per_class in (("train", 16), ("test", 6)):
        for label in ("NORMAL", "PNEUMONIA"):
            (tmp_path / "kermany" / split / label).mkdir(parents=True)
            for image in sorted((data / "kermany-pneumonia-224" / split / label).iterdir())[:per_class]:
                (tmp_path / "kermany" / split / label / image.name).symlink_to(image)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        res = run_inprocess(*command.split()[1:])
        assert res.code == 0, f"{command}: {res.stderr}"
    with open(tmp_path / "scores.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 12


def _readme_block(heading: str) -> list[str]:
    """The commands of the README's first bash block under ``heading``: continuations joined,
    comments dropped."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split(heading, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip().startswith("stitch ")]


def test_the_readmes_pipeline_runs_as_printed(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's "One pipeline", command by command, on small Kermany manifests of the same form."""
    import shlex

    commands = _readme_block("## One pipeline")
    assert len(commands) == 10
    kermany = data / "kermany-pneumonia-224"
    with open(kermany / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for split, per_class in (("train", 24), ("test", 8)):
        picked = [r for label in ("normal", "pneumonia")
                  for r in [r for r in rows if r["split"] == split and r["label"] == label][:per_class]]
        with open(tmp_path / f"kermany-{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "path", "label"])
            w.writerows((r["path"], str(kermany / r["path"]), r["label"]) for r in picked)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        line, _, redirect = command.partition(" > ")
        res = run_inprocess(*shlex.split(line)[1:])
        assert res.code == 0, f"{command}: {res.stderr}"
        if redirect:
            (tmp_path / redirect.strip()).write_text(res.stdout)
    assert (tmp_path / "report" / "index.html").exists()
    with open(tmp_path / "table.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2
