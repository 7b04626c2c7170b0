"""`--device` and `--precision`: one resolution for every command, refusals in one line, and
the CPU giving exactly what it gave before the option existed.

No GPU is needed: the GPU branches are checked with torch.cuda's answers replaced, and the
torch path of a map (what a GPU runs) is run on the CPU against the map's numpy path.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stitchkit import devices
from stitchkit.devices import DeviceMap, check_device, check_precision, device_name, resolve_device
from stitchkit.errors import UsageError
from tests.faults.helpers import run_inprocess

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("text", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", " CUDA:1 "])
def test_accepted_spellings(text: str) -> None:
    assert check_device(text) == text.strip().lower()


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "mps", "cpu:0", ""])
def test_other_spellings_are_one_line(text: str) -> None:
    with pytest.raises(UsageError, match="use auto, cpu, cuda or cuda:N"):
        check_device(text)


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_auto_is_the_cpu_when_torch_sees_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    assert device_name("auto") == device_name(None) == device_name("cpu") == "cpu"
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    for text in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(UsageError, match="no CUDA device is visible") as err:
            device_name(text)
        assert "\n" not in str(err.value) and "--device cpu" in str(err.value)
    from stitchkit.encoders.registry import resolve_device as encoder_device

    with pytest.raises(UsageError, match="no CUDA device is visible"):  # embed resolves the same way
        encoder_device("cuda")


def test_auto_picks_the_current_gpu_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 2, current=1)
    assert device_name("auto") == device_name("cuda") == "cuda:1"
    assert device_name("cuda:0") == "cuda:0" and device_name("cpu") == "cpu"
    with pytest.raises(UsageError, match="shows 2 CUDA device"):
        device_name("cuda:2")


@pytest.mark.skipif(devices._driver_present(), reason="a GPU driver is present: torch is asked")
def test_auto_without_a_driver_does_not_import_torch() -> None:
    code = "import sys; from stitchkit.devices import device_name; print(device_name('auto'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]


def test_precision() -> None:
    check_precision("bf16", torch.device("cpu"))
    check_precision("fp16", torch.device("cuda"))
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(UsageError, match="fp32, bf16, fp16"):
        check_precision("half", torch.device("cpu"))
    assert devices.autocast(torch.device("cpu"), "fp32").__class__.__name__ == "nullcontext"
    with devices.autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["head train", "classify", "apply", "embed"])
def test_every_command_refuses_a_missing_gpu_in_one_line(command: str, tmp_path: Path) -> None:
    args = {
        "head train": ["head", "train", tmp_path / "i.h5", tmp_path / "t.h5", "-o", tmp_path / "h.st"],
        "classify": ["classify", tmp_path / "q.h5", "--classes", "a,b"],
        "apply": ["apply", tmp_path / "m.map", tmp_path / "s.h5", "-o", tmp_path / "o.h5"],
        "embed": ["embed", tmp_path, "-m", "lite0", "-o", tmp_path / "e.h5"],
    }[command]
    for device in ("cuda", "cuda:1"):
        res = run_inprocess(*args, "--device", device)
        assert res.code == 2, res.stderr
        assert len(res.message_lines) == 1 and "no CUDA device is visible" in res.stderr, res.stderr
    res = run_inprocess(*args, "--device", "gpu")
    assert res.code == 2 and len(res.message_lines) == 1 and "auto, cpu, cuda or cuda:N" in res.stderr


def test_embed_with_ray_takes_no_gpu_index(tmp_path: Path) -> None:
    res = run_inprocess("embed", tmp_path, "-m", "lite0", "-o", tmp_path / "e.h5", "--engine", "ray",
                        "--device", "cuda:1")
    assert res.code == 2 and len(res.message_lines) == 1 and "use --device cuda" in res.stderr


def test_embed_on_a_gpu_never_runs_onnx_runtime() -> None:
    """`--runtime auto` on a GPU picks torch (ONNX Runtime here is the CPU build); an explicit
    `--runtime onnx` there is refused. The store records the device and dtype."""
    from stitchkit.encoders import load_encoder
    from stitchkit.encoders.onnx_runtime import select_runtime

    encoder = load_encoder("lite0", runtime="torch")
    assert json.loads(json.dumps(encoder.runtime_info())) == {
        "name": "torch", "torch": torch.__version__, "device": "cpu", "dtype": "float32"}
    encoder.device = torch.device("cuda:0")  # what --device cuda builds (no GPU is touched here)
    assert select_runtime(encoder, "auto") == "torch" and encoder.runtime == "torch"
    with pytest.raises(UsageError, match="runs on the CPU"):
        select_runtime(encoder, "onnx")


def _map(tmp_path: Path, l2: bool) -> object:
    from stitchkit.maps import AnchorPlan, fit_map
    from stitchkit.store import write_store

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    y = x @ rng.normal(size=(24, 8)).astype(np.float32) + rng.normal(size=(300, 8)).astype(np.float32)
    ids = [f"r{i}" for i in range(300)]
    src = write_store(tmp_path / f"x{l2}.h5", ids, x, attrs={"modality": "image", "model_spec": "x"})
    tgt = write_store(tmp_path / f"y{l2}.h5", ids, y, attrs={"modality": "image", "model_spec": "y"})
    from stitchkit.maps.estimators import RidgeMap

    return fit_map(src, tgt, RidgeMap(l2=l2), plan=AnchorPlan(metrics=False))


@pytest.mark.parametrize("l2", [False, True])
def test_the_gpu_path_of_a_map_equals_its_numpy_path(tmp_path: Path, l2: bool) -> None:
    """DeviceMap (what --device cuda runs: torch float32 products) on the CPU, against the
    map's own transform; on the CPU `on_device` hands back the map itself."""
    m = _map(tmp_path, l2)
    x = np.random.default_rng(1).normal(size=(50, 24)).astype(np.float32)
    on_gpu_path = DeviceMap(m, torch.device("cpu"))
    np.testing.assert_allclose(on_gpu_path.transform(x), m.transform(x), rtol=1e-5, atol=1e-5)
    assert on_gpu_path.n_features_out_ == m.n_features_out_ and on_gpu_path.l2 == l2
    assert devices.on_device(m, "cpu") is m


# -- the CPU gives what it gave: classify and apply with and without --device cpu -------------
@pytest.fixture(scope="module")
def routes(lite0_store: Path, lite2_token_store: Path, lite2_token_captions: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from stitchkit.head import ComputeOptions, HeadConfig, TrainConfig, train_head
    from stitchkit.maps import AnchorPlan, fit_map

    d = tmp_path_factory.mktemp("devices")
    out = {"dir": d, "head": d / "token.head", "map": d / "l0-l2.map", "text_map": d / "l2-minilm.map"}
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=16)
    train_head(lite2_token_store, lite2_token_captions, out=out["head"], config=replace(cfg, seed=0), run=ComputeOptions(threads=2))
    fit_map(lite0_store, lite2_token_store, "ridge", plan=AnchorPlan(metrics=False)).save(out["map"])
    fit_map(lite2_token_store, lite2_token_captions, "ridge", plan=AnchorPlan(metrics=False)).save(out["text_map"])
    return out


def _classify(args: list[object], out: Path, device: list[str]) -> tuple[list[dict[str, str]], dict]:
    # The head trained on every row: the routes compared here score them all.
    res = run_inprocess("classify", *args, "--bootstrap", "50", "-o", out, "--json", "--allow-overlap", *device)
    assert res.code == 0, res.stderr
    return list(csv.DictReader(out.open())), json.loads(res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["token head", "map + head on globals", "cosine through a map"])
def test_classify_on_the_cpu_gives_what_it_gave(route: str, routes: dict[str, Path], lite0_store: Path,
                                                lite2_token_store: Path) -> None:
    args = {
        "token head": [lite2_token_store, "--head", routes["head"]],
        "map + head on globals": [lite0_store, "--map", routes["map"], "--head", routes["head"],
                                  "--no-image-tokens"],
        "cosine through a map": [lite2_token_store, "--map", routes["text_map"], "--scoring", "cosine"],
    }[route] + ["--prompts", "pneumonia", "--text-model", "minilm"]
    d = routes["dir"]
    plain, plain_record = _classify(args, d / "plain.csv", [])
    cpu, cpu_record = _classify(args, d / "cpu.csv", ["--device", "cpu"])
    assert plain == cpu and len(plain) == 180
    assert plain_record["metrics"] == cpu_record["metrics"]
    assert plain_record["device"] == cpu_record["device"] == "cpu"


@pytest.mark.slow
def test_apply_on_the_cpu_gives_what_it_gave(routes: dict[str, Path], lite0_store: Path,
                                             lite2_token_store: Path) -> None:
    from stitchkit.store import EmbeddingStore

    d = routes["dir"]
    for name, (map_path, store) in {"globals": (routes["map"], lite0_store),
                                    "tokens": (routes["text_map"], lite2_token_store)}.items():
        a, b = d / f"apply-{name}.h5", d / f"apply-{name}-cpu.h5"
        assert run_inprocess("apply", map_path, store, "-o", a).code == 0
        res = run_inprocess("apply", map_path, store, "-o", b, "--device", "cpu", "--json")
        assert res.code == 0 and json.loads(res.stdout)["device"] == "cpu"
        with EmbeddingStore(a) as x, EmbeddingStore(b) as y:
            assert np.array_equal(x.read(), y.read()) and list(x.ids) == list(y.ids)
            assert x.attrs["map_device"] == y.attrs["map_device"] == "cpu"
            if name == "tokens":
                rows = np.arange(len(x))
                assert x.token_shape == (81, 384)
                assert np.array_equal(x.read_tokens(rows)[0], y.read_tokens(rows)[0])
