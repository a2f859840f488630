#!/usr/bin/env bash
# The GPU check: every figure only a GPU can give, in one run of about 9 minutes on one H200.
#   decompose bench (SDXL, FLUX, FLUX.2 and Qwen-Image target sets: exact vs fast, warm cache), full-size train step of SDXL and
#   FLUX against ComfyUI's built-in LoRA trainer (and full-size SDXL against 0.33's bypass mode), λ re-apply of SDXL and
#   FLUX against two stock LoRA loaders (ComfyUI 0.8); dynamic VRAM on ComfyUI 0.33: Train ΔR, Merge ΔR (added and
#   K-LoRA) and λ over Steps on a ModelPatcherDynamic (bench/dynamic_vram.py);
#   Train ΔR's optimizers, AdamW 8-bit and Prodigy against AdamW (bench/optimizers.py);
#   qr-lora train on one GPU beside the node's one-process path (bench/train_distributed.py).
# Run from the repository root on the device machine, with .gpu/ carried (bench/prepare_gpu_check.sh makes it):
#   run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=600)
# Results go to $OUT (the device tool brings them back) or bench/results/; commit them with the machine named.
# Here, without a GPU, QR_GPU_CHECK_DEVICE=cpu QR_GPU_CHECK_QUICK=1 runs the same steps at smoke size
# (QR_GPU_CHECK_COMFYUI_0_33_0 and QR_GPU_CHECK_PYTHON_0_33_0 name a ComfyUI 0.33 checkout and its venv's python).
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
# ComfyUI <version>: $QR_GPU_CHECK_COMFYUI_<version with _> if set, else .gpu/ComfyUI-<version>.tgz unpacked into /tmp.
comfyui() {
  local var="QR_GPU_CHECK_COMFYUI_${1//./_}" dir="/tmp/qr-gpu-check/$1"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  [ -f "$dir/ComfyUI/main.py" ] || { mkdir -p "$dir" && tar -xzf ".gpu/ComfyUI-$1.tgz" -C "$dir"; } >&2 || return 1
  echo "$dir/ComfyUI"
}
export COMFYUI_PATH="${COMFYUI_PATH:-$(comfyui 0.8.0)}"
[ -f "$COMFYUI_PATH/main.py" ] || { echo "no ComfyUI at $COMFYUI_PATH: run bench/prepare_gpu_check.sh and carry .gpu"; exit 2; }
COMFYUI_033="$(comfyui 0.33.0)" || COMFYUI_033=""
PYTHON_033="${QR_GPU_CHECK_PYTHON_0_33_0:-python3}"  # a smoke run here: the 0.33 venv's python (comfy-aimdo)
[ "$DEVICE" != cuda ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# First, as it takes about a minute: ComfyUI 0.33, whose default on NVIDIA is dynamic VRAM (comfy-aimdo).
step env COMFYUI_PATH="$COMFYUI_033" "$PYTHON_033" bench/dynamic_vram.py --device "$DEVICE" ${QUICK:+--steps 2} \
  --out-dir "$OUT_DIR"
if [ -n "$QUICK" ]; then
  step python3 bench/decompose.py --device "$DEVICE" --sets sdxl,flux,flux2,qwen_image --quick --out-dir "$OUT_DIR"
  step python3 bench/train_step.py --device "$DEVICE" --quick --out-dir "$OUT_DIR"
  step env COMFYUI_PATH="$COMFYUI_033" "$PYTHON_033" bench/train_step.py --device "$DEVICE" --quick \
    --mechanisms floor qr_bypass comfy_bypass --out-dir "$OUT_DIR"
  step python3 bench/merge_reapply.py --device "$DEVICE" --quick --out-dir "$OUT_DIR"
  step python3 bench/optimizers.py --device "$DEVICE" --targets 10 --rank 8 --steps 20 --out-dir "$OUT_DIR"
else
  step python3 bench/decompose.py --device "$DEVICE" --sets sdxl,flux --samples-per-shape 2 --out-dir "$OUT_DIR"
  # FLUX.2-dev and Qwen-Image: their exact SVDs are the largest (36864×6144), so one layer per shape.
  step python3 bench/decompose.py --device "$DEVICE" --sets flux2,qwen_image --samples-per-shape 1 --merge \
    --out-dir "$OUT_DIR"
  # Full size: the adapters alone (five full-size FLUX models, the built-in loop's two included, do not fit one GPU).
  step python3 bench/train_step.py --device "$DEVICE" --size full --arch sdxl flux --steps 3 --warmup 2 --pairs 5 \
    --mechanisms floor qr_bypass comfy_lora_wrapper --out-dir "$OUT_DIR"
  # The strongest baseline, 0.33's bypass mode (SDXL only: the whole script must stay under the tool's 10 minutes).
  step env COMFYUI_PATH="$COMFYUI_033" "$PYTHON_033" bench/train_step.py --device "$DEVICE" --size full --arch sdxl \
    --steps 3 --warmup 2 --pairs 3 --mechanisms floor qr_bypass comfy_bypass --out-dir "$OUT_DIR"
  step python3 bench/merge_reapply.py --device "$DEVICE" --arch sdxl flux --dtype bf16 --changes 3 \
    --out-dir "$OUT_DIR"
  # Train ΔR's optimizers against AdamW: AdamW 8-bit runs only where the device image has bitsandbytes (its
  # 41 MiB wheel does not fit the carry); otherwise its row says so. Prodigy's wheel travels in .gpu/wheels.
  step python3 bench/optimizers.py --device "$DEVICE" --out-dir "$OUT_DIR"
fi
# qr-lora train on one GPU beside the node's path (the multi-GPU NCCL run needs a machine with several).
step python3 bench/train_distributed.py --device "$DEVICE" --procs 1 ${QUICK:+--quick} --size small --steps 30 \
  --out-dir "$OUT_DIR"
ls -la "$OUT_DIR"
exit "$status"
