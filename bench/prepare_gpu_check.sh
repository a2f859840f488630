#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on the device machine (run here, once, from the repository root):
#   .gpu/ComfyUI   ComfyUI 0.8.0's source from ../shared/vendor (tests and docs left out, to travel light)
#   .gpu/wheels    wheels for Python 3.12 / x86-64 of what ComfyUI imports and the device image lacks
# .gpu/ is ignored through .git/info/exclude (never committed: ComfyUI's code is GPL and not ours to ship);
# name it in the device run's `carry`. About 45 MiB, with the checkout about 58 MiB: the limit is 64 MiB, so
# only what the benchmarks import travels. comfy-kitchen (68 MiB) stays behind: without it ComfyUI 0.8 runs
# its plain-torch kernels (FLUX's RoPE included), so the GPU figures are of that path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENDOR="${QR_LORA_VENDOR:-../shared/vendor}"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/wheels
tar -xzf "$VENDOR/ComfyUI-0.8.0.tar.gz" -C .gpu
# Tests, docs and tokenizer data (no benchmark tokenizes text): about 9 MiB.
rm -rf .gpu/ComfyUI/tests .gpu/ComfyUI/tests-unit .gpu/ComfyUI/.github
find .gpu/ComfyUI/comfy/text_encoders .gpu/ComfyUI/comfy/sd1_tokenizer -type f ! -name '*.py' -delete
# What ComfyUI 0.8.0 imports on the way to its model classes, custom-node loader and comfy_api, less what
# the device image already has (torch, numpy, safetensors, einops, transformers, aiohttp, yarl, Pillow, ...).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .gpu/wheels \
  torchsde trampoline "av>=14.2.0" spandrel
du -sh .gpu
git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "checkout: %.1f MiB (carry limit 64 MiB with .gpu)\n", $1 / 2^20}'

