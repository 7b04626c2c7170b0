#!/usr/bin/env bash
# Patch scoring (`stitch classify --scoring patch`) against cosine scoring through the same map,
# on a finished `stitch demo` folder (docs/head.md, "Patch-level similarity"):
#   (e) covid notes (and + NIH findings) -> Kermany test, Lite2 native and Lite0 stitched (the
#       Lite0 tokens carried into Lite2 by the demo's token map, kept: `stitch apply` without
#       --no-tokens), each as it is and through the Kermany adaptation map, `--prior mixture`;
#       the default pooling and a sweep of the others;
#   NIH held-out patients, multi-label (CARZero's contrast), settings (i) covid notes and
#       (ii) + NIH findings, with the paired difference against the cosine run (`--control`).
# Each line: AUC [95 % CI] / accuracy, and the paired difference against cosine on the same
# images (bootstrap 95 % CI, DeLong's p). Writes WORKDIR/{scores,bench}/.
# Usage: examples/zero-shot/patch.sh [DEMO_OUT] [WORKDIR]   (defaults demo-out, /tmp/patch)
set -euo pipefail
demo=${1:-demo-out} work=${2:-/tmp/patch} st=${STITCH:-stitch} py=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$work/scores" "$work/bench"
lite0="$work/k-test-lite0-in-lite2-tok.h5"
[ -e "$lite0" ] || "$st" apply "$demo/lite0-to-lite2.tokens.map" "$demo/k-test-lite0.h5" -o "$lite0" > /dev/null

line() {  # NAME SCORES CONTROL_SCORES: AUC, accuracy and the paired difference, from the files
  "$py" - "$@" <<'PY'
import json, sys
from stitchkit.zeroshot.compare import paired_comparison
from stitchkit.zeroshot.prompts import load_prompts
name, scores, control = sys.argv[1:4]
m = json.load(open(scores + ".json"))["metrics"]  # the flat record `--json` prints
lo, hi = m["auc_pneumonia_ci_low"], m["auc_pneumonia_ci_high"]
text = f"{name}: AUC {m['auc_pneumonia']:.3f} [{lo:.3f}, {hi:.3f}] / acc {m['accuracy']:.3f}"
if control != scores:
    d = paired_comparison(scores, control, load_prompts("pneumonia"), "pneumonia")
    a, b = d["ci"]["difference"]
    text += f"; vs cosine {d['difference']:+.3f} [{a:+.3f}, {b:+.3f}], p {d['delong']['p_value']:.2g}"
print(text, flush=True)
PY
}

kermany() {  # NAME QUERY COSINE_MAP [ARGS...]: cosine, then patch scoring through the same map
  local name=$1 query=$2 map=$3; shift 3
  local base=(classify "$query" --prompts pneumonia --text-model minilm --map "$map" --prior mixture "$@")
  local cos="$work/scores/$name-cosine.csv"
  [ -e "$cos.json" ] || "$st" "${base[@]}" --scoring cosine -o "$cos" --json > "$cos.json"
  line "$name cosine" "$cos" "$cos"
  local patch="$work/scores/$name-patch.csv"
  [ -e "$patch.json" ] || "$st" "${base[@]}" --scoring patch -o "$patch" --json > "$patch.json"
  line "$name patch (default)" "$patch" "$cos"
}

adapt=(--adapt "$demo/kermany.adapt.map")
for pairs in covid mixed; do
  kermany "e-$pairs-lite2" "$demo/k-test-lite2.h5" "$demo/$pairs-lite2-to-minilm.map"
  kermany "e-$pairs-lite0" "$lite0" "$demo/$pairs-lite2-to-minilm.map"
done
kermany "e-covid-lite2-adapted" "$demo/k-test-lite2.h5" "$demo/covid-lite2-to-minilm.map" "${adapt[@]}"
kermany "e-covid-lite0-adapted" "$lite0" "$demo/covid-lite2-to-minilm.map" "${adapt[@]}"

# The poolings, route (e) covid notes: (pooling, temperature, weight).
for query in lite2 lite0; do
  q=$([ "$query" = lite2 ] && echo "$demo/k-test-lite2.h5" || echo "$lite0")
  for setting in "attention 0.07 1" "attention 0.5 1" "attention 2 1" "attention 1 0.5" "lse 0.07 1" "lse 0.5 1" \
                 "max 1 1" "max 1 0.5" "mean 1 1" "mean 1 0.5"; do
    read -r pooling tau w <<< "$setting"
    out="$work/scores/sweep-$query-$pooling-$tau-$w.csv"
    [ -e "$out.json" ] || "$st" classify "$q" --prompts pneumonia --text-model minilm --prior mixture \
        --map "$demo/covid-lite2-to-minilm.map" --scoring patch --patch-pooling "$pooling" \
        --patch-temperature "$tau" --patch-weight "$w" -o "$out" --json > "$out.json"
    line "e-covid-$query patch $pooling tau $tau weight $w" "$out" "$work/scores/e-covid-$query-cosine.csv"
  done
done

# NIH held-out patients, multi-label: cosine first (the control), then patch scoring.
for pairs in covid mixed; do
  for scoring in cosine patch; do
    out="$work/bench/nih-$pairs-$scoring"
    control=()
    [ "$scoring" = cosine ] || control=(--control "$work/bench/nih-$pairs-cosine")
    [ -e "$out/benchmark.json" ] || "$st" benchmark "$demo/demo-suite.yaml" --store "nih=$demo/nih-lite2.h5" \
        --dataset nih-pneumonia --dataset nih-findings --dataset nih-cofindings \
        --map "$demo/$pairs-lite2-to-minilm.map" -t minilm --scoring "$scoring" "${control[@]}" -o "$out" > /dev/null
    "$py" - "$out/benchmark.json" "nih $pairs $scoring" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cells = []
for x in d["datasets"]:
    m = x["metrics"]
    lo, hi = (m.get("ci") or {}).get("auc_macro") or [float("nan")] * 2
    cell = f"{x['name']} {m['auc_macro']:.3f} [{lo:.3f}, {hi:.3f}]"
    if "delta_auc_macro" in m:
        cell += (f" (vs cosine {m['delta_auc_macro']:+.3f} [{m['delta_auc_macro_ci_low']:+.3f}, "
                 f"{m['delta_auc_macro_ci_high']:+.3f}])")
    cells.append(cell)
print(sys.argv[2] + ": " + "; ".join(cells), flush=True)
PY
  done
done
