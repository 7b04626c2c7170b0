#!/usr/bin/env bash
# Cross-family stitching on Kermany train: Xception -> Lite2 and Lite0 -> Xception, every method,
# anchor counts 50..4000, 3 seeds (held-out = 20 % of the anchors), plus one `stitch fit` per
# pair at 500 ridge anchors. Needs `make xception`.
# Environment: OUT (cross-family-out), LIMIT (train images per label, default all 5,216),
# COUNTS (50,100,250,500,1000,2000,4000), SEEDS (0,1,2), METHODS (ridge,affine,linear,orthogonal),
# N_FIT (anchors of the single `stitch fit`, 500).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${STITCHKIT_DATA:-$here/../../../shared/data}
out=${OUT:-cross-family-out} limit=${LIMIT:-0}
counts=${COUNTS:-50,100,250,500,1000,2000,4000} seeds=${SEEDS:-0,1,2}
methods=${METHODS:-ridge,affine,linear,orthogonal}
mkdir -p "$out"
python - "$data" "$out" "$limit" <<'PY'
import csv, sys
data, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen, rows = {}, []
for r in csv.DictReader(open(f"{data}/kermany-pneumonia-224/labels.csv")):
    if r["split"] == "train" and (not limit or seen.get(r["label"], 0) < limit):
        seen[r["label"]] = seen.get(r["label"], 0) + 1
        rows.append({"id": r["path"], "path": f"{data}/kermany-pneumonia-224/{r['path']}", "label": r["label"]})
w = csv.DictWriter(open(f"{out}/kermany-train.csv", "w", newline=""), fieldnames=list(rows[0]))
w.writeheader(); w.writerows(rows)
PY
for m in xception lite0 lite2; do
    stitch embed "$out/kermany-train.csv" -m "$m" -o "$out/k-train-$m.h5" --device cpu
done
for pair in xception:lite2 lite0:xception; do
    src=${pair%%:*} dst=${pair##*:}
    stitch sweep "$out/k-train-$src.h5" "$out/k-train-$dst.h5" --n-anchors "$counts" \
        --methods "$methods" --seeds "$seeds" -o "$out/sweep-$src-to-$dst.csv" --plot "$out/sweep-$src-to-$dst.png"
    stitch fit "$out/k-train-$src.h5" "$out/k-train-$dst.h5" --method ridge --n-anchors "${N_FIT:-500}" --seed 0 \
        -o "$out/$src-to-$dst.ridge500.map" --json > "$out/fit-$src-to-$dst-ridge500.json"
done
