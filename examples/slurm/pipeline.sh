#!/usr/bin/env bash
# Shards -> merge -> fit -> classify on Kermany. On a cluster the embed loop is the SLURM array
# in embed_array.sbatch; here the same script runs the shards one by one.
# Environment: LIMIT (images per class, default all), SHARDS (default 4), OUT (default slurm-out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${STITCHKIT_DATA:-$here/../../../shared/data}
out=${OUT:-slurm-out} shards=${SHARDS:-4} limit=${LIMIT:-0}
mkdir -p "$out"

# Manifests for Kermany train (anchors) and test (evaluation), optionally capped per class.
python - "$data/kermany-pneumonia-224" "$out" "$limit" <<'PY'
import csv, sys
root, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.DictReader(open(f"{root}/labels.csv")))
for split in ("train", "test"):
    seen, keep = {}, []
    for r in rows:
        if r["split"] == split and (not limit or seen.get(r["label"], 0) < limit):
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            keep.append({"id": r["path"], "path": f"{root}/{r['path']}", "label": r["label"]})
    with open(f"{out}/{split}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "path", "label"]); w.writeheader(); w.writerows(keep)
PY

for model in lite0 lite2; do
  for ((task = 0; task < shards; task++)); do
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then break; fi   # on a cluster the array did this
    SLURM_ARRAY_TASK_ID=$task SLURM_ARRAY_TASK_COUNT=$shards \
      bash "$here/embed_array.sbatch" "$out/train.csv" "$model" "$out/shards"
  done
  stitch merge "$out"/shards/"$model"-*.h5 -o "$out/train-$model.h5"
done
stitch embed "$out/test.csv" -m lite0 -o "$out/test-lite0.h5"
stitch fit "$out/train-lite0.h5" "$out/train-lite2.h5" --method ridge -o "$out/lite0-to-lite2.map"
stitch head captions "$out/train-lite2.h5" -t minilm --from-labels pneumonia -o "$out/captions.h5"
stitch head train "$out/train-lite2.h5" "$out/captions.h5" -o "$out/head.head" --epochs 10
stitch classify "$out/test-lite0.h5" --map "$out/lite0-to-lite2.map" --head "$out/head.head" \
    --prompts pneumonia --text-model minilm -o "$out/scores.csv"
