"""Prompt files and class lists: curated sets load, malformed files fail with clear lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stitchkit.zeroshot.prompts import PromptError, from_classes, load_prompts, parse_prompts


def test_curated_sets() -> None:
    cxr = load_prompts("cxr14")
    assert cxr.mode == "multilabel"
    assert len(cxr.classes) == 14
    eff = next(c for c in cxr.classes if c.name == "effusion")
    assert "There is pleural effusion." in eff.positive
    assert "There is no pleural effusion." in eff.negative
    assert eff.matches("Effusion|Atelectasis") and not eff.matches("Nodule")
    pn = load_prompts("pneumonia")
    assert pn.names == ["normal", "pneumonia"]
    assert pn.classes[0].matches("no_finding") and pn.classes[1].matches("pneumonia")
    sub = load_prompts("pneumonia-subtypes")
    assert len(sub.classes) == 3 and sub.classes[1].matches("bacteria")


def test_class_list_uses_standardised_forms() -> None:
    ps = from_classes(["normal", "pleural_effusion"], mode="multilabel")
    assert ps.classes[1].positive == ["There is pleural effusion."]
    assert ps.classes[1].negative == ["There is no pleural effusion."]
    ps = from_classes(["a", "b"], templates=["A photo of {finding}.", "X-ray of {finding}."])
    assert ps.classes[0].positive == ["A photo of a.", "X-ray of a."]


def test_short_form_and_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"normal": ["The lungs are clear."], "pneumonia": ["There is pneumonia."]}))
    ps = load_prompts(path)
    assert ps.names == ["normal", "pneumonia"] and ps.classes[1].negative == ["There is no pneumonia."]
    assert set(ps.texts()) >= {"The lungs are clear.", "There is pneumonia."}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("classes: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("classes: {}\n", "non-empty mapping"),
        ("templates: ['There is X.']\nclasses: {a: {}, b: {}}\n", "no {finding} placeholder"),
        ("classes: {a: {positives: [x]}}\n", "unknown keys"),
        ("colour: red\nclasses: {a: [x]}\n", "unknown top-level keys"),
        ("classes: {a: [1, 2]}\n", "list of non-empty strings"),
        ("mode: sometimes\nclasses: {a: [x]}\n", "mode must be one of"),
    ],
)
def test_malformed_files_name_file_and_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(PromptError) as err:
        load_prompts(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_lists_curated_sets(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="curated sets: .*cxr14"):
        load_prompts(tmp_path / "nope.yaml")


def test_duplicate_classes() -> None:
    with pytest.raises(PromptError, match="duplicate"):
        parse_prompts({"A": ["x"], "a": ["y"]}, source="t")


@pytest.mark.slow
def test_cli_malformed_prompts_exit_2(stitch, tmp_path: Path) -> None:
    import numpy as np

    from stitchkit.store import write_store

    store = write_store(tmp_path / "q.h5", ["a", "b"], np.ones((2, 4), dtype=np.float32))
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: {a: {positive: []}, b: 3}\n")
    r = stitch("classify", store, "--prompts", bad, "--text-model", "minilm")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and str(bad) in r.stderr and "class 'b'" in r.stderr


@pytest.mark.slow
def test_prompts_from_iu_report_sentences(tmp_path: Path) -> None:
    """examples/token-head/iu_prompts.py: real report sentences by MeSH term, a valid prompt file."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "iu.yaml"
    r = subprocess.run([sys.executable, str(root / "examples/token-head/iu_prompts.py"), str(out), "10"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    p = load_prompts(str(out))
    assert p.names == ["normal", "pneumonia"] and [len(c.positive) for c in p.classes] == [10, 10]
    pneumonia = p.classes[1].positive
    assert all("XXXX" not in s for c in p.classes for s in c.positive)
    # Finding sentences name a finding and are not negated ("no focal consolidation").
    assert all(any(w in s.lower() for w in ("pneumonia", "consolidation", "airspace", "infiltrate", "opacit"))
               for s in pneumonia)
    assert not any(s.lower().startswith("no ") for s in pneumonia)
