"""Spec options (issue 23, items 1-2): every option declared, checked once, explained in
docs/encoders.md; `stitch models --check SPEC` says what a spec resolved to, on the real
packaged EfficientNet-Lite0 weights and scikit-learn's sample photo."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from stitchkit.encoders import load_encoder, parse_spec
from stitchkit.encoders.cards import MODELS
from stitchkit.encoders.packaged import lite_weights
from stitchkit.encoders.registry import BACKENDS, backend_options
from stitchkit.encoders.specs import OUTPUT_NEUTRAL
from stitchkit.errors import ModelError
from tests.faults.helpers import run_inprocess

ROOT = Path(__file__).resolve().parents[1]
LITE0 = lite_weights("0")
BARE = f"timm:efficientnet_lite0?weights={LITE0}"  # what docs used to show: no bn_eps, no crop_pct


@pytest.fixture(scope="module")
def one_image(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    src = sorted((data / "kermany-pneumonia-224" / "test" / "NORMAL").iterdir())[0]
    (folder / src.name).write_bytes(src.read_bytes())
    return folder


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("bn_esp=0.001", "unknown option 'bn_esp' (did you mean 'bn_eps'?)"),
        ("img_size=abc", "img_size must be an integer, got 'abc'"),
        ("crop_pct=87.5", "crop_pct must be a number in (0, 1], got '87.5'"),
        ("pooling=mean", "option 'pooling' is not taken by timm (it is a hf option)"),
        ("bn_eps=0.001&bn_eps=0.01", "option 'bn_eps' given twice"),
    ],
)
def test_a_bad_option_is_one_line_exit_2_naming_the_known_ones(one_image: Path, tmp_path: Path,
                                                              option: str, needle: str) -> None:
    out = tmp_path / "m1e.h5"
    res = run_inprocess("embed", one_image, "-m", f"{BARE}&{option}", "-o", out)
    assert res.code == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert needle in lines[0]
    if "twice" not in needle:
        assert "timm takes bn_eps, crop_pct, img_size, interpolation, mean, std, weights" in lines[0]
    assert not out.exists()


def test_every_backend_declares_its_options_and_short_names_are_unchanged() -> None:
    for backend in BACKENDS:
        declared = backend_options(backend)
        assert declared, f"{backend} declares no options"
        names = [o.name for o in declared]
        assert len(names) == len(set(names))
        # The space identity drops exactly these when a weights hash is known.
        assert {o.name for o in declared if not o.space} <= OUTPUT_NEUTRAL, backend
    for name, card in MODELS.items():
        if not card.installed():
            continue
        spec, got = parse_spec(name)
        assert got is card and spec.text == name and spec.backend == card.backend
        assert spec.options == {"weights": str(card.weights()), **dict(card.options)}
    with pytest.raises(ModelError, match=r"unknown model spec 'lite1' \(did you mean"):
        parse_spec("lite1")
    # Every short name's options pass its backend's declaration (the spelled-out form works).
    for card in MODELS.values():
        known = {o.name for o in backend_options(card.backend)}
        assert {k for k, _ in card.options} <= known


def test_every_option_is_in_the_docs_table() -> None:
    """docs/encoders.md has one table row per backend option: `backend` | `option` | ..."""
    text = (ROOT / "docs" / "encoders.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)` \| `([a-z_]+)` \|", text, flags=re.M))
    declared = {(b, o.name) for b in BACKENDS for o in backend_options(b)}
    assert declared == rows, (declared - rows, rows - declared)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """`stitch models --check --json` on the short name and on the bare timm spec, each with a
    cache of its own (a clean check of the same file is remembered, which silences the other's
    warning; see test_a_clean_check_is_remembered_and_silences_the_position_warning)."""
    out = {}
    for key, spec in (("lite0", "lite0"), ("bare", BARE)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STITCHKIT_CACHE", str(tmp_path_factory.mktemp(f"cache-{key}")))
            res = run_inprocess("models", "--check", spec, "--json")
        assert res.code == 0, res.stderr
        out[key] = {"report": json.loads(res.stdout), "stderr": res.stderr}
    return out


def test_check_reports_what_the_short_name_resolved(checked: dict[str, dict]) -> None:
    r = checked["lite0"]["report"]
    assert r["spec"] == "lite0" and r["short_name"] and r["dim"] == 1280 and r["modality"] == "image"
    assert r["weights"] == [str(LITE0)] and len(r["weights_sha256"]) == 64
    match = r["weights_match"]
    assert match["how"] == "position" and match["matched"] == match["model_tensors"] == 296
    assert match["head_loaded"] and "'_conv_stem.weight' -> 'conv_stem.weight'" == match["example"]
    p = r["preprocessing"]
    assert p["resolution"] == [224, 224] and p["crop_pct"] == 1.0 and p["interpolation"] == "bicubic"
    assert p["mean"] == pytest.approx([0.485, 0.456, 0.406]) and p["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert r["batchnorm_eps"] == {"0.001": 49}
    top5 = r["imagenet_top5"]
    assert len(top5) == 5 and top5[0]["label"] == "palace" and top5[0]["class"] == 698
    assert top5[0]["p"] == pytest.approx(0.402, abs=0.01)
    assert r["space"] == {"backend": "timm", "name": "efficientnet_lite0",
                          "options": {"bn_eps": "0.001", "crop_pct": "1"},
                          "weights_sha256": r["weights_sha256"]}
    # The packaged short name's position matching is the tested recipe: no warning for it.
    assert "by position" not in checked["lite0"]["stderr"]


def test_the_bare_spec_differs_and_its_position_matching_is_announced(checked: dict[str, dict]) -> None:
    short, bare = checked["lite0"]["report"], checked["bare"]["report"]
    assert bare["batchnorm_eps"] == {"1e-05": 49} and bare["preprocessing"]["crop_pct"] == 0.875
    assert bare["weights_sha256"] == short["weights_sha256"] and bare["space"] != short["space"]
    assert [t["class"] for t in bare["imagenet_top5"]] != [t["class"] for t in short["imagenet_top5"]]
    assert bare["imagenet_top5"][0]["p"] < short["imagenet_top5"][0]["p"] - 0.05
    warned = [line for line in checked["bare"]["stderr"].splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "matched to the model's by position" in warned[0]
    assert "stitch models --check" in warned[0]


def test_check_text_names_every_setting() -> None:
    res = run_inprocess("models", "--check", "lite0")
    assert res.code == 0, res.stderr
    for needle in ("key matching    by position: 296 of the model's 296 tensors", "resolution      224 x 224 RGB",
                   "crop_pct        1 (whole image, no crop)", "interpolation   bicubic",
                   "mean / std      0.485 0.456 0.406 / 0.229 0.224 0.225",
                   "BatchNorm eps   0.001 (49 layers)", "palace (698)"):
        assert needle in res.stdout, res.stdout


def test_keys_matched_by_name_and_a_checkpoint_without_its_head(tmp_path: Path) -> None:
    """timm's own key names load by name, silently; a file without the classifier (a backbone
    checkpoint) loads too, with no ImageNet top-5."""
    import timm

    from stitchkit.encoders.check import imagenet_top5

    model = timm.create_model("efficientnet_lite0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stitchkit.encoders.weights import load_into

        load_into(model, LITE0, "lite0")
    full, headless = tmp_path / "named.pth", tmp_path / "backbone.pth"
    state = model.state_dict()
    torch.save(state, full)
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, headless)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching by name says nothing
        named = load_encoder(f"timm:efficientnet_lite0?weights={full}&bn_eps=0.001&crop_pct=1.0", runtime="torch")
    assert named.weights_match["how"] == "name" and named.weights_match["head_loaded"]
    assert imagenet_top5(named)[0]["label"] == "palace"
    backbone = load_encoder(f"timm:efficientnet_lite0?weights={headless}", runtime="torch")
    assert backbone.weights_match == {"how": "name", "matched": 294, "model_tensors": 296,
                                      "file_tensors": 294, "head_loaded": False}
    assert imagenet_top5(backbone) is None
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():  # same backbone weights: same features (up to bn_eps)
        assert backbone.encode(x).embeddings.shape == (2, 1280)


def test_position_matching_warns_when_loading_a_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STITCHKIT_CACHE", str(tmp_path))  # no check of the file on record
    with pytest.warns(UserWarning, match=r"296 tensors of .* matched to the model's by position"):
        load_encoder(f"{BARE}&bn_eps=0.001&crop_pct=1.0", runtime="torch")


def _position_warnings(spec: str) -> list[str]:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        load_encoder(spec, runtime="torch")
    return [str(w.message) for w in got if "by position" in str(w.message)]


def test_a_clean_check_is_remembered_and_silences_the_position_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check whose photo comes out a palace is kept in the cache (architecture + weights hash):
    loading that file again (embed) stops warning, whatever the spec's other options; a check
    that shows the order wrong (two same-shape tensors swapped) is not kept and the warning stays."""
    from stitchkit.encoders.check import check_spec
    from stitchkit.encoders.weights import read_state_dict

    monkeypatch.setenv("STITCHKIT_CACHE", str(tmp_path / "cache"))
    state = read_state_dict(LITE0)
    a, b = "_blocks.2._expand_conv.weight", "_blocks.3._expand_conv.weight"
    state[a], state[b] = state[b], state[a]
    swapped = tmp_path / "swapped.pth"
    torch.save(state, swapped)
    bad = check_spec(f"timm:efficientnet_lite0?weights={swapped}")["order_check"]
    assert not bad["verified"] and bad["record"] is None and "not palace" in bad["note"]
    assert len(_position_warnings(f"timm:efficientnet_lite0?weights={swapped}")) == 1

    good = check_spec(BARE)["order_check"]
    assert good["verified"] and Path(good["record"]).is_file()
    assert _position_warnings(f"{BARE}&bn_eps=0.001&crop_pct=1.0") == []
    assert len(_position_warnings(f"timm:efficientnet_lite0?weights={swapped}")) == 1
    res = run_inprocess("models", "--check", BARE)
    assert res.code == 0 and "warning" not in res.stderr
    assert "tensor order    verified (palace first); remembered in" in res.stdout
