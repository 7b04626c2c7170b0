"""Spaces identified by what defines them (issue 23, item 3): the weights' bytes and the options
that change the output, not the weights' path, the short name or the order of the options."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from stitchkit.encoders.specs import space_identity
from stitchkit.errors import ProvenanceError
from stitchkit.store import EmbeddingStore, check_same_space

SHA = "3768cde1e3ddebdeb2618c99d73c0231831591964bceaeaf805374eec3e9c507"
OTHER = "f" * 64


def space(spec: str, sha: str | None = SHA, dim: int = 1280) -> dict:
    return {"model_spec": spec, "weights_sha256": sha, "dim": dim}


def same(a: dict, b: dict, **kw) -> None:
    check_same_space(a, b, expected_what="the map's source side", got_what="the store", **kw)


@pytest.mark.parametrize(
    "other",
    [
        "timm:efficientnet_lite0?crop_pct=1.0&weights=/elsewhere/renamed-copy.pth&bn_eps=1e-3",
        "timm:efficientnet_lite0?bn_eps=0.001&crop_pct=1&weights=/models/lite0.safetensors",
        "lite0",
    ],
)
def test_same_weights_and_settings_are_one_space(other: str) -> None:
    same(space("timm:efficientnet_lite0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0"), space(other))
    same(space("lite0"), space(other))


def test_hf_and_st_directories_are_their_weights() -> None:
    same(space("hf:/models/rad-dino?pooling=mean", "ab" * 32), space("hf:/copy/rad-dino-2?pooling=mean", "ab" * 32))
    same(space("minilm", "cd" * 32, 384), space("st:/tmp/all-MiniLM-L6-v2", "cd" * 32, 384))
    with pytest.raises(ProvenanceError, match="option pooling differs: cls vs mean"):
        same(space("hf:/models/rad-dino?pooling=cls", "ab" * 32), space("hf:/models/rad-dino?pooling=mean", "ab" * 32))


@pytest.mark.parametrize(
    ("other", "needle"),
    [
        (space("timm:efficientnet_lite0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0", OTHER),
         "weights_sha256 differs: 3768cde1e3dd… vs ffffffffffff…"),
        (space("timm:efficientnet_lite0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0&img_size=260"),
         "option img_size differs: unset vs 260"),
        (space("timm:efficientnet_lite0?weights=/models/lite0.pth"), "option bn_eps differs: 0.001 vs unset"),
        (space("timm:efficientnet_b0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0"),
         "name differs: efficientnet_lite0 vs efficientnet_b0"),
    ],
)
def test_a_real_mismatch_is_refused_unless_forced(other: dict, needle: str) -> None:
    with pytest.raises(ProvenanceError) as info:
        same(space("lite0"), other)
    assert needle in str(info.value) and "--force" in str(info.value)
    same(space("lite0"), other, force=True)
    with pytest.raises(ProvenanceError, match="widths differ"):
        same(space("lite0"), {**other, "dim": 1000}, force=True)


def test_without_a_hash_the_specs_are_compared_in_any_order() -> None:
    same(space("timm:resnet50?img_size=288&crop_pct=1", None), space("timm:resnet50?crop_pct=1.0&img_size=288", None))
    with pytest.raises(ProvenanceError, match="name differs: resnet50 vs resnet101"):
        same(space("timm:resnet50", None), space("timm:resnet101", None))
    with pytest.raises(ProvenanceError, match="option weights differs"):  # no hash: the path is all there is
        same(space("open_clip:ViT-B-32?weights=laion2b", None), space("open_clip:ViT-B-32?weights=openai", None))
    # Specs that are not specs (old or hand-written stores) are compared as text, as before.
    with pytest.raises(ProvenanceError, match="model_spec differs"):
        same(space("src-model", "aaa"), space("another-model", "aaa"))
    with pytest.warns(UserWarning, match="provenance unknown"):
        same(space("", None), space("lite0"))


def test_identity_is_plain_and_numbers_are_canonical() -> None:
    a = space_identity("timm:x?weights=/a.pth&bn_eps=1e-3&img_size=224&mean=0.5,0.5,0.5", SHA)
    b = space_identity("timm:x?mean=.5,.5,.50&img_size=224.0&bn_eps=0.001&weights=/b.pth", SHA)
    assert a == b == {"backend": "timm", "name": "x", "weights_sha256": SHA,
                      "options": {"bn_eps": "0.001", "img_size": "224", "mean": "0.5,0.5,0.5"}}
    assert space_identity("not a spec", SHA) == {"model_spec": "not a spec", "weights_sha256": SHA}


def test_comparing_spaces_loads_no_torch() -> None:
    code = ("import sys; from stitchkit.store import check_same_space as c;"
            "s = {'model_spec': 'lite0', 'weights_sha256': 'a', 'dim': 2};"
            "c(s, {**s, 'model_spec': 'timm:efficientnet_lite0?crop_pct=1&bn_eps=0.001&weights=/x'},"
            " expected_what='a', got_what='b'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_a_renamed_copy_of_the_weights_embeds_into_the_same_space(tmp_path: Path, data: Path) -> None:
    """Real stores: lite0, and its recipe spelled out over a renamed copy of the weights file
    with the options in another order, are one space; a map fitted on one applies to the other."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.encoders.packaged import lite_weights
    from stitchkit.inputs import read_inputs
    from stitchkit.maps import apply_map, fit_map

    folder = tmp_path / "imgs"
    folder.mkdir()
    for cls in ("NORMAL", "PNEUMONIA"):
        for f in sorted((data / "kermany-pneumonia-224" / "test" / cls).iterdir())[:3]:
            shutil.copy(f, folder / f"{cls}-{f.name}")
    copy = tmp_path / "weights" / "my-lite0.pth"
    copy.parent.mkdir()
    shutil.copy(lite_weights("0"), copy)
    short, spelled = tmp_path / "short.h5", tmp_path / "spelled.h5"
    embed_store(read_inputs(folder), load_encoder("lite0", runtime="torch"), short, workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # position matching is announced; tested elsewhere
        encoder = load_encoder(f"timm:efficientnet_lite0?crop_pct=1&weights={copy}&bn_eps=1e-3", runtime="torch")
    embed_store(read_inputs(folder), encoder, spelled, workers=0)
    with EmbeddingStore(short) as a, EmbeddingStore(spelled) as b:
        assert a.model_spec == "lite0" and b.model_spec.startswith("timm:")
        same(a.space(), b.space())
        np.testing.assert_allclose(a.read(), b.read(b.index_of(list(a.ids))), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 anchors in 1280 dimensions: a map is not the point here
        m = fit_map(short, short, "orthogonal")
    apply_map(m, spelled, tmp_path / "applied.h5")  # no "model_spec differs", no --force needed
