#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on the device machine (run here, once, from the repository root):
#   .gpu/ComfyUI-0.8.0.tgz, .gpu/ComfyUI-0.33.0.tgz   ComfyUI's source from ../shared/vendor, tests, docs,
#                  tokenizer data (but CLIP-L's), core blueprints and API nodes left out (gpu_check.sh unpacks them into /tmp)
#   .gpu/wheels    wheels for Python 3.12 / x86-64 of what ComfyUI imports and the device image lacks
# .gpu/ is in .gitignore (never committed: ComfyUI's code is GPL and not ours to ship);
# name it in the device run's `carry`. The carry limit is 64 MiB with the checkout, so only what the
# benchmarks import travels, and the sources travel compressed. comfy-kitchen (68 MiB) stays behind: without
# it ComfyUI runs its plain-torch kernels (FLUX's RoPE included), so the GPU figures are of that path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENDOR="${QR_LORA_VENDOR:-../shared/vendor}"
VERSIONS="${QR_GPU_CHECK_VERSIONS:-0.8.0 0.33.0}"
rm -rf .gpu && mkdir -p .gpu/wheels
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for v in $VERSIONS; do
  mkdir -p "$work/$v" && tar -xzf "$VENDOR/ComfyUI-$v.tar.gz" -C "$work/$v"
  c="$work/$v/ComfyUI"
  rm -rf "$c/tests" "$c/tests-unit" "$c/.github" "$c/blueprints" "$c/comfy_api_nodes"
  # CLIP-L's tokenizer (comfy/sd1_tokenizer, 1.6 MiB) stays: bench/train_distributed.py encodes captions with it.
  find "$c/comfy/text_encoders" -type f ! -name '*.py' -delete
  tar -czf ".gpu/ComfyUI-$v.tgz" -C "$work/$v" ComfyUI
done
# What ComfyUI imports on the way to its model classes, custom-node loader and comfy_api, less what the
# device image already has (torch, numpy, safetensors, einops, transformers, aiohttp, yarl, Pillow, ...).
# 0.33 adds comfy-aimdo (dynamic VRAM; imported by comfy.ops and comfy.model_patcher), blake3, simpleeval.
# prodigyopt (10 kB): bench/optimizers.py's Prodigy row.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .gpu/wheels \
  torchsde trampoline "av>=16.0.0" spandrel "comfy-aimdo==0.4.13" blake3 "simpleeval>=1.0.0" \
  "prodigyopt>=1.1"
du -sh .gpu
git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "checkout: %.1f MiB (carry limit 64 MiB with .gpu)\n", $1 / 2^20}'
