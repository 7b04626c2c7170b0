"""stitchkit from Python: embed, fit, train a head, classify (run as a script or by cells)."""

# %% Setup: a small balanced Kermany subset, written as a manifest
import csv
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stitchkit.datasets import data_root
from stitchkit.embed import embed_store
from stitchkit.encoders import load_encoder
from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore

limit = int(os.environ.get("LIMIT", 60))
work = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="stitchkit-api-"))
work.mkdir(parents=True, exist_ok=True)
root = data_root() / "kermany-pneumonia-224"
seen, rows = {}, []
for r in csv.DictReader(open(root / "labels.csv")):
    key = (r["split"], r["label"])
    if seen.get(key, 0) < limit:
        seen[key] = seen.get(key, 0) + 1
        rows.append({"id": r["path"], "path": str(root / r["path"]), "label": r["label"]})
manifest = work / "kermany.csv"
with open(manifest, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=["id", "path", "label"])
    writer.writeheader()
    writer.writerows(rows)

# %% Embed with two backbones (resumable; a second run is a no-op)
inputs = read_inputs(manifest)
for model in ("lite0", "lite2"):
    result = embed_store(inputs, load_encoder(model), work / f"{model}.h5")
    print(model, result.samples, "samples", f"{result.seconds:.1f}s")

# %% Fit maps: scikit-learn contract (fit / transform / inverse_transform, state in `_` attributes)
from stitchkit.maps import AnchorPlan, OrthogonalMap, RidgeMap, fit_map

src, tgt = EmbeddingStore(work / "lite0.h5"), EmbeddingStore(work / "lite2.h5")
train = [i for i in src.ids if i.startswith("train/")]
test = [i for i in src.ids if i.startswith("test/")]
X, Y = src.read(src.index_of(train)), tgt.read(tgt.index_of(train))
Xt, Yt = src.read(src.index_of(test)), tgt.read(tgt.index_of(test))

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))

for estimator in (OrthogonalMap(), RidgeMap()):
    estimator.fit(X, Y)
    print(type(estimator).__name__, "held-out cosine", round(cosine(estimator.transform(Xt), Yt), 3))
ortho = OrthogonalMap().fit(X, Y)
print("orthogonal round trip error", float(np.abs(ortho.inverse_transform(ortho.transform(Xt)) - Xt).max()))

# The same from the stores, streaming, with held-out metrics stored in the map:
m = fit_map(work / "lite0.h5", work / "lite2.h5", "ridge", plan=AnchorPlan(anchors=train))
m.save(work / "lite0-to-lite2.map")
print({k: round(v, 3) for k, v in m.metrics_.items() if isinstance(v, float)})

# %% Train a head on label-derived captions (not zero-shot: the captions come from the labels)
from stitchkit.head import TrainConfig, train_head
from stitchkit.zeroshot.captions import CaptionSource, make_captions
from stitchkit.zeroshot.prompts import load_prompts

prompts = load_prompts("pneumonia")
make_captions(work / "lite2.h5", out=work / "captions.h5", text_model="minilm",
              source=CaptionSource(prompts=prompts))
train_ids = work / "train-ids.txt"
train_ids.write_text("\n".join(train) + "\n")
trained = train_head(work / "lite2.h5", work / "captions.h5", out=work / "head.head",
                     config=TrainConfig(epochs=10), ids=train)
print("head:", trained.to_dict().get("best_val_loss"))

# %% Classify the test images through the map and the head
from stitchkit.zeroshot.scoring import classify_store

result = classify_store(work / "lite0.h5", prompts, text_model="minilm", ids=test,
                        map_path=work / "lite0-to-lite2.map", head_path=work / "head.head", bootstrap=200)
print("AUC pneumonia (Lite0 stitched into Lite2 + head):", round(result.metrics["auc"]["pneumonia"], 3))
