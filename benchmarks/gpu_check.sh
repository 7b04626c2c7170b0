#!/usr/bin/env bash
# GPU check of issues 25 and 38, for a session that is lent a GPU (none has been yet: docs/speed.md
# says so). From the repository root on the GPU machine:
#
#   bash benchmarks/gpu_check.sh                   # N=100000 pairs: about 10 minutes on one GPU
#   N=20000 STEPS=30 bash benchmarks/gpu_check.sh  # a shorter run
#   bash benchmarks/gpu_check.sh --smoke           # every step on the CPU at the smallest sizes
#
# --smoke needs no GPU (tests/test_benchmarks_smoke.py runs it): the same commands with the same
# options on the CPU (cpu for cuda, 64 pairs, 1 step, 32 scored rows, 8 images, a ViT-Ti/16 for the
# ViT-B/16, --runtime torch so that the embed runtime check still applies; 2b and 3b, which only
# change 2a's batch size and 3a's model, are left out), with the Python that runs it, no install,
# in a temporary OUT unless OUT is set. It proves that every command and option still exists and
# runs; its figures measure nothing (about 2 minutes on 2 cores at load 4-5).
#
# Needs a Python (PYTHON, default python3) with torch (a CUDA build), h5py, numpy, timm,
# safetensors, click, scikit-learn and Pillow already installed: the project itself is installed
# with `pip install --no-deps -e .` (nothing is downloaded; INSTALL=0 skips it). Writes under OUT
# (default $OUT, else /tmp/gpu-check): gpu_check.log, the synthetic stores (about 24 GB at
# N=100000; STORES to put them elsewhere) and the embed outputs. Each step runs even if an
# earlier one failed; the log ends with the steps that failed, and the exit status is 1 if any did.
#
# 1. --device resolution on this machine (auto is a GPU; cuda:99 is one line, exit 2).
# 2. Head training at N synthetic Lite2-shaped pairs: seconds per step on the GPU against the
#    CPU (benchmarks/head_scale.py prints the ratio), fp32 and bf16, batch 64 and 512; head
#    scoring of 50,000 query rows with tokens, 14 classes, rows/s on both against the head's bare
#    forward; then `stitch head train` (one epoch, bf16) and `stitch classify --head` with that
#    head on its 20,000-row token store, as users type them.
# 3. `stitch embed --device cuda` (--workers WORKERS, default auto as users get it) of Lite0, Lite2 (also
#    with --tokens, and --tokens --token-grid 4x4) and a timm ViT-B/16 with random weights on
#    synthetic JPEGs, images/s against the bare forward pass on tensors already decoded and on
#    the GPU; the store must record the device (runtime JSON) and torch as the runtime.
set -uo pipefail
SMOKE=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--smoke]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if [ "$SMOKE" -eq 1 ]; then
  OUT=${OUT:-$(mktemp -d /tmp/gpu-check-smoke.XXXXXX)}
  DEVICE=cpu; DEVICES=(cpu); N=64; STEPS=1; WARMUP=1; BATCH=32; BIG_BATCH=32; SCORE_ROWS=32; EPOCH_PAIRS=64
  IMAGES=8; VIT=vit_tiny_patch16_224; RUNTIME=torch; INSTALL=${INSTALL:-0}; THREADS=${THREADS:-2}
  BARE=(8 1 1)  # the bare forward: batch, warm-up passes, timed passes
else
  OUT=${OUT:-/tmp/gpu-check}
  DEVICE=cuda; DEVICES=(cpu cuda); N=${N:-100000}; STEPS=${STEPS:-50}; WARMUP=5; BATCH=64; BIG_BATCH=512
  SCORE_ROWS=50000; EPOCH_PAIRS=20000; IMAGES=${IMAGES:-1024}; VIT=vit_base_patch16_224; RUNTIME=auto
  INSTALL=${INSTALL:-1}; THREADS=${THREADS:-$(nproc)}
  BARE=(128 3 10)
fi
WORKERS=${WORKERS:-auto}  # stitch embed --workers (auto: its default)
STORES=${STORES:-$OUT/stores}
STITCH=("$PY" -m stitchkit.cli.main)  # the installed command, whatever PATH holds
CXR14="atelectasis,cardiomegaly,effusion,infiltration,mass,nodule,pneumonia,pneumothorax,consolidation,edema,emphysema,fibrosis,pleural thickening,hernia"
mkdir -p "$OUT" "$STORES"
exec > >(tee "$OUT/gpu_check.log") 2>&1
failed=()
step() {  # step NAME COMMAND...: run it, time it, remember a failure, go on
  local name=$1; shift
  echo; echo "== $name"; local t0=$SECONDS
  if "$@"; then echo "-- $name: ok ($((SECONDS - t0)) s)"; else echo "-- $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

if [ "$SMOKE" -eq 1 ]; then
  echo "== environment (--smoke: the CPU, the smallest sizes; the figures measure nothing)"
else
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
if [ "$INSTALL" -eq 1 ]; then
  "$PY" -m pip install --no-deps -e . -q || { echo "pip install --no-deps -e . failed"; exit 1; }
fi
"$PY" - "$DEVICE" <<'PYEOF' || { echo "torch sees no GPU: nothing to check"; exit 3; }
import sys, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())
sys.exit(0 if sys.argv[1] == "cpu" or torch.cuda.is_available() else 1)
PYEOF

devices() {
  "$PY" -c "import sys; from stitchkit.devices import device_name as d; print('auto ->', d('auto'), '|', sys.argv[1], '->', d(sys.argv[1]))" "$DEVICE" || return 1
  "${STITCH[@]}" head train "$OUT/none-i.h5" "$OUT/none-t.h5" -o "$OUT/none.head" --device cuda:99 2> "$OUT/refusal.txt"
  local rc=$?; cat "$OUT/refusal.txt"
  [ "$rc" -eq 2 ] && [ "$(wc -l < "$OUT/refusal.txt")" -eq 1 ]
}
step "1. --device on this machine" devices

scale() {  # benchmarks/head_scale.py at N pairs, training and scoring only, then the given options
  "$PY" benchmarks/head_scale.py --sizes "$N" --dir "$STORES" --steps "$STEPS" --warmup "$WARMUP" \
    --threads "$THREADS" --ratio-size 0 --compare-size 0 --no-validate "$@"
}
step "2a. head training, $N pairs, batch $BATCH, fp32, ${DEVICES[*]}; scoring $SCORE_ROWS rows" \
  scale --devices "${DEVICES[@]}" --batch-size "$BATCH" --precision fp32 --score-rows "$SCORE_ROWS"
if [ "$SMOKE" -eq 0 ]; then  # --smoke: 2a's commands with another batch size; skipped
  step "2b. the same, batch $BIG_BATCH" scale --devices "${DEVICES[@]}" --batch-size "$BIG_BATCH" --precision fp32 --score-rows
fi
step "2c. bf16 on $DEVICE, batch $BIG_BATCH" scale --devices "$DEVICE" --batch-size "$BIG_BATCH" --precision bf16 --score-rows
head_train_command() {  # `stitch head train` as users type it, one epoch on the device, bf16
  "$PY" benchmarks/head_scale.py --sizes "$EPOCH_PAIRS" --dir "$STORES" --no-train --ratio-size 0 \
    --compare-size 0 --score-rows > /dev/null || return 1  # the stores only
  "${STITCH[@]}" head train "$STORES/img-$EPOCH_PAIRS.h5" "$STORES/txt-$EPOCH_PAIRS.h5" -o "$OUT/gpu.head" \
    --device "$DEVICE" --precision bf16 --epochs 1 --min-steps 0 --batch-size "$BIG_BATCH" --no-plot --no-resume --json \
    > "$OUT/gpu-head.json" || return 1
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print({k: r.get(k) for k in ('device', 'precision', 'seconds', 'n_pairs')})" "$OUT/gpu-head.json"
}
step "2d. one epoch of stitch head train on $DEVICE, $EPOCH_PAIRS pairs, bf16" head_train_command
classify_command() {  # `stitch classify --head` with tokens as users type it: 2d's head on its own store
  if [ ! -f "$OUT/gpu.head" ] || [ ! -f "$STORES/prompts-14.h5" ]; then
    echo "needs 2a's prompt store and 2d's head"; return 1
  fi
  "${STITCH[@]}" classify "$STORES/img-$EPOCH_PAIRS.h5" --head "$OUT/gpu.head" --classes "$CXR14" \
    --prompt-store "$STORES/prompts-14.h5" --device "$DEVICE" --allow-overlap --bootstrap 0 \
    -o "$OUT/gpu-scores.h5" --json > "$OUT/gpu-classify.json" || return 1
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print({k: r.get(k) for k in ('device', 'n', 'seconds', 'samples_per_s')})" "$OUT/gpu-classify.json"
}
step "2e. stitch classify --head with tokens, 14 classes, on $DEVICE, $EPOCH_PAIRS rows" classify_command

"$PY" - "$OUT" "$IMAGES" "$VIT" <<'PYEOF' || failed+=("3. synthetic images")
# Synthetic chest-X-ray-sized JPEGs (smooth shapes and noise, 512 x 512 grey) and random ViT weights.
import csv, sys
from pathlib import Path
import numpy as np
import timm, torch
from PIL import Image
out, n, vit = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
folder = out / "images"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:512, 0:512] / 512.0
rows = []
for i in range(n):
    img = 120 + 60 * np.sin(6 * xx + i) * np.cos(4 * yy) + rng.normal(0, 12, (512, 512))
    path = folder / f"x{i:05d}.jpg"
    if not path.exists():
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path, quality=90)
    rows.append({"id": f"x{i:05d}", "path": str(path)})
with open(out / "images.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=["id", "path"])
    w.writeheader()
    w.writerows(rows)
weights = out / f"{vit}-random.pth"
if not weights.exists():
    torch.manual_seed(0)
    torch.save(timm.create_model(vit, pretrained=False).state_dict(), weights)
print(f"{n} images in {folder}, random {vit} weights in {weights}")
PYEOF

embed() {  # embed NAME SPEC [options]: stitch embed on DEVICE against the bare forward, images/s
  local name=$1 spec=$2; shift 2
  "${STITCH[@]}" embed "$OUT/images.csv" -m "$spec" -o "$OUT/embed-$name.h5" --device "$DEVICE" --runtime "$RUNTIME" \
    --batch-size 128 --workers "$WORKERS" --overwrite --json "$@" > "$OUT/embed-$name.json" || return 1
  "$PY" - "$spec" "$OUT/embed-$name.json" "$OUT/embed-$name.h5" "$OUT/images/x00000.jpg" "$DEVICE" "$RUNTIME" \
    "${BARE[@]}" "$*" <<'PYEOF'
import json, sys, time
import h5py, torch
from stitchkit.encoders import load_encoder
from stitchkit.inputs import load_image
spec, summary, store, image, device, runtime_asked = sys.argv[1:7]
batch, warm, timed = (int(x) for x in sys.argv[7:10])
options = sys.argv[10]
s = json.load(open(summary))
with h5py.File(store, "r") as h5:
    runtime = json.loads(h5.attrs["runtime"])
    tokens = h5["tokens"].shape[1:] if "tokens" in h5 else None
if runtime["name"] != "torch" or not runtime["device"].startswith(device):
    sys.exit(f"the store records the runtime {runtime}: expected torch on {device}")
piped = s["samples"] / s["seconds"]
enc = load_encoder(spec, device=device, runtime=runtime_asked)
if enc.runtime != "torch":
    sys.exit(f"load_encoder gave the runtime {enc.runtime}: expected torch")
x = enc.normalise(torch.stack([enc.prepare(load_image(image))] * batch).to(device))  # decoded once: the model input, on the device
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
with torch.inference_mode():
    for _ in range(warm):
        enc.encode(x)
    sync()
    t0 = time.perf_counter()
    for _ in range(timed):
        enc.encode(x)
    sync()
bare = timed * len(x) / (time.perf_counter() - t0)
print(f"{spec} {options}: stitch embed {piped:.0f} images/s (device {s.get('device')}, runtime {runtime}, "
      f"tokens {tokens}), bare forward {bare:.0f} images/s: ratio {piped / bare:.2f}")
PYEOF
}
step "3a. embed lite0 on $DEVICE" embed lite0 lite0
if [ "$SMOKE" -eq 0 ]; then  # --smoke: 3a's command with another model; 3c and 3d run Lite2
  step "3b. embed lite2 on $DEVICE" embed lite2 lite2
fi
step "3c. embed lite2 --tokens on $DEVICE" embed lite2-tokens lite2 --tokens
step "3d. embed lite2 --tokens --token-grid 4x4 on $DEVICE" embed lite2-grid4 lite2 --tokens --token-grid 4x4
step "3e. embed timm $VIT (random weights) on $DEVICE" embed vit "timm:$VIT?weights=$OUT/$VIT-random.pth"

echo
if [ ${#failed[@]} -eq 0 ]; then echo "== all steps ran"; else printf '== FAILED: %s\n' "${failed[@]}"; fi
echo "log: $OUT/gpu_check.log"
[ ${#failed[@]} -eq 0 ]
