"""``hf:`` image encoders and dual-encoder towers (issue 15), offline.

No vision checkpoint can be downloaded here, so each family is built from its real config
class with random weights, saved with ``save_pretrained`` next to its real image-processor
class, and loaded back through the spec a user types. Real chest X-rays (grey NIH PNGs and
RGB Kermany JPEGs) go through it; every pooling choice is checked against a computation by
hand from the model's own outputs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stitchkit.embed import ProgressSink, embed_store
from stitchkit.encoders import load_encoder
from stitchkit.errors import ModelError
from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)

VIT = dict(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64)
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _build(family: str, root: Path) -> tuple[Path, str]:
    """Save a tiny random model of ``family`` with its own processor; return (dir, spec suffix)."""
    import transformers as T

    _quiet()
    torch.manual_seed(0)
    path = root / family
    suffix = ""
    if family == "vit":
        model = T.ViTModel(T.ViTConfig(**VIT))
        proc = T.ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=MEAN, image_std=STD)
    elif family == "dinov2-registers":  # RAD-DINO's processor layout: resize the short side, crop
        model = T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**{**VIT, "patch_size": 8},
                                                                     num_register_tokens=4))
        proc = T.BitImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64},
                                   do_center_crop=True, image_mean=MEAN, image_std=STD,
                                   do_convert_rgb=True)
    elif family == "dinov3":  # class + 4 registers before the patches, rotary positions
        model = T.DINOv3ViTModel(T.DINOv3ViTConfig(**VIT, num_register_tokens=4))
        proc = T.DINOv3ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=MEAN, image_std=STD)
    elif family == "siglip-vision":
        model = T.SiglipVisionModel(T.SiglipVisionConfig(**VIT))
        proc = T.SiglipImageProcessor(size={"height": 64, "width": 64})
    elif family == "clip":  # a whole dual encoder: the spec picks its image tower
        config = T.CLIPConfig(vision_config=VIT, text_config={**TEXT, "vocab_size": 30522, "eos_token_id": 102},
                              projection_dim=16)
        model = T.CLIPModel(config)
        proc = T.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
        suffix = "?tower=image"
    elif family == "swin":  # hierarchical: no class token, 8x8 tokens after one patch merge
        model = T.SwinModel(T.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1],
                                         num_heads=[1, 2], window_size=4))
        proc = T.ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=MEAN, image_std=STD)
    elif family == "convnext":
        model = T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64))
        proc = T.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0)
    else:
        raise AssertionError(family)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path, suffix


FAMILIES = {  # family: (default pooling, all poolings it has, prefix tokens, patch tokens)
    "vit": ("pooler", ("cls", "mean", "pooler"), 1, 16),
    "dinov2-registers": ("pooler", ("cls", "mean", "pooler"), 5, 64),
    "dinov3": ("pooler", ("cls", "mean", "pooler"), 5, 16),
    "siglip-vision": ("pooler", ("mean", "pooler"), 0, 16),
    "clip": ("pooler", ("cls", "mean", "pooler", "proj"), 1, 16),
    "swin": ("pooler", ("mean", "pooler"), 0, 64),
    "convnext": ("pooler", ("mean", "pooler"), 0, 4),
}


@pytest.fixture(scope="module")
def images(data: Path) -> list[Path]:
    """Two grey NIH PNGs (adult, 256 px, mode L) and two RGB Kermany JPEGs (paediatric, 224 px)."""
    nih = data / "nih-pneumonia-256"
    with open(nih / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:2]
    kermany = sorted((data / "kermany-pneumonia-224" / "test" / "PNEUMONIA").iterdir())[:2]
    paths = [nih / r["path"] for r in rows] + kermany
    assert [Image.open(p).mode for p in paths] == ["L", "L", "RGB", "RGB"]
    return paths


def _manifest(paths: list[Path], out: Path) -> Path:
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path"])
        writer.writerows([f"img{i:03d}", p] for i, p in enumerate(paths))
    return out


def _by_hand(family: str, path: Path, paths: list[Path]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every pooling and the patch tokens, computed from the model's own outputs."""
    import transformers as T

    _quiet()
    proc = T.AutoImageProcessor.from_pretrained(path)
    x = proc(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    if family == "clip":  # the joint width is in the dual config, not in its vision part
        config = T.AutoConfig.from_pretrained(path)
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        model = T.CLIPVisionModelWithProjection.from_pretrained(path, config=vision).eval()
    else:
        model = T.AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model(pixel_values=x)
    hidden = out.last_hidden_state
    prefix = FAMILIES[family][2]
    if family == "convnext":
        patches = hidden.flatten(2).transpose(1, 2)
    else:
        patches = hidden[:, prefix:]
    got = {"mean": patches.mean(1)}
    if prefix:
        got["cls"] = hidden[:, 0]
    if family == "clip":  # the plain vision tower's pooler: post-layernorm class token
        with torch.inference_mode():
            got["pooler"] = T.CLIPVisionModel.from_pretrained(path).eval()(pixel_values=x).pooler_output
        got["proj"] = out.image_embeds
    else:
        got["pooler"] = out.pooler_output
    return {k: v.detach().numpy() for k, v in got.items()}, patches.detach().numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_pools_as_computed_by_hand(family: str, tmp_path: Path, images: list[Path]) -> None:
    path, suffix = _build(family, tmp_path)
    default, poolings, prefix, n_patches = FAMILIES[family]
    expected, patches = _by_hand(family, path, images)
    assert patches.shape[1] == n_patches  # class and register tokens are not patches

    out = tmp_path / "s.h5"
    encoder = load_encoder(f"hf:{path}{suffix}")
    assert encoder.modality == "image" and encoder.pooling == default
    embed_store(read_inputs(_manifest(images, tmp_path / "m.csv")), encoder, out, tokens=True,
                workers=0, batch_size=3)
    with EmbeddingStore(out) as store:
        assert len(store) == 4 and store.dim == expected[default].shape[1]
        np.testing.assert_allclose(store.read(), expected[default], atol=1e-4)
        toks, mask = store.read_tokens(np.arange(4))
        assert toks.shape == patches.shape and mask.all()
        np.testing.assert_allclose(toks, patches, atol=2e-2, rtol=2e-2)  # tokens are stored as float16
        pre = json.loads(store.attrs["preprocessing"])
    proc = json.loads(json.dumps(encoder.processor.to_dict(), default=str))
    for key in ("image_mean", "image_std", "size", "resample", "do_resize"):
        assert pre[key] == proc[key], key
    assert pre["prefix_tokens"] == prefix and pre["mode"] == "RGB" and pre["pooling"] == default

    for pooling in poolings:
        enc = load_encoder(f"hf:{path}{suffix}{'&' if suffix else '?'}pooling={pooling}")
        batch = enc.collate([enc.prepare(Image.open(p)) for p in images])
        with torch.inference_mode():
            got = enc.encode(batch).embeddings.numpy()
        np.testing.assert_allclose(got, expected[pooling], atol=1e-4, err_msg=pooling)
    for pooling in set(("cls", "proj")) - set(poolings):
        with pytest.raises(ModelError, match=f"pooling={pooling} impossible"):
            load_encoder(f"hf:{path}{suffix}{'&' if suffix else '?'}pooling={pooling}")


def test_grey_xrays_become_what_the_processor_expects(tmp_path: Path, images: list[Path]) -> None:
    from stitchkit.encoders.hf_vision_backend import to_mode

    path, _ = _build("vit", tmp_path)
    encoder = load_encoder(f"hf:{path}")
    grey = Image.open(images[0])
    x = encoder.prepare(grey)
    assert x.shape == (3, 64, 64)
    from stitchkit.engines.ray_engine import _prepare_only  # what Ray's decode tasks receive

    torch.testing.assert_close(_prepare_only(encoder).prepare(grey), x)
    pixels = x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    torch.testing.assert_close(pixels[0], pixels[1])  # grey copied to R, G and B, then normalised
    torch.testing.assert_close(pixels[1], pixels[2])
    assert pixels.std() > 0.05
    # A 12-bit radiograph in a 16-bit PNG: plain convert() would clip it white; ours keeps it.
    arr = (np.asarray(grey, dtype=np.uint16) * 16).astype(np.uint16)  # 0..4080
    deep = Image.fromarray(arr.astype(np.int32), mode="I")
    back = np.asarray(to_mode(deep, "L"), dtype=np.int32)
    assert np.abs(back - np.asarray(grey, dtype=np.int32)).max() <= 1
    assert (np.asarray(deep.convert("L")) == 255).mean() > 0.5  # what the naive path would do


def _text_tokenizer(path: Path) -> None:
    """A real WordPiece tokenizer (MiniLM's) for the tiny text towers: no CLIP vocabulary here."""
    from transformers import AutoTokenizer

    from stitchkit.encoders.packaged import minilm_dir

    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)


REPORTS = ["Heart size normal. Lungs are clear.", "Right lower lobe consolidation, likely pneumonia."]


def test_dual_encoder_text_towers_load_by_class(tmp_path: Path) -> None:
    import transformers as T

    clip, _ = _build("clip", tmp_path)
    _text_tokenizer(clip)
    siglip = tmp_path / "siglip"
    torch.manual_seed(1)
    T.SiglipModel(T.SiglipConfig(vision_config=VIT, text_config={**TEXT, "vocab_size": 30522})).save_pretrained(siglip)
    _text_tokenizer(siglip)

    tok = T.AutoTokenizer.from_pretrained(clip)
    with torch.inference_mode():
        enc = tok(REPORTS, padding=True, return_tensors="pt")
        text_config = T.AutoConfig.from_pretrained(clip).text_config
        text_config.projection_dim = 16  # the dual config's joint width
        clip_text = T.CLIPTextModelWithProjection.from_pretrained(clip, config=text_config).eval()(**enc)
        clip_plain = T.CLIPTextModel.from_pretrained(clip).eval()(**enc)
        fixed = tok(REPORTS, padding="max_length", max_length=64, return_tensors="pt")
        sig = T.SiglipTextModel.from_pretrained(siglip).eval()(input_ids=fixed["input_ids"])

    cases = [
        (f"hf:{clip}?tower=text", "CLIPTextModel", clip_plain.pooler_output),
        (f"hf:{clip}?tower=text&pooling=proj", "CLIPTextModelWithProjection", clip_text.text_embeds),
        (f"hf:{siglip}?tower=text", "SiglipTextModel", sig.pooler_output),
    ]
    for spec, cls, expected in cases:
        encoder = load_encoder(spec)
        assert encoder.modality == "text" and type(encoder.model).__name__ == cls
        with torch.inference_mode():
            got = encoder.encode(REPORTS, tokens=True)
        np.testing.assert_allclose(got.embeddings.numpy(), expected.numpy(), atol=1e-5, err_msg=spec)
        assert got.tokens.shape[:2] == got.mask.shape and got.mask.sum(1).min() > 3
    assert load_encoder(f"hf:{siglip}?tower=text").preprocessing()["padding"] == "max_length"
    image = load_encoder(f"hf:{clip}?tower=image&pooling=proj")
    assert image.dim == 16 == load_encoder(f"hf:{clip}?tower=text&pooling=proj").dim  # one joint space


def test_resume_after_a_crash_and_shards_equal_one_run(tmp_path: Path, data: Path, stitch) -> None:
    path, _ = _build("dinov2-registers", tmp_path)
    files = sorted((data / "kermany-pneumonia-224" / "test" / "NORMAL").iterdir())[:12]
    manifest = _manifest(files, tmp_path / "m.csv")
    spec = f"hf:{path}"

    class Crash(ProgressSink):
        def __init__(self) -> None:
            self.batches = 0

        def advance(self, n: int) -> None:
            self.batches += 1
            if self.batches == 2:
                raise KeyboardInterrupt  # what Ctrl-C does mid-run

    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        embed_store(read_inputs(manifest), load_encoder(spec), out, batch_size=4, workers=0, progress=Crash())
    assert not out.exists()
    res = embed_store(read_inputs(manifest), load_encoder(spec), out, batch_size=4, workers=0)
    assert res.batches_resumed == 2 and res.samples == 12

    shards = []
    for i in range(3):
        shard = tmp_path / f"s{i}.h5"
        r = stitch("embed", manifest, "-m", spec, "-o", shard, "--shard", f"{i}/3", "--batch-size", "4")
        assert r.returncode == 0, r.stderr
        shards.append(shard)
    merged, whole = tmp_path / "merged.h5", tmp_path / "whole.h5"
    assert stitch("merge", *shards, "-o", merged).returncode == 0
    r = stitch("embed", manifest, "-m", spec, "-o", whole, "--batch-size", "4", "--json")
    assert r.returncode == 0, r.stderr
    with EmbeddingStore(merged) as m, EmbeddingStore(whole) as w, EmbeddingStore(out) as o:
        assert w.dim == 32 and len(set(m.ids)) == 12
        np.testing.assert_allclose(m.read(m.index_of(list(w.ids))), w.read(), atol=1e-5)
        np.testing.assert_allclose(o.read(o.index_of(list(w.ids))), w.read(), atol=1e-5)
        assert json.loads(w.attrs["preprocessing"])["crop_size"] == {"height": 64, "width": 64}


def test_hub_names_offline_and_unusable_specs_are_one_line(tmp_path: Path, images: list[Path], stitch) -> None:
    clip, _ = _build("clip", tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    cxr = tmp_path / "cxr-bert"  # a CXR-BERT-style config: its architecture lives in its own .py
    cxr.mkdir()
    (cxr / "config.json").write_text(json.dumps({
        "model_type": "cxr-bert", "architectures": ["CXRBertModel"],
        "auto_map": {"AutoConfig": "configuration_cxrbert.CXRBertConfig",
                     "AutoModel": "modeling_cxrbert.CXRBertModel"}}))
    bare, _ = _build("vit", tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    cases = [
        ("hf:microsoft/rad-dino", "'microsoft/rad-dino' is not a local directory"),
        (f"hf:{clip}", "is a dual encoder (clip): add ?tower=image or ?tower=text"),
        (f"hf:{clip}?tower=image&pooling=max", "pooling 'max' unknown"),
        (f"hf:{tmp_path / 'nowhere'}", "nowhere does not exist"),
        (f"hf:{folder}", "is not a Hugging Face model directory"),
        (f"hf:{bare}", "has no preprocessor_config.json; save the image processor"),
        (f"hf:{cxr}", "ships its own Python code (a custom architecture): add ?trust_remote_code=1"),
    ]
    for spec, needle in cases[:2]:  # through the CLI: exit 2, one line
        res = stitch("embed", folder, "-m", spec, "-o", tmp_path / "o.h5")
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        if "rad-dino" in spec:
            assert "hf download microsoft/rad-dino --local-dir DIR" in res.stderr
    for spec, needle in cases[2:]:  # the same ModelError (exit 2) from the library
        with pytest.raises(ModelError) as info:
            load_encoder(spec)
        assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "o.h5").exists()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    """Vision weights under a text tower's name would load as random weights without a word."""
    import transformers as T

    vit, _ = _build("vit", tmp_path)
    config = json.loads((vit / "config.json").read_text())
    (vit / "config.json").write_text(json.dumps({**config, "model_type": "dinov2",
                                                 "architectures": ["Dinov2Model"]}))
    with pytest.raises(ModelError, match="are not in the checkpoint"):
        load_encoder(f"hf:{vit}")
    assert T.AutoConfig.from_pretrained(vit).model_type == "dinov2"


def test_models_lists_every_backend_with_an_example(stitch) -> None:
    res = stitch("models", "--json")
    assert res.returncode == 0, res.stderr
    backends = {b["backend"]: b for b in json.loads(res.stdout)["backends"]}
    assert {"timm", "hf", "st", "open_clip", "torchvision"} <= set(backends)
    for name in ("timm", "hf", "st", "open_clip", "torchvision"):
        assert backends[name]["example"].startswith(f"{name}:") and backends[name]["description"]
