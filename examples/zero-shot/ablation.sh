#!/usr/bin/env bash
# Route (e), the head's training levers one at a time: heads trained on `stitch demo`'s covid-notes
# sentences (185 images, seed 0), scored on Kermany test (624) with --prompts pneumonia and the
# label-free --prior mixture rule. Prints "setting head AUC accuracy" per line.
# Usage: examples/zero-shot/ablation.sh [DEMO_OUT] [WORKDIR]   (defaults demo-out, /tmp/ablation)
set -euo pipefail
demo=${1:-demo-out} work=${2:-/tmp/ablation} st=${STITCH:-stitch}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$work"
settings=(
  "defaults:"
  "no-residual:--no-residual"
  "torch-init-no-dropout:--init torch --dropout 0"
  "before:--no-residual --init torch --dropout 0 --min-steps 0 --epochs 60 --patience 10 --batch-size 32 --candidates 60"
  "start:--min-steps 0 --epochs 1 --lr 1e-12"
)
for spec in "${settings[@]}"; do
  name=${spec%%:*} extra=${spec#*:}
  for kind in token global; do
    only=(); [ "$kind" = global ] && only=(--no-image-tokens --no-text-tokens)
    head="$work/$name-$kind.head"
    [ -e "$head" ] || "$st" head train "$demo/covid-lite2.h5" "$demo/covid-sentences-minilm.h5" -o "$head" \
        --seed 0 --no-plot "${only[@]}" $extra > /dev/null
    "$st" classify "$demo/k-test-lite2.h5" --prompts pneumonia -t minilm --head "$head" --prior mixture \
        -o "$work/$name-$kind.csv" --json 2> /dev/null | python -c "import json, sys
m = json.load(sys.stdin)['metrics']; print('$name $kind', round(m['auc_pneumonia'], 4), round(m['accuracy'], 4))"
  done
done
"$st" classify "$demo/k-test-lite2.h5" --prompts pneumonia -t minilm --map "$demo/covid-lite2-to-minilm.map" \
    --scoring cosine --prior mixture -o "$work/cosine.csv" --json 2> /dev/null | python -c "import json, sys
m = json.load(sys.stdin)['metrics']; print('cosine (stitch fit on the joined notes)', round(m['auc_pneumonia'], 4), round(m['accuracy'], 4))"
