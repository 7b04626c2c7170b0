"""The Xception port: real Keras weights from pneumonia-model-package in timm's legacy_xception.

The reference numbers below are Keras's own forward pass (Keras 3.15.1, torch backend, the
package's .keras file, run up to its global_average_pooling2d layer, preprocessing by
keras.utils.load_img(target_size=(150, 150), interpolation="nearest") + xception's
preprocess_input) on two Kermany test images; benchmarks/xception_parity.py is the full check
on more images. These tests need no Keras, but for the parity test, which runs Keras 3's own
forward pass (torch backend, set in the process it runs in: no TensorFlow) where ``keras`` is
installed, and skips, saying so, where it is not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stitchkit.encoders import list_models, load_encoder
from stitchkit.errors import ModelError

pytest.importorskip("h5py")
try:
    from stitchkit.encoders.packaged import xception_weights

    KERAS_FILE = xception_weights()
except ModelError:  # the package is an optional install (make xception)
    KERAS_FILE = None
pytestmark = [pytest.mark.skipif(KERAS_FILE is None, reason="pneumonia-model-package not installed: make xception"),
              pytest.mark.slow]  # Xception runs in every test

# Keras's pooled features at indices 0, 128, ..., 1920, their L2 norm and their sum.
KERAS_REFERENCE = {
    "test/NORMAL/IM-0001-0001.jpeg": (
        [0.02413, 0.0, 0.231789, 0.0, 0.939875, 1.13586, 0.056654, 2.514535,
         0.06301, 0.0, 0.068453, 0.033109, 0.028423, 0.354619, 0.283739, 0.61415],
        25.92017, 651.9612,
    ),
    "test/PNEUMONIA/person100_bacteria_475.jpeg": (
        [0.492145, 0.0, 0.005024, 0.0, 0.0, 0.02489, 0.0, 1.176332,
         0.682951, 0.0, 0.0, 0.0, 0.179011, 0.0, 0.0, 0.336679],
        26.9136, 509.9119,
    ),
}


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("xception")


def _pooled(encoder, images: list[Image.Image]) -> np.ndarray:
    with torch.inference_mode():
        return encoder.encode(torch.stack([encoder.prepare(im) for im in images])).embeddings.numpy()


def test_pooled_features_equal_keras_on_real_images(encoder, data: Path) -> None:
    root = data / "kermany-pneumonia-224"
    out = _pooled(encoder, [Image.open(root / p) for p in KERAS_REFERENCE])
    assert out.shape == (2, 2048) and encoder.dim == 2048
    for row, (picked, norm, total) in zip(out, KERAS_REFERENCE.values(), strict=True):
        np.testing.assert_allclose(row[::128], picked, atol=2e-5)
        assert abs(np.linalg.norm(row) - norm) < 1e-3 and abs(row.sum() - total) < 1e-2


def test_tf_same_pooling_and_keras_eps_are_what_make_it_match(encoder, data: Path) -> None:
    """Undo either fix and the features move far beyond float tolerance."""
    from timm.layers.pool2d_same import MaxPool2dSame

    from stitchkit.encoders.xception import build_xception

    model = build_xception(KERAS_FILE)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    pools = [m for m in model.modules() if isinstance(m, MaxPool2dSame)]
    assert len(bns) == 40 and {m.eps for m in bns} == {1e-3} and len(pools) == 4
    image = Image.open(data / "kermany-pneumonia-224" / next(iter(KERAS_REFERENCE)))
    x = encoder.prepare(image)[None]
    with torch.inference_mode():
        good = model(x)
        for m in bns:
            m.eps = 1e-5
        eps_off = model(x)
        for m in bns:
            m.eps = 1e-3
        for block in model.modules():
            rep = getattr(block, "rep", None)
            for i, layer in enumerate(rep or []):
                if isinstance(layer, MaxPool2dSame):
                    rep[i] = torch.nn.MaxPool2d(3, 2, 1)
        pool_off = model(x)
    np.testing.assert_allclose(good[0, ::128].numpy(), KERAS_REFERENCE[next(iter(KERAS_REFERENCE))][0], atol=2e-5)
    assert (eps_off - good).abs().max() > 1e-3
    assert (pool_off - good).abs().max() > 1e-2


def test_preprocessing_is_what_the_package_trained_with(encoder) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (224, 224), dtype=np.uint8), mode="L")
    x = encoder.prepare(image)
    expected = np.asarray(image.convert("RGB").resize((150, 150), Image.Resampling.NEAREST), dtype=np.float32)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), expected / 127.5 - 1)
    assert encoder.preprocessing()["input_size"] == [3, 150, 150]
    assert encoder.preprocessing()["interpolation"] == "nearest"


def test_other_sizes_and_the_spec_form(data: Path) -> None:
    enc = load_encoder(f"keras:xception?weights={KERAS_FILE}&img_size=224&interpolation=bilinear")
    image = Image.open(data / "kermany-pneumonia-224" / next(iter(KERAS_REFERENCE)))
    assert enc.prepare(image).shape == (3, 224, 224)
    out = _pooled(enc, [image])
    assert out.shape == (1, 2048) and np.isfinite(out).all() and (out >= 0).all()


def test_listed_by_stitch_models(stitch) -> None:
    res = stitch("models", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)["models"]}
    assert rows["xception"]["installed"] and rows["xception"]["dim"] == 2048
    assert rows["xception"]["modality"] == "image"
    assert {r["name"]: r for r in list_models()}["xception"]["backend"] == "keras:xception"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("keras:xception", "needs ?weights="),
        ("keras:resnet50?weights={file}", "only keras:xception"),
        ("keras:xception?weights={file}&img_size=64", "minimum of 71"),
        ("keras:xception?weights={file}&img_size=big", "must be an integer"),
        ("keras:xception?weights={file}&interpolation=cubic", "unknown interpolation"),
        ("keras:xception?weights={missing}", "does not exist"),
        ("keras:xception?weights={notzip}", "not a Keras 3 .keras file"),
        ("keras:xception?weights={nomodel}", "no nested Keras model"),
    ],
)
def test_bad_specs_are_one_line(tmp_path: Path, data: Path, stitch, spec: str, needle: str) -> None:
    notzip = tmp_path / "x.keras"
    notzip.write_bytes(b"not a zip")
    nomodel = tmp_path / "empty.keras"
    with zipfile.ZipFile(nomodel, "w") as archive:
        archive.writestr("config.json", json.dumps({"config": {"layers": []}}))
        archive.writestr("model.weights.h5", b"")
    spec = spec.format(file=KERAS_FILE, missing=tmp_path / "none.keras", notzip=notzip, nomodel=nomodel)
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    Image.open(data / "kermany-pneumonia-224" / next(iter(KERAS_REFERENCE))).save(image_dir / "a.png")
    res = stitch("embed", image_dir, "-m", spec, "-o", tmp_path / "o.h5")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_embed_writes_a_store_with_provenance(tmp_path: Path, data: Path, stitch) -> None:
    from stitchkit.store import EmbeddingStore

    root = data / "kermany-pneumonia-224"
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    for i, p in enumerate(KERAS_REFERENCE):
        Image.open(root / p).save(image_dir / f"{i}.png")
    res = stitch("embed", image_dir, "-m", "xception", "-o", tmp_path / "x.h5", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    with EmbeddingStore(tmp_path / "x.h5") as store:
        assert store.dim == 2048 and len(store.ids) == 2
        assert store.space()["model_spec"] == "xception" and store.space()["weights_sha256"]
        rows = store.read(store.index_of([i for i in store.ids if str(i).startswith("0")]))
        np.testing.assert_allclose(rows[0, ::128], next(iter(KERAS_REFERENCE.values()))[0], atol=2e-5)


# Keras's side of the parity test, in a process of its own: the backend is chosen when keras is
# first imported, so it is set there (KERAS_BACKEND=torch), whatever this process's environment.
KERAS_SIDE = """
import sys

import keras
import numpy as np
from keras.applications.xception import preprocess_input

keras_file, out, *paths = sys.argv[1:]
assert keras.backend.backend() == "torch", keras.backend.backend()
model = keras.saving.load_model(keras_file, compile=False)
pooled = keras.Model(model.inputs, model.get_layer("global_average_pooling2d").output)
x = np.stack([
    preprocess_input(keras.utils.img_to_array(keras.utils.load_img(p, target_size=(150, 150), interpolation="nearest")))
    for p in paths
]).astype(np.float32)
np.save(out, keras.ops.convert_to_numpy(pooled(x, training=False)))
print(keras.__version__)
"""


@pytest.mark.skipif(importlib.util.find_spec("keras") is None,
                    reason="keras is not installed (pip install keras==3.15.1: Keras 3 on the torch backend, "
                           "no TensorFlow), so the port is not compared with Keras's forward pass")
def test_equals_keras_forward_where_keras_is_installed(encoder, data: Path, tmp_path: Path) -> None:
    root = data / "kermany-pneumonia-224"
    paths = sorted((root / "test" / "PNEUMONIA").glob("*.jpeg"))[:4] + sorted((root / "test" / "NORMAL").glob("*.jpeg"))[:4]
    out = tmp_path / "keras.npy"
    env = {**os.environ, "KERAS_BACKEND": "torch", "KERAS_HOME": str(tmp_path / "keras-home")}
    res = subprocess.run([sys.executable, "-c", KERAS_SIDE, str(KERAS_FILE), str(out), *map(str, paths)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ref = np.load(out)
    ours = _pooled(encoder, [Image.open(p) for p in paths])
    assert ref.shape == ours.shape == (8, 2048)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_onnx_runtime_equals_torch_with_tokens(data: Path) -> None:
    pytest.importorskip("onnxruntime")
    root = data / "kermany-pneumonia-224"
    torch_enc, onnx_enc = load_encoder("xception", runtime="torch"), load_encoder("xception", runtime="onnx")
    assert (torch_enc.runtime, onnx_enc.runtime) == ("torch", "onnx")
    batch = torch.stack([torch_enc.prepare(Image.open(root / p)) for p in KERAS_REFERENCE])
    with torch.inference_mode():
        a, b = torch_enc.encode(batch, tokens=True), onnx_enc.encode(batch, tokens=True)
    cos = torch.nn.functional.cosine_similarity(a.embeddings, b.embeddings, dim=1)
    assert float(cos.min()) > 0.99999
    np.testing.assert_allclose(b.tokens.numpy(), a.tokens.numpy(), rtol=1e-3, atol=1e-4)
    # Xception pools its last map by the mean: the tokens average to the global on both runtimes
    np.testing.assert_allclose(b.tokens.mean(dim=1).numpy(), b.embeddings.numpy(), rtol=1e-4, atol=1e-5)
