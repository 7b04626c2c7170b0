"""``torchvision:NAME?weights=FILE`` (issue 15), offline: torchvision models with random weights
saved as plain state dicts, embedding real chest X-rays from ../shared/data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stitchkit.embed import embed_store
from stitchkit.encoders import load_encoder
from stitchkit.errors import ModelError
from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)


def _save(name: str, path: Path, seed: int = 0) -> torch.nn.Module:
    import torchvision.models as tvm

    torch.manual_seed(seed)
    model = tvm.get_model(name, weights=None).eval()
    torch.save(model.state_dict(), path)
    return model


@pytest.fixture(scope="module")
def xrays(data: Path) -> list[Path]:
    """Two grey adult NIH PNGs and two RGB paediatric Kermany JPEGs."""
    nih = data / "nih-pneumonia-256"
    with open(nih / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[-2:]
    kermany = sorted((data / "kermany-pneumonia-224" / "test" / "NORMAL").iterdir())[:2]
    return [nih / r["path"] for r in rows] + kermany


def test_resnet18_pooled_and_tokens_match_the_model(tmp_path: Path, xrays: list[Path]) -> None:
    from torchvision.models import ResNet18_Weights

    weights = tmp_path / "my-finetuned-resnet18.pth"
    model = _save("resnet18", weights)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "path"], *[[f"x{i}", p] for i, p in enumerate(xrays)]])
    encoder = load_encoder(f"torchvision:resnet18?weights={weights}")
    out = tmp_path / "r18.h5"
    embed_store(read_inputs(manifest), encoder, out, tokens=True, workers=0, batch_size=3)

    # By hand: torchvision's own preset for these weights, the network up to its classifier.
    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    x = torch.stack([preset(Image.open(p).convert("RGB")) for p in xrays])
    with torch.inference_mode():
        fmap = torch.nn.Sequential(*list(model.children())[:-2])(x)  # layer4: (B, 512, 7, 7)
    pooled = fmap.mean((2, 3)).numpy()
    with EmbeddingStore(out) as store:
        assert store.dim == 512 and len(store) == 4
        np.testing.assert_allclose(store.read(), pooled, atol=2e-3, rtol=1e-3)
        toks, mask = store.read_tokens(np.arange(4))
        assert toks.shape == (4, 49, 512) and mask.all()
        np.testing.assert_allclose(toks, fmap.flatten(2).transpose(1, 2).numpy(), atol=2e-2, rtol=2e-2)
        pre = json.loads(store.attrs["preprocessing"])
    assert pre["mode"] == "RGB" and pre["resize_size"] == [256] and pre["crop_size"] == [224]
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["interpolation"] == "bilinear"
    assert pre["transforms_from"].startswith("ResNet18_Weights.DEFAULT")
    grey = encoder.prepare(Image.open(xrays[0]))
    assert Image.open(xrays[0]).mode == "L" and grey.shape == (3, 224, 224)
    from stitchkit.engines.ray_engine import _prepare_only  # what Ray's decode tasks receive

    torch.testing.assert_close(_prepare_only(encoder).prepare(Image.open(xrays[0])), grey)


def test_transforms_follow_the_weights_enum(tmp_path: Path) -> None:
    """MobileNetV2 has two ImageNet weights resized differently (256 vs 232)."""
    from torchvision.models import MobileNet_V2_Weights

    v2 = MobileNet_V2_Weights.IMAGENET1K_V2
    by_name = tmp_path / Path(v2.url).name  # the file as torchvision's hub names it
    _save("mobilenet_v2", by_name)
    enc = load_encoder(f"torchvision:mobilenet_v2?weights={by_name}")
    assert enc.preprocessing()["resize_size"] == list(v2.transforms().resize_size) == [232]
    assert "IMAGENET1K_V2" in enc.preprocessing()["transforms_from"]
    other = tmp_path / "mine.pth"
    other.write_bytes(by_name.read_bytes())
    explicit = load_encoder(f"torchvision:mobilenet_v2?weights={other}&transforms=IMAGENET1K_V1")
    assert explicit.preprocessing()["resize_size"] == [256] and explicit.dim == 1280
    with pytest.raises(ModelError, match="no weights enum entry 'IMAGENET9K'"):
        load_encoder(f"torchvision:mobilenet_v2?weights={other}&transforms=IMAGENET9K")


def test_vit_tokens_drop_the_class_token(tmp_path: Path, xrays: list[Path]) -> None:
    weights = tmp_path / "vit.pth"
    model = _save("vit_b_32", weights)
    enc = load_encoder(f"torchvision:vit_b_32?weights={weights}")
    x = enc.collate([enc.prepare(Image.open(xrays[0]))])
    with torch.inference_mode():
        got = enc.encode(x, tokens=True)
        seq = model.encoder(torch.cat([model.class_token.expand(1, -1, -1),
                                       model.conv_proj(x).flatten(2).transpose(1, 2)], dim=1))
    assert enc.dim == 768 and got.tokens.shape == (1, 49, 768)
    torch.testing.assert_close(got.tokens, seq[:, 1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.embeddings, seq[:, 0], atol=1e-4, rtol=1e-4)  # class token


def test_fine_tuned_and_wrapped_checkpoints_load(tmp_path: Path, xrays: list[Path]) -> None:
    """A 2-class fine-tune saved from a wrapper (keys ``model.``) and a DDP one (``module.``)."""
    import torchvision.models as tvm

    torch.manual_seed(5)
    net = tvm.resnet18(num_classes=2).eval()
    wrapped, ddp = tmp_path / "lightning.pth", tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, wrapped)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, ddp)
    net.fc = torch.nn.Identity()
    image = Image.open(xrays[2])
    for spec in (f"torchvision:resnet18?weights={wrapped}&prefix=model.", f"torchvision:resnet18?weights={ddp}"):
        enc = load_encoder(spec)
        x = enc.collate([enc.prepare(image)])
        with torch.inference_mode():
            torch.testing.assert_close(enc.encode(x).embeddings, net(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ModelError, match=r"not in the file \(e.g. 'conv1.weight'; the file has e.g. 'model.conv1.weight'\)"):
        load_encoder(f"torchvision:resnet18?weights={wrapped}")
    with pytest.raises(ModelError, match="starting with 'backbone.'"):
        load_encoder(f"torchvision:resnet18?weights={wrapped}&prefix=backbone.")
    grey = tmp_path / "grey.pth"  # a ResNet whose first conv was cut to one channel
    torch.save({**net.state_dict(), "conv1.weight": torch.zeros(64, 1, 7, 7)}, grey)
    with pytest.raises(ModelError, match=r"'conv1.weight' is \(64, 1, 7, 7\) in the file, \(64, 3, 7, 7\)"):
        load_encoder(f"torchvision:resnet18?weights={grey}")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("torchvision:resnet18", "needs a local state dict: add ?weights="),
        ("torchvision:resnet19?weights=x.pth", "torchvision has no model named 'resnet19'"),
        ("torchvision:resnet18?weights=missing.pth", "does not exist"),
    ],
)
def test_bad_specs_are_one_line(tmp_path: Path, xrays: list[Path], stitch, spec: str, needle: str) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / xrays[0].name).write_bytes(xrays[0].read_bytes())
    res = stitch("embed", folder, "-m", spec, "-o", tmp_path / "o.h5", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_cli_embeds_grey_xrays_end_to_end(tmp_path: Path, xrays: list[Path], stitch) -> None:
    weights = tmp_path / "r18.pth"
    model = _save("resnet18", weights, seed=3)
    folder = tmp_path / "nih"
    folder.mkdir()
    for p in xrays[:2]:  # grey PNGs
        (folder / p.name).write_bytes(p.read_bytes())
    res = stitch("embed", folder, "-m", f"torchvision:resnet18?weights={weights}",
                 "-o", tmp_path / "nih.h5", "--json", "--batch-size", "32")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["dim"] == 512 and summary["samples"] == 2 and summary["failed"] == 0
    with EmbeddingStore(tmp_path / "nih.h5") as store:
        X = store.read()
        assert np.isfinite(X).all() and X.std() > 0
        assert len(store.attrs["weights_sha256"]) == 64
        first = store.index_of([store.ids[0]])
    from torchvision.models import ResNet18_Weights

    model.fc = torch.nn.Identity()
    path = folder / store.ids[0]
    with torch.inference_mode():
        ref = model(ResNet18_Weights.IMAGENET1K_V1.transforms()(Image.open(path).convert("RGB"))[None])
    np.testing.assert_allclose(X[first], ref.numpy(), atol=2e-3, rtol=1e-3)
