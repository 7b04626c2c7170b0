"""Parity of stitchkit's Xception port with Keras's own forward pass, on real Kermany images.

Keras 3 (PyPI, torch backend, no TensorFlow) is used from this interpreter when it has it (the
``dev`` extra pins it), else installed only for this check into a folder of its own
(--keras-dir) that is put on sys.path of a child process; stitchkit never imports it. The child loads the package's ``.keras`` file with ``keras.saving.load_model`` and runs
the model up to its ``global_average_pooling2d`` layer (the pooled 2048-d backbone output;
the dense head after it is never run). Two comparisons:

* same input: the arrays stitchkit's preprocessing made, through both networks;
* end to end: Keras's own preprocessing as the package trained with it
  (``keras.utils.load_img(target_size=(150, 150), interpolation="nearest")`` +
  ``keras.applications.xception.preprocess_input``) against stitchkit's encoder.

    python benchmarks/xception_parity.py --n 64 --out /tmp/xception/parity.json
    python benchmarks/xception_parity.py --smoke   # 2 images (seconds; installs nothing)

It prints a ``result:`` line and exits 1 when the max abs difference exceeds --atol or the lowest
cosine is below 0.99999.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import kermany_rows, parse_args, print_header, print_result

KERAS_PACKAGES = ["keras==3.15.1", "namex", "optree", "absl-py", "ml-dtypes"]


def keras_side(inputs: Path, out: Path) -> None:
    """Runs in the child: Keras's pooled features for the given arrays and image paths."""
    import keras
    from keras.applications.xception import preprocess_input

    data = np.load(inputs)
    model = keras.saving.load_model(str(data["keras_file"]), compile=False)
    pooled = keras.Model(model.inputs, model.get_layer("global_average_pooling2d").output)
    same = keras.ops.convert_to_numpy(pooled(data["x_nhwc"], training=False))
    own_x = np.stack([
        preprocess_input(keras.utils.img_to_array(
            keras.utils.load_img(str(p), target_size=(150, 150), interpolation="nearest")))
        for p in data["paths"]
    ]).astype(np.float32)
    own = keras.ops.convert_to_numpy(pooled(own_x, training=False))
    np.savez(out, same=same, own=own, own_x=own_x, keras_version=keras.__version__,
             backend=keras.backend.backend())


def ensure_keras(target: Path, install: bool = True) -> None:
    if importlib.util.find_spec("keras") is not None or (target / "keras").is_dir():
        return
    if not install:
        raise SystemExit(f"keras is not installed here nor in {target}: run without --smoke to install it there")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), *KERAS_PACKAGES], check=True)


def pick_images(data: str | None, n: int) -> list[Path]:
    """The first n/2 normal and n/2 pneumonia images of Kermany test, in labels.csv order."""
    return [Path(r["file"]) for r in kermany_rows(n, split="test", balanced=True, data=data)]


def diffs(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    return {
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "max_rel_diff": float((np.abs(ours - ref).max(1) / np.abs(ref).max(1)).max()),
        "min_cosine": float(cos.min()),
        "mean_abs_value": float(np.abs(ref).mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images (half normal, half pneumonia)")
    parser.add_argument("--data", default=None, help="folder holding kermany-pneumonia-224/")
    parser.add_argument("--keras-dir", default="/tmp/stitchkit-keras", help="where Keras is installed for this check")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--keras-side", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parse_args(parser, smoke={"n": 2})
    if args.keras_side:
        keras_side(Path(args.keras_side[0]), Path(args.keras_side[1]))
        return 0

    import torch
    from PIL import Image

    from stitchkit.encoders import load_encoder
    from stitchkit.encoders.packaged import xception_weights

    print_header("xception_parity", images=args.n)
    paths = pick_images(args.data, args.n)
    encoder = load_encoder("xception")
    x = torch.stack([encoder.prepare(Image.open(p)) for p in paths])
    with torch.inference_mode():
        ours = np.concatenate([encoder.encode(x[i : i + 16]).embeddings.numpy() for i in range(0, len(x), 16)])

    ensure_keras(Path(args.keras_dir), install=not args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        inp, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, x_nhwc=x.permute(0, 2, 3, 1).numpy(), paths=np.array([str(p) for p in paths]),
                 keras_file=str(xception_weights()))
        env = {**os.environ, "KERAS_BACKEND": "torch",
               "PYTHONPATH": os.pathsep.join([args.keras_dir, os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, __file__, "--keras-side", str(inp), str(res)], check=True, env=env)
        ref = np.load(res)
        report = {
            "images": len(paths),
            "keras": f"{ref['keras_version']} ({ref['backend']} backend)",
            "same_input": diffs(ours, ref["same"]),
            "end_to_end": diffs(ours, ref["own"]),
            "preprocessing_max_abs_diff": float(np.abs(ref["own_x"] - x.permute(0, 2, 3, 1).numpy()).max()),
        }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    worst = max(report["same_input"]["max_abs_diff"], report["end_to_end"]["max_abs_diff"])
    low = min(report["same_input"]["min_cosine"], report["end_to_end"]["min_cosine"])
    ok = worst <= args.atol and low >= 0.99999
    print_result(f"{'parity' if ok else 'NO parity'} with Keras on {len(paths)} images: max abs difference "
                 f"{worst:.2e} (atol {args.atol:g}), least cosine {low:.7f} (at least 0.99999)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
