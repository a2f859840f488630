#!/usr/bin/env bash
# The GPU check: every figure only a GPU can give, in one run of about 8 minutes on one H200.
#   decompose bench (SDXL, FLUX, FLUX.2 and Qwen-Image target sets: exact vs fast, warm cache), full-size train step of SDXL and
#   FLUX against ComfyUI's built-in LoRA trainer, λ re-apply of SDXL and FLUX against two stock LoRA loaders.
# Run from the repository root on the device machine, with .gpu/ carried (bench/prepare_gpu_check.sh makes it):
#   run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=600)
# Results go to $OUT (the device tool brings them back) or bench/results/; commit them with the machine named.
# Here, without a GPU, QR_GPU_CHECK_DEVICE=cpu QR_GPU_CHECK_QUICK=1 runs the same steps at smoke size.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${QR_GPU_CHECK_DEVICE:-cuda}"
OUT_DIR="${OUT:-bench/results}"
QUICK="${QR_GPU_CHECK_QUICK:-}"
export PYTHONUNBUFFERED=1
status=0
step() { echo "=== $* ($(date +%T))"; "$@" || { echo "::: FAILED: $*"; status=1; }; }

if [ -d .gpu/wheels ] && ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"  # qr_core from this checkout: nothing is pip-installed there
export COMFYUI_PATH="${COMFYUI_PATH:-$PWD/.gpu/ComfyUI}"
[ -f "$COMFYUI_PATH/main.py" ] || { echo "no ComfyUI at $COMFYUI_PATH: run bench/prepare_gpu_check.sh and carry .gpu"; exit 2; }
[ "$DEVICE" != cuda ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ -n "$QUICK" ]; then
  step python3 bench/decompose.py --device "$DEVICE" --sets sdxl,flux,flux2,qwen_image --quick --out-dir "$OUT_DIR"
  step python3 bench/train_step.py --device "$DEVICE" --quick --out-dir "$OUT_DIR"
  step python3 bench/merge_reapply.py --device "$DEVICE" --quick --out-dir "$OUT_DIR"
else
  step python3 bench/decompose.py --device "$DEVICE" --sets sdxl,flux --samples-per-shape 2 --out-dir "$OUT_DIR"
  # FLUX.2-dev and Qwen-Image: their exact SVDs are the largest (36864×6144), so one layer per shape.
  step python3 bench/decompose.py --device "$DEVICE" --sets flux2,qwen_image --samples-per-shape 1 --merge \
    --out-dir "$OUT_DIR"
  # Full size: the adapters alone (five full-size FLUX models, the built-in loop's two included, do not fit one GPU).
  step python3 bench/train_step.py --device "$DEVICE" --size full --arch sdxl flux --steps 3 --warmup 2 --pairs 5 \
    --mechanisms floor qr_bypass comfy_lora_wrapper --out-dir "$OUT_DIR"
  step python3 bench/merge_reapply.py --device "$DEVICE" --arch sdxl flux --dtype bf16 --changes 3 \
    --out-dir "$OUT_DIR"
fi
ls -la "$OUT_DIR"
exit "$status"
