#!/usr/bin/env bash
# Head trained on real image-note pairs, then zero-shot on Kermany test, native and stitched.
# Environment: LIMIT (Kermany images per class, default all), OUT (covid-out), EPOCHS (30).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${STITCHKIT_DATA:-$here/../../../shared/data}
out=${OUT:-covid-out} limit=${LIMIT:-0}
mkdir -p "$out"
python - "$data" "$out" "$limit" <<'PY'
import csv, sys
data, out, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
covid = [{"id": r["path"], "path": f"{data}/covid-notes-384/{r['path']}", "label": r["label"],
          "group": r["patientid"], "text": r["notes"]}
         for r in csv.DictReader(open(f"{data}/covid-notes-384/labels.csv")) if r["notes"].strip()]
seen, kermany = {}, []
for r in csv.DictReader(open(f"{data}/kermany-pneumonia-224/labels.csv")):
    if r["split"] == "test" and (not limit or seen.get(r["label"], 0) < limit):
        seen[r["label"]] = seen.get(r["label"], 0) + 1
        kermany.append({"id": r["path"], "path": f"{data}/kermany-pneumonia-224/{r['path']}", "label": r["label"]})
for name, rows in (("covid", covid), ("kermany-test", kermany)):
    w = csv.DictWriter(open(f"{out}/{name}.csv", "w", newline=""), fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
PY
stitch embed "$out/covid.csv" -m lite2 -o "$out/covid-lite2.h5"
stitch embed "$out/covid.csv" -m lite0 -o "$out/covid-lite0.h5"
stitch embed "$out/kermany-test.csv" -m lite2 -o "$out/k-test-lite2.h5"
stitch embed "$out/kermany-test.csv" -m lite0 -o "$out/k-test-lite0.h5"
stitch head captions "$out/covid-lite2.h5" --from-texts -t minilm -o "$out/notes-minilm.h5"
stitch head train "$out/covid-lite2.h5" "$out/notes-minilm.h5" -o "$out/head.head" --epochs "${EPOCHS:-30}"
# The map is fitted on the covid images themselves (both backbones saw them): no Kermany label.
stitch fit "$out/covid-lite0.h5" "$out/covid-lite2.h5" --method ridge -o "$out/lite0-to-lite2.map"
stitch classify "$out/k-test-lite2.h5" --head "$out/head.head" --prompts pneumonia --text-model minilm -o "$out/native.csv"
stitch classify "$out/k-test-lite0.h5" --map "$out/lite0-to-lite2.map" --head "$out/head.head" \
    --prompts pneumonia --text-model minilm -o "$out/stitched.csv"
