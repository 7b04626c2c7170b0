"""`stitch embed --engine ray` on a local Ray and real chest X-rays: same store as the local engine.

Each Ray run starts its own local Ray and loads the model in every actor, so the set is kept to
two Ray runs (one killed, one resuming it) on 32 Kermany images. Skipped where Ray is not
installed (`pip install 'stitchkit[ray]'`), except for the message that says how to install it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stitchkit.store import EmbeddingStore

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data]")
BATCH = "4"  # 32 images -> 8 batches: enough part files to kill a run in the middle
RAY = ["--engine", "ray", "--ray-cpus", "2"]


@pytest.fixture(scope="module")
def manifest32(kermany_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 of the session's Kermany images, both splits and both classes."""
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))[::5][:32]
    assert {r["label"] for r in rows} == {"normal", "pneumonia"}
    path = tmp_path_factory.mktemp("ray") / "k32.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def local_store(manifest32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's store: the reference every Ray run must equal."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    out = tmp_path_factory.mktemp("ray") / "local.h5"
    embed_store(read_inputs(manifest32), load_encoder("lite0"), out, batch_size=int(BATCH), workers=0)
    return out


def _assert_same_store(got: Path, ref: Path) -> None:
    with EmbeddingStore(got) as a, EmbeddingStore(ref) as b:
        assert a.complete and len(a) == len(b) == 32
        assert list(a.ids) == list(b.ids)  # input order, not completion order
        assert list(a.labels) == list(b.labels)
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-4, atol=1e-5)  # 1 vs 2 threads
        for key in ("model_spec", "weights_sha256", "preprocessing", "ids_sha256", "modality", "input"):
            assert a.attrs[key] == b.attrs[key], key


@needs_ray
def test_killed_ray_run_resumes_and_equals_the_local_engine(
    tmp_path: Path, manifest32: Path, local_store: Path, stitch
) -> None:
    """SIGKILL a Ray run after a few batches, re-run it with two actors: same store as local.

    One test for both claims (equal store, resume) because every Ray run pays for starting a
    local Ray and loading the model in each actor.
    """
    out = tmp_path / "ray.h5"
    args = [sys.executable, "-m", "stitchkit.cli.main", "embed", str(manifest32), "-m", "lite0",
            "-o", str(out), "--batch-size", BATCH, *RAY]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(str(out) + ".parts")
    deadline = time.time() + 300
    while len(list(parts.glob("part-*.h5"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a store behind"
    done_before = len(list(parts.glob("part-*.h5")))
    assert 2 <= done_before < 8, done_before

    res = stitch("embed", manifest32, "-m", "lite0", "-o", out, "--batch-size", BATCH, *RAY,
                 "--actors", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    summary = json.loads(res.stdout)
    assert summary["batches_resumed"] == done_before and summary["samples"] == 32
    _assert_same_store(out, local_store)
    assert not parts.exists()
    # Both engines share the run fingerprint: the local engine sees the Ray store as its own.
    again = stitch("embed", manifest32, "-m", "lite0", "-o", out, "--batch-size", BATCH)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_missing_ray_is_one_line_exit_2(tmp_path: Path, manifest32: Path) -> None:
    # sys.modules[name] = None makes `import ray` fail as it does where Ray is not installed.
    code = (
        "import runpy, sys; sys.modules['ray'] = None; "
        f"sys.argv = ['stitch', 'embed', {str(manifest32)!r}, '-m', 'lite0', '-o', {str(tmp_path / 'o.h5')!r}, "
        "'--engine', 'ray']; runpy.run_module('stitchkit.cli.main', run_name='__main__')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --engine ray needs Ray: pip install 'stitchkit[ray]'"


def test_ray_options_need_the_ray_engine(tmp_path: Path, manifest32: Path, stitch) -> None:
    res = stitch("embed", manifest32, "-m", "lite0", "-o", tmp_path / "o.h5", "--address", "auto")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --address needs --engine ray"


def test_actor_groups_fit_on_the_nodes() -> None:
    from stitchkit.engines.ray_engine import plan_actors

    here = plan_actors([{"CPU": 2.0}], None, "auto")
    assert (here.actors, here.device, here.threads) == (1, "cpu", 2) and here.num_cpus < 2
    two = plan_actors([{"CPU": 2.0}], 2, "cpu")
    assert two.threads == 1 and 2 * two.num_cpus + two.decode_cpus <= 2  # decoding still fits
    # An actor cannot span machines: 3 actors on two 16-CPU nodes get 8-CPU groups, not 10.
    three = plan_actors([{"CPU": 16.0}, {"CPU": 16.0}], 3, "cpu")
    assert 7 < three.num_cpus <= 8
    gpu = plan_actors([{"CPU": 16.0, "GPU": 4.0}, {"CPU": 16.0, "GPU": 4.0}], None, "auto")
    assert (gpu.actors, gpu.device, gpu.num_gpus) == (8, "cuda", 1.0)
