#!/usr/bin/env bash
# GPU check of issue 25, for a session that is lent a GPU (the session that wrote it had none, so
# it has never run: docs/speed.md says so). From the repository root on the GPU machine:
#
#   bash benchmarks/gpu_check.sh                 # N=100000 pairs: about 10 minutes on one GPU
#   N=20000 STEPS=30 bash benchmarks/gpu_check.sh  # a shorter run
#
# Needs a Python (PYTHON, default python3) with torch (a CUDA build), h5py, numpy, timm,
# safetensors, click, scikit-learn and Pillow already installed: the project itself is installed
# with `pip install --no-deps -e .` (nothing is downloaded). Writes under OUT (default $OUT, else
# /tmp/gpu-check): gpu_check.log, the synthetic stores (about 24 GB at N=100000; STORES to put
# them elsewhere) and the embed outputs. Each step runs even if an earlier one failed; the log
# ends with the steps that failed.
#
# 1. --device resolution on this machine (auto is a GPU; cuda:99 is one line, exit 2).
# 2. Head training at N synthetic Lite2-shaped pairs: seconds per step on the GPU against the
#    CPU (benchmarks/head_scale.py prints the ratio), fp32 and bf16, batch 64 and 512;
#    head scoring of 50,000 query rows with tokens, 14 classes, rows/s on both.
# 3. `stitch embed --device cuda` of Lite0, Lite2 and a timm ViT-B/16 with random weights on
#    synthetic JPEGs, images/s against the bare forward pass on tensors already decoded and on
#    the GPU; the store must record the device (runtime JSON) and torch as the runtime.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
STORES=${STORES:-$OUT/stores}
N=${N:-100000}
STEPS=${STEPS:-50}
IMAGES=${IMAGES:-1024}
THREADS=${THREADS:-$(nproc)}
STITCH=("$PY" -m stitchkit.cli.main)  # the installed command, whatever PATH holds
mkdir -p "$OUT" "$STORES"
exec > >(tee "$OUT/gpu_check.log") 2>&1
failed=()
step() {  # step NAME COMMAND...: run it, time it, remember a failure, go on
  local name=$1; shift
  echo; echo "== $name"; local t0=$SECONDS
  if "$@"; then echo "-- $name: ok ($((SECONDS - t0)) s)"; else echo "-- $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -m pip install --no-deps -e . -q || { echo "pip install --no-deps -e . failed"; exit 1; }
"$PY" - <<'EOF' || { echo "torch sees no GPU: nothing to check"; exit 3; }
import sys, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())
sys.exit(0 if torch.cuda.is_available() else 1)
EOF

devices() {
  "$PY" -c "from stitchkit.devices import device_name as d; print('auto ->', d('auto'), '| cuda ->', d('cuda'))" || return 1
  "${STITCH[@]}" head train "$OUT/none-i.h5" "$OUT/none-t.h5" -o "$OUT/none.head" --device cuda:99 2> "$OUT/refusal.txt"
  local rc=$?; cat "$OUT/refusal.txt"
  [ "$rc" -eq 2 ] && [ "$(wc -l < "$OUT/refusal.txt")" -eq 1 ]
}
step "1. --device on this machine" devices

train() {  # train BATCH PRECISION [extra args]
  local batch=$1 precision=$2; shift 2
  "$PY" benchmarks/head_scale.py --sizes "$N" --dir "$STORES" --devices cpu cuda --steps "$STEPS" \
    --warmup 5 --threads "$THREADS" --batch-size "$batch" --precision "$precision" \
    --ratio-size 0 --compare-size 0 --no-validate "$@"
}
step "2a. head training, $N pairs, batch 64, fp32, GPU vs CPU; scoring 50,000 rows" train 64 fp32 --score-rows 50000
step "2b. the same, batch 512" train 512 fp32 --score-rows
step "2c. bf16 on the GPU, batch 512" "$PY" benchmarks/head_scale.py --sizes "$N" --dir "$STORES" --devices cuda \
  --steps "$STEPS" --warmup 5 --threads "$THREADS" --batch-size 512 --precision bf16 --ratio-size 0 \
  --compare-size 0 --no-validate --score-rows
head_train_command() {  # `stitch head train` as users type it, one epoch on the GPU, bf16
  "$PY" benchmarks/head_scale.py --sizes 20000 --dir "$STORES" --steps 1 --ratio-size 0 --compare-size 0 \
    --score-rows --no-validate > /dev/null || return 1
  "${STITCH[@]}" head train "$STORES/img-20000.h5" "$STORES/txt-20000.h5" -o "$OUT/gpu.head" --device cuda \
    --precision bf16 --epochs 1 --batch-size 512 --no-plot --no-resume --json > "$OUT/gpu-head.json" || return 1
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print({k: r.get(k) for k in ('device', 'precision', 'seconds', 'n_pairs')})" "$OUT/gpu-head.json"
}
step "2d. one epoch of stitch head train on the GPU, 20,000 pairs, bf16" head_train_command

"$PY" - "$OUT" "$IMAGES" <<'EOF' || failed+=("3. synthetic images")
# Synthetic chest-X-ray-sized JPEGs (smooth shapes and noise, 512 x 512 grey) and random ViT-B/16 weights.
import csv, sys
from pathlib import Path
import numpy as np
import timm, torch
from PIL import Image
out, n = Path(sys.argv[1]), int(sys.argv[2])
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
weights = out / "vit-b16-random.pth"
if not weights.exists():
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_base_patch16_224", pretrained=False).state_dict(), weights)
print(f"{n} images in {folder}, random ViT-B/16 weights in {weights}")
EOF

embed() {  # embed NAME SPEC: stitch embed --device cuda against the bare forward, images/s
  local name=$1 spec=$2
  "${STITCH[@]}" embed "$OUT/images.csv" -m "$spec" -o "$OUT/embed-$name.h5" --device cuda --batch-size 128 \
    --workers 8 --overwrite --json > "$OUT/embed-$name.json" || return 1
  "$PY" - "$spec" "$OUT/embed-$name.json" "$OUT/embed-$name.h5" "$OUT/images/x00000.jpg" <<'EOF'
import json, sys, time
import h5py, torch
from stitchkit.encoders import load_encoder
from stitchkit.inputs import load_image
spec, summary, store, image = sys.argv[1:5]
s = json.load(open(summary))
with h5py.File(store, "r") as h5:
    runtime = json.loads(h5.attrs["runtime"])
assert runtime["name"] == "torch" and runtime["device"].startswith("cuda"), runtime
piped = s["samples"] / s["seconds"]
enc = load_encoder(spec, device="cuda", runtime="auto")
assert enc.runtime == "torch", enc.runtime
x = torch.stack([enc.prepare(load_image(image))] * 128).to("cuda")  # decoded once, on the GPU
with torch.inference_mode():
    for _ in range(3):
        enc.encode(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        enc.encode(x)
    torch.cuda.synchronize()
bare = 10 * len(x) / (time.perf_counter() - t0)
print(f"{spec}: stitch embed {piped:.0f} images/s (device {s.get('device')}, runtime {runtime}), "
      f"bare forward {bare:.0f} images/s: ratio {piped / bare:.2f}")
EOF
}
step "3a. embed lite0 on the GPU" embed lite0 lite0
step "3b. embed lite2 on the GPU" embed lite2 lite2
step "3c. embed timm ViT-B/16 (random weights) on the GPU" embed vitb16 "timm:vit_base_patch16_224?weights=$OUT/vit-b16-random.pth"

echo
if [ ${#failed[@]} -eq 0 ]; then echo "== all steps ran"; else printf '== FAILED: %s\n' "${failed[@]}"; fi
echo "log: $OUT/gpu_check.log"
