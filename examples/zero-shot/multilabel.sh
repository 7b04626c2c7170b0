#!/usr/bin/env bash
# Multi-label findings in CARZero's form, on the 40 % of NIH patients `stitch demo` holds out:
# per-finding AUC (findings with >= 10 positives) and macro AUC with its 95 % interval, over all
# test images (nih-findings) and within the pneumonia images (nih-cofindings), plus pneumonia
# against no finding (nih-pneumonia). Routes: the demo's (e) heads and cosine maps,
# (i) covid notes only (no NIH label: zero-shot transfer) and (ii) covid notes + NIH findings
# sentences of the training patients (in-domain, label-derived); each scored with a finding's
# positive prompt minus its negative ("contrast") and with the positive prompt alone.
# Writes WORKDIR/<rule>-<route>/{table.md,benchmark.json} and prints one line per run.
# Usage: examples/zero-shot/multilabel.sh [DEMO_OUT] [WORKDIR]   (defaults demo-out, /tmp/multilabel)
set -euo pipefail
demo=${1:-demo-out} work=${2:-/tmp/multilabel} st=${STITCH:-stitch}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$work"
for rule in contrast positive; do
  for pairs in covid mixed; do
    for route in token global cosine; do
      case $route in
        cosine) how=(--map "$demo/$pairs-lite2-to-minilm.map" --scoring cosine -t minilm) ;;
        *) how=(--head "$demo/head-$pairs-$route.head") ;;
      esac
      out="$work/$rule-$pairs-$route"
      [ -e "$out/benchmark.json" ] || "$st" benchmark "$demo/demo-suite.yaml" --store "nih=$demo/nih-lite2.h5" \
          --dataset nih-pneumonia --dataset nih-findings --dataset nih-cofindings "${how[@]}" \
          --multilabel-score "$rule" -o "$out" > /dev/null 2>&1
      python - "$out/benchmark.json" "$rule $pairs $route" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cells = []
for x in d["datasets"]:
    m = x["metrics"]
    lo, hi = (m.get("ci") or {}).get("auc_macro") or [float("nan")] * 2
    cells.append(f"{x['name']} {m['auc_macro']:.3f} [{lo:.3f}, {hi:.3f}]")
print(sys.argv[2] + ": " + "; ".join(cells))
PY
    done
  done
done
