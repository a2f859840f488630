"""The toy world: what `python -m qr_core demo` and bench/disentangle.py run QR-LoRA on.

No real checkpoint can be downloaded in a test, so the pack ships a small
world of its own: a procedural scene generator (`scenes`: shapes × styles,
some held out to play the new subject <c> and style <s>), a 1.0 M-parameter
text-to-image flow model in the FLUX layout (`mini_flux`, `model`, weights in
`assets/`), an image encoder that scores samples (`encoder`: the DINO/CLIP
analogue), the content and style tasks with their LoRA and ZipLoRA baselines
(`tasks`), and the demo (`demo`). It uses the engine; the engine never
imports it.
"""
