"""The pack's own socket types."""

from comfy_api.latest import io

# A qr_core.Basis: per-target orthonormal Q of one model, with its fingerprint.
QRBasis = io.Custom("QR_BASIS")
# A qr_core.QRDelta: a self-contained ΔR (its Q included).
QRDeltaType = io.Custom("QR_DELTA")

CATEGORY = "QR-LoRA"
