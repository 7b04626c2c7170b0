#!/usr/bin/env bash
# Token head vs global head vs cosine on routes (a) native Lite2, (b) Lite0 stitched into Lite2
# and (e) zero-shot (covid-notes image–note pairs only). Re-running skips finished steps.
# Usage: examples/token-head/run.sh [WORKDIR]   (default /tmp/token-head); results.json here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=${1:-/tmp/token-head}
S=${STITCH:-stitch}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$W/results"
run() { local out=$1; shift; [ -e "$out" ] || { echo "+ stitch $*" >&2; "$S" "$@"; }; }
json() { local out=$1; shift; [ -e "$out" ] || { echo "+ stitch $*" >&2; "$S" "$@" --json > "$out.tmp" && mv "$out.tmp" "$out"; }; }
python "$HERE/manifests.py" "$W"
# 1. embeddings with tokens (last feature map: 7x7 Lite0, 9x9 Lite2; float16 on disk)
embed_all() {  # a complete store (no .parts folder) is skipped; an interrupted one resumes
  for set in k-test covid k-train1500; do
    [ -e "$W/$set-$1-tok.h5" ] && [ ! -e "$W/$set-$1-tok.h5.parts" ] && continue
    echo "+ stitch embed $W/$set.csv -m $1 --tokens" >&2
    "$S" embed "$W/$set.csv" -m "$1" --tokens --workers 0 -o "$W/$set-$1-tok.h5" > /dev/null
  done
}
embed_all lite2
# 2. text sides: label-derived captions for Kermany (not zero-shot), standardised covid notes
run "$W/k-captions-minilm-tok.h5" head captions "$W/k-train1500-lite2-tok.h5" --from-labels pneumonia \
    -t minilm --tokens -o "$W/k-captions-minilm-tok.h5"
run "$W/covid-notes-minilm-tok.h5" head captions "$W/covid-lite2-tok.h5" --from-texts -t minilm \
    --tokens -o "$W/covid-notes-minilm-tok.h5"
# 3. heads, same pairs, same seed: token head and global head
# Heads: every training setting pinned to what the figures in docs/head.md were measured with,
# the head before commit cfd1632 changed the defaults ("v1": no cosine residual, PyTorch's init,
# no dropout, no floor on the steps, validation after every epoch with early stopping);
# tests/test_docs_consistency.py fails if a head-training call here drops one of these pins.
V1="--width 64 --layers 1 --heads 4 --dropout 0 --no-residual --init torch --lr 0.001 --weight-decay 0.01 --warmup 0.05 --min-steps 0"
E=${EPOCHS:-10}
HK="$V1 --batch-size 64 --epochs $E --candidates $E --patience 3 --val-fraction 0.1 --seed 0 --threads ${THREADS:-1}"
HC="$V1 --batch-size 32 --epochs 60 --candidates 60 --patience 10 --val-fraction 0.1 --seed 0 --threads ${THREADS:-1}"
json "$W/results/head-k-token.json" head train "$W/k-train1500-lite2-tok.h5" "$W/k-captions-minilm-tok.h5" $HK -o "$W/k-token.head"
json "$W/results/head-k-global.json" head train "$W/k-train1500-lite2-tok.h5" "$W/k-captions-minilm-tok.h5" $HK \
    --no-image-tokens --no-text-tokens -o "$W/k-global.head"
json "$W/results/head-covid-token.json" head train "$W/covid-lite2-tok.h5" "$W/covid-notes-minilm-tok.h5" $HC -o "$W/covid-token.head"
json "$W/results/head-covid-global.json" head train "$W/covid-lite2-tok.h5" "$W/covid-notes-minilm-tok.h5" $HC \
    --no-image-tokens --no-text-tokens -o "$W/covid-global.head"
for seed in 1 2; do  # seeds of the (e) token and global heads
  json "$W/results/head-covid-token-s$seed.json" head train "$W/covid-lite2-tok.h5" "$W/covid-notes-minilm-tok.h5" \
      ${HC/--seed 0/--seed $seed} -o "$W/covid-token-s$seed.head"
  json "$W/results/head-covid-global-s$seed.json" head train "$W/covid-lite2-tok.h5" "$W/covid-notes-minilm-tok.h5" \
      ${HC/--seed 0/--seed $seed} --no-image-tokens --no-text-tokens -o "$W/covid-global-s$seed.head"
done
embed_all lite0
# (e) levers: raw notes instead of standardised sentences; no validation split (19 pairs
# early-stop the head at epoch 2), 30 epochs instead
run "$W/covid-raw-minilm-tok.h5" head captions "$W/covid-lite2-tok.h5" --from-texts --raw -t minilm \
    --tokens -o "$W/covid-raw-minilm-tok.h5"
V="$V1 --batch-size 32 --epochs 30 --candidates 30 --patience 5 --val-fraction 0 --seed 0 --threads ${THREADS:-1}"
json "$W/results/head-covid-token-noval.json" head train "$W/covid-lite2-tok.h5" "$W/covid-notes-minilm-tok.h5" $V \
    -o "$W/covid-token-noval.head"
for h in token global; do  # raw notes, the same schedule as the standardised-notes heads
  json "$W/results/head-covid-raw-$h.json" head train "$W/covid-lite2-tok.h5" "$W/covid-raw-minilm-tok.h5" $HC \
      $([ $h = global ] && echo --no-image-tokens --no-text-tokens) -o "$W/covid-raw-$h.head"
done
for seed in 1 2; do  # seeds of the raw-notes token head
  json "$W/results/head-covid-raw-token-s$seed.json" head train "$W/covid-lite2-tok.h5" "$W/covid-raw-minilm-tok.h5" \
      ${HC/--seed 0/--seed $seed} -o "$W/covid-raw-token-s$seed.head"
done
json "$W/results/head-covid-raw-token-noval.json" head train "$W/covid-lite2-tok.h5" "$W/covid-raw-minilm-tok.h5" $V \
    -o "$W/covid-raw-token-noval.head"
# 4. maps: Lite0 -> Lite2 on the 1,500 train images (pooled, no labels); image -> text for cosine
run "$W/lite0-to-lite2.map" fit "$W/k-train1500-lite0-tok.h5" "$W/k-train1500-lite2-tok.h5" --method ridge -o "$W/lite0-to-lite2.map"
for m in lite2 lite0; do
  run "$W/k-$m-to-minilm.map" fit "$W/k-train1500-$m-tok.h5" "$W/k-captions-minilm-tok.h5" --method ridge -o "$W/k-$m-to-minilm.map"
  run "$W/covid-$m-to-minilm.map" fit "$W/covid-$m-tok.h5" "$W/covid-notes-minilm-tok.h5" --method ridge -o "$W/covid-$m-to-minilm.map"
done
# Lite0 -> Lite2 maps fitted on spatially matched tokens (`stitch fit --tokens`: Lite0's 7x7
# upsampled onto Lite2's 9x9, alpha by GCV), alone and with the pooled pairs (weight 81)
run "$W/lite0-to-lite2.tokens.map" fit "$W/k-train1500-lite0-tok.h5" "$W/k-train1500-lite2-tok.h5" --tokens \
    -o "$W/lite0-to-lite2.tokens.map"
run "$W/lite0-to-lite2.tokens-pooled.map" fit "$W/k-train1500-lite0-tok.h5" "$W/k-train1500-lite2-tok.h5" \
    --tokens --pooled-weight 81 -o "$W/lite0-to-lite2.tokens-pooled.map"
run "$W/k-test-lite0-in-lite2-tok.h5" apply "$W/lite0-to-lite2.map" "$W/k-test-lite0-tok.h5" -o "$W/k-test-lite0-in-lite2-tok.h5"
# 5. classify Kermany test (624): every route writes its scores (probabilities + log-odds)
C="--text-model minilm --bootstrap 1000"
IU="$W/pneumonia-iu.yaml"  # prompts from real IU report sentences grouped by MeSH terms
python "$HERE/iu_prompts.py" "$IU" 20
mkdir -p "$W/scores"
N=0
cls() {  # KEY PROMPTS QUERY ARGS...; up to JOBS at once (each is mostly one process's set-up)
  local key=$1 prompts=$2; shift 2
  json "$W/results/classify-$key.json" classify "$@" --prompts "$prompts" $C -o "$W/scores/$key.csv" &
  N=$((N + 1)); if [ $((N % ${JOBS:-3})) -eq 0 ]; then wait; fi
}
P=pneumonia
L02="--map $W/lite0-to-lite2.map"
Q2="$W/k-test-lite2-tok.h5"; Q0="$W/k-test-lite0-tok.h5"
# (a) native Lite2, (b) Lite0 stitched into Lite2: heads trained on label-derived captions
cls a-token  $P "$Q2" --head "$W/k-token.head"
cls a-global $P "$Q2" --head "$W/k-global.head"
cls a-cosine $P "$Q2" --map "$W/k-lite2-to-minilm.map" --scoring cosine
cls b-token  $P "$Q0" $L02 --head "$W/k-token.head"
cls b-token-applied $P "$W/k-test-lite0-in-lite2-tok.h5" --head "$W/k-token.head"
cls b-global $P "$Q0" $L02 --head "$W/k-global.head"
cls b-cosine $P "$Q0" --map "$W/k-lite0-to-minilm.map" --scoring cosine
for h in token global; do
  cls b-$h-tokmap $P "$Q0" --map "$W/lite0-to-lite2.tokens.map" --head "$W/k-$h.head"
  cls b-$h-tokpoolmap $P "$Q0" --map "$W/lite0-to-lite2.tokens-pooled.map" --head "$W/k-$h.head"
done
cls e-token-stitched-tokmap $P "$Q0" --map "$W/lite0-to-lite2.tokens.map" --head "$W/covid-token.head"
# (e) zero-shot: heads and maps from the covid-notes image-note pairs only
for h in token global; do
  cls e-$h $P "$Q2" --head "$W/covid-$h.head"
  cls e-$h-stitched $P "$Q0" $L02 --head "$W/covid-$h.head"
done
cls e-cosine $P "$Q2" --map "$W/covid-lite2-to-minilm.map" --scoring cosine
cls e-cosine-stitched $P "$Q0" --map "$W/covid-lite0-to-minilm.map" --scoring cosine
# (e) levers (a few: each classification costs minutes on the shared 2 cores)
cls e-token-noval $P "$Q2" --head "$W/covid-token-noval.head"
cls e-token-noval-iu "$IU" "$Q2" --head "$W/covid-token-noval.head"
cls e-raw-token-noval $P "$Q2" --head "$W/covid-raw-token-noval.head"
cls e-cosine-iu "$IU" "$Q2" --map "$W/covid-lite2-to-minilm.map" --scoring cosine
for prior in em mixture; do
  cls e-token-$prior $P "$Q2" --head "$W/covid-token.head" --prior $prior
  cls e-cosine-$prior $P "$Q2" --map "$W/covid-lite2-to-minilm.map" --scoring cosine --prior $prior
done
cls e-raw-token-noval-mixture $P "$Q2" --head "$W/covid-raw-token-noval.head" --prior mixture
for h in token global; do
  cls e-raw-$h $P "$Q2" --head "$W/covid-raw-$h.head"
  cls e-raw-$h-mixture $P "$Q2" --head "$W/covid-raw-$h.head" --prior mixture
  cls e-raw-$h-stitched-mixture $P "$Q0" $L02 --head "$W/covid-raw-$h.head" --prior mixture
done
cls e-raw-token-stitched-tokmap-mixture $P "$Q0" --map "$W/lite0-to-lite2.tokens.map" --head "$W/covid-raw-token.head" --prior mixture
for seed in 1 2; do
  cls e-token-s$seed $P "$Q2" --head "$W/covid-token-s$seed.head"
  cls e-global-s$seed $P "$Q2" --head "$W/covid-global-s$seed.head"
  cls e-raw-token-s$seed-mixture $P "$Q2" --head "$W/covid-raw-token-s$seed.head" --prior mixture
done
cls e-token-stitched-mixture $P "$Q0" $L02 --head "$W/covid-token.head" --prior mixture
cls e-cosine-stitched-mixture $P "$Q0" --map "$W/covid-lite0-to-minilm.map" --scoring cosine --prior mixture
wait
# the stitched token head's levers, route (b) (grids, alpha, pooled pairs, training levers)
"$HERE/levers.sh" "$W"
python "$HERE/summarise.py" "$W" "$HERE/results.json"
