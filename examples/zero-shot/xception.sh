#!/usr/bin/env bash
# Route (e) through another family: Kermany test embedded by Xception (Keras's ImageNet weights,
# 2,048-d), mapped into Lite2 by a ridge map fitted on every 5th Kermany train image (1,044, as
# unlabelled anchor pairs: the manifest keeps id and path only), then scored by `stitch demo`'s zero-shot global heads
# and cosine maps (covid notes alone, and with NIH's findings). No token head: Xception's store has
# no patch tokens. Prints "route AUC accuracy" (Kermany test, --prior mixture). Needs `make xception`.
# Usage: examples/zero-shot/xception.sh [DEMO_OUT] [WORKDIR]   (defaults demo-out, /tmp/xception)
set -euo pipefail
demo=${1:-demo-out} work=${2:-/tmp/xception} st=${STITCH:-stitch}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$work"
awk -F, 'NR == 1 || NR % 5 == 2 { print $1 "," $2 }' "$demo/manifests/kermany-train.csv" > "$work/k-train-anchors.csv"
[ -e "$work/k-train-xception.h5" ] || "$st" embed "$work/k-train-anchors.csv" -m xception -o "$work/k-train-xception.h5" > /dev/null
[ -e "$work/k-test-xception.h5" ] || "$st" embed "$demo/manifests/kermany-test.csv" -m xception -o "$work/k-test-xception.h5" > /dev/null
[ -e "$work/xception-to-lite2.map" ] || "$st" fit "$work/k-train-xception.h5" "$demo/k-train-lite2.h5" --method ridge \
    -o "$work/xception-to-lite2.map" > /dev/null
[ -e "$work/k-test-xception-in-lite2.h5" ] || "$st" apply "$work/xception-to-lite2.map" "$work/k-test-xception.h5" \
    -o "$work/k-test-xception-in-lite2.h5" > /dev/null
score() {
  local name=$1; shift
  "$st" classify "$@" --prompts pneumonia -t minilm --prior mixture -o "$work/$name.csv" --json 2> /dev/null \
    | python -c "import json, sys
m = json.load(sys.stdin)['metrics']; print('$name', round(m['auc_pneumonia'], 4), round(m['accuracy'], 4))"
}
for pairs in covid mixed; do
  score "xception-$pairs-global-head" "$work/k-test-xception.h5" --map "$work/xception-to-lite2.map" --head "$demo/head-$pairs-global.head"
  score "xception-$pairs-cosine" "$work/k-test-xception-in-lite2.h5" --map "$demo/$pairs-lite2-to-minilm.map" --scoring cosine
done
