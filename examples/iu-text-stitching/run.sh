#!/usr/bin/env bash
# MiniLM -> mpnet on IU reports: retrieval through the map and MeSH finding classification.
# Environment: LIMIT (reports, default all), SOURCE (minilm), TARGET (mpnet), OUT (iu-out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${STITCHKIT_DATA:-$here/../../../shared/data}
out=${OUT:-iu-out} limit=${LIMIT:-0} source=${SOURCE:-minilm} target=${TARGET:-mpnet}
mkdir -p "$out"
python - "$data/iu-xray-reports/NLMCXR_reports.tgz" "$out/reports.jsonl" "$limit" <<'PY'
import sys
from stitchkit.datasets import iu_reports, write_jsonl
rows = iu_reports(sys.argv[1])
limit = int(sys.argv[3])
# One finding label per report for the probe: normal, or the first of a few frequent findings.
findings = ["Cardiomegaly", "Opacity", "Pulmonary Atelectasis", "Calcified Granuloma"]
for r in rows:
    terms = r["label"].split("|")
    r["label"] = "normal" if terms == ["normal"] else next((f for f in findings if f in terms), "other")
write_jsonl(rows[:limit] if limit else rows, sys.argv[2])
PY
stitch embed "$out/reports.jsonl" -m "$source" -o "$out/source.h5"
stitch embed "$out/reports.jsonl" -m "$target" -o "$out/target.h5"
# Held-out retrieval (top-1 / top-5 / MRR) and the MeSH-label probe are part of fit's report.
stitch fit "$out/source.h5" "$out/target.h5" --method ridge --holdout 0.25 -o "$out/map" --json > "$out/fit.json"
stitch sweep "$out/source.h5" "$out/target.h5" --methods orthogonal,affine,ridge --seeds 0,1 \
    --n-anchors "${COUNTS:-250,500,1000,2000}" -o "$out/sweep.csv" --plot "$out/sweep.png"
python - "$out/fit.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print({k: m[k] for k in ("top1", "top5", "mrr", "cosine_mean") if k in m})
PY
