"""Merging: ΣλᵢΔRᵢ (paper eq. 7) and its LoRA export, λ per block, λ over sampling steps."""
