"""The library works installed as a wheel, not only as an editable checkout.

The wheel is built from this tree and installed into a fresh virtual environment whose only
other packages are the dependencies already installed here (reached through a ``.pth`` file,
which does not run the editable install's finder), so the curated prompts must come from the
wheel's package data.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _site_packages(env: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return env / relative


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    wheel = next((work / "dist").glob("stitchkit-*.whl"))
    env = work / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    site = _site_packages(env)
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
         "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    return env


def test_wheel_ships_prompts_anchor_lists_and_suites(wheel_env: Path) -> None:
    code = (
        "import stitchkit, stitchkit.anchors as a;"
        "print(stitchkit.__file__);"
        "print(sorted(p.name for p in a.PROMPTS_DIR.glob('*.yaml')));"
        "print(len(list(a.LISTS_DIR.glob('*.txt'))));"
        "print(sorted(p.name for p in a.SUITES_DIR.glob('*.yaml')))"
    )
    out = subprocess.run([str(wheel_env / "bin" / "python"), "-c", code], cwd=wheel_env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert str(wheel_env) in out[0], "stitchkit was imported from the checkout, not the wheel"
    assert out[1] == "['cxr-findings.yaml', 'cxr14-chexzero.yaml', 'cxr14-report.yaml', 'cxr14.yaml', 'pneumonia-subtypes.yaml', 'pneumonia.yaml']"
    assert int(out[2]) >= 4
    assert out[3] == "['demo.yaml', 'papers.yaml']"  # `stitch benchmark papers` after `pip install .`


def test_wheel_classifies_with_a_curated_prompt_set(wheel_env: Path, minilm_store: Path,
                                                     tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [str(wheel_env / "bin" / "stitch"), "classify", str(minilm_store), "--prompts", "pneumonia",
         "--text-model", "minilm", "--scoring", "cosine", "-o", str(scores)],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stderr
    with open(scores, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300
    assert any("pneumonia" in column for column in rows[0])


def test_a_wheel_names_its_version_and_no_commit(wheel_env: Path) -> None:
    """Installed from a wheel there is no checkout: the code is the installed version alone."""
    import json
    from importlib.metadata import version

    code = "import json, stitchkit.provenance as p; print(json.dumps(p.code_provenance()))"
    out = subprocess.run([str(wheel_env / "bin" / "python"), "-c", code], cwd=wheel_env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"stitchkit": version("stitchkit")}
