"""Every benchmark's ``--smoke`` run: the script still runs against today's code and prints its verdict.

A benchmark measures speed or memory against a baseline in the same run (docs/benchmarks.md); no
test checks its figures. What rots is the script itself: an API it calls changes and nothing runs
it. Each test starts ``python benchmarks/X.py --smoke`` from the repository root, as a user would,
in a process of its own and offline, and asserts that it exits 0 and prints its ``ratio:`` (or
``result:``) line. ``--smoke`` runs the smallest real input (a few images, a few hundred rows) in
seconds to tens of seconds each, which is why the module is marked slow.

``gpu_check.sh`` (the GPU check) runs as ``--smoke`` too: every step on the CPU at the smallest
sizes, so its commands and options are checked against today's CLI without a GPU.

Not run here, each with its reason: ``adapt_rule.py`` without a finished `stitch demo` folder ($STITCHKIT_DEMO_OUT, else
demo-out/ at the root: building one takes about 5 minutes even at ``--limit 8``), and scripts
whose optional package is missing (Ray, Keras).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # 10-50 s a script on 2 shared cores; several minutes together

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RATIO = r"^ratio: .+ = -?\d+\.\d{3}\b"


def _demo_folder() -> Path | None:
    for candidate in (os.environ.get("STITCHKIT_DEMO_OUT"), ROOT / "demo-out"):
        if candidate and (Path(candidate) / "demo-suite.yaml").is_file():
            return Path(candidate)
    return None


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


#: script -> (extra arguments, the line it must print, why it cannot run here or None)
SMOKE: dict[str, tuple[list[str], str, str | None]] = {
    "adapt_rule.py": ([str(_demo_folder())], r"^ratio: adapted \(--dims 4\) / unadapted AUC",
                      None if _demo_folder() else
                      "needs a finished `stitch demo` folder ($STITCHKIT_DEMO_OUT or demo-out/); "
                      "`stitch demo --limit 8` takes about 5 minutes, beyond a smoke run"),
    "benchmark_overhead.py": ([], r"^ratio: stitch benchmark / the classify calls", None),
    "classify_speed.py": ([], r"^ratio: classify marginal / bare at N=2,000", None),
    "dataset_index.py": ([], r"^ratio: read_inputs / floor", None),
    "embed_throughput.py": ([], r"^ratio: stitch embed pipeline / encoder forward", None),
    "faults.py": ([], r"^ratio: merge survived / trials = 1\.000", None),
    "fit_speed.py": ([], r"^ratio: stitchkit affine / floor at N=2000", None),
    "head_epoch.py": ([], r"^ratio: today / before", None),
    "head_scale.py": ([], r"^ratio: streaming / in memory", None),
    "refine_unpaired.py": ([], r"^ratio: refined / anchors-only fit time", None),
    "scale.py": ([], r"^ratio: ray 1 actor / local engine",
                 "needs the `ray` extra (pip install -e '.[dev]')" if _missing("ray") else None),
    "token_reads.py": ([], r"^ratio: store.read\(tokens=True\) / h5py runs", None),
    "xception_parity.py": ([], r"^result: parity with Keras on 2 images",
                           "needs keras (the dev extra) and pneumonia-model-package (`make install`)"
                           if _missing("keras") or _missing("pneumonia_model_package") else None),
}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {"common.py"}
    assert scripts == set(SMOKE), "a benchmark without a smoke test here, or a test without its script"
    for name in scripts:
        assert "--smoke" in (BENCHMARKS / name).read_text(), f"{name}'s docstring shows no --smoke run"


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke_run(script: str) -> None:
    extra, line, skip = SMOKE[script]
    if skip:
        pytest.skip(f"{script}: {skip}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *extra, "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{done.stderr[-4000:]}"
    assert re.search(line, done.stdout, re.M), f"{script} --smoke printed no {line!r}:\n{done.stdout[-4000:]}"
    assert re.search(RATIO, done.stdout, re.M) or script == "xception_parity.py", done.stdout[-2000:]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_check_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_check_smoke_run(tmp_path: Path) -> None:
    """`bash benchmarks/gpu_check.sh --smoke`: the GPU check's commands on the CPU (the real run
    needs a CUDA GPU and writes about 24 GB: by hand on a GPU machine, docs/benchmarks.md)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHON": sys.executable,
           "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "== all steps ran" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]
