#!/usr/bin/env bash
# A "new" backbone given as timm architecture + local weights file, stitched into Lite2.
# Environment: LIMIT (images per class, default 100), OUT (default byo-out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${STITCHKIT_DATA:-$here/../../../shared/data}
out=${OUT:-byo-out} limit=${LIMIT:-100}
mkdir -p "$out"
weights=$(python -c "from stitchkit.encoders.packaged import lite_weights; print(lite_weights('0'))")
python - "$data/kermany-pneumonia-224" "$out/k.csv" "$limit" <<'PY'
import csv, sys
root, dest, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen, keep = {}, []
for r in csv.DictReader(open(f"{root}/labels.csv")):
    key = (r["split"], r["label"])
    if seen.get(key, 0) < limit:
        seen[key] = seen.get(key, 0) + 1
        keep.append({"id": r["path"], "path": f"{root}/{r['path']}", "label": r["label"]})
w = csv.DictWriter(open(dest, "w", newline=""), fieldnames=["id", "path", "label"]); w.writeheader(); w.writerows(keep)
PY
stitch embed "$out/k.csv" -m "timm:efficientnet_lite0?weights=$weights&bn_eps=0.001&crop_pct=1.0" -o "$out/mine.h5"
stitch embed "$out/k.csv" -m lite0 -o "$out/lite0.h5"
stitch embed "$out/k.csv" -m lite2 -o "$out/lite2.h5"
stitch info "$out/mine.h5"
# The spec above is the short name's recipe spelled out: both stores must hold the same vectors.
python - "$out/mine.h5" "$out/lite0.h5" <<'PY'
import sys
import numpy as np
from stitchkit.store import EmbeddingStore
with EmbeddingStore(sys.argv[1]) as a, EmbeddingStore(sys.argv[2]) as b:
    n = len(b)
    diff = np.abs(a.read(a.index_of(list(b.ids))) - b.read(np.arange(n))).max()
print(f"timm spec vs lite0 short name: max |difference| {diff:.2e} over {n} images")
PY
stitch fit "$out/mine.h5" "$out/lite2.h5" --method ridge -o "$out/mine-to-lite2.map"
