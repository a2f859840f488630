"""qr_core: the QR-LoRA engine (pure PyTorch; never imports ComfyUI).

Decompose a model's target weights once into orthonormal bases Q (cached on
disk), train ΔR as a bypass, save self-contained ΔR files, merge them with
weights λ (paper eq. 7) and export the merge as a standard LoRA.
"""

from .adapters.analysis import delta_similarity, summarize
from .adapters.bypass import QRAdapter, frozen
from .adapters.delta import QRDelta
from .bases.basis import Basis
from .bases.cache import BasisCache, default_cache_dir, get_basis
from .bases.decompose import DecomposeSettings, captured_energy, check_basis, decompose
from .bases.fingerprint import fingerprint_tensors, fingerprint_weights
from .errors import (AdapterStateError, BasisMismatchError, DeltaFileError, NonFiniteLossError, QRLoRAError,
                     RuntimeSupportError, SettingError, TargetError)
from .merging.merge import PatchTerm, export_lora, lora_state_dict, merge, merged_delta
from .targets import (ARCHITECTURES, PRESETS, CoreModel, Target, TargetSet, check_trainable, detect_architecture,
                      select_targets)
from .training.loop import TrainResult, TrainSettings, train

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "PRESETS", "AdapterStateError", "Basis", "BasisCache", "BasisMismatchError", "CoreModel", "DecomposeSettings", "DeltaFileError",
    "NonFiniteLossError", "PatchTerm", "QRAdapter", "QRDelta", "QRLoRAError", "RuntimeSupportError", "SettingError", "Target", "TargetError", "TargetSet",
    "TrainResult", "TrainSettings", "captured_energy", "check_basis", "check_trainable", "decompose", "default_cache_dir", "delta_similarity",
    "detect_architecture", "export_lora", "fingerprint_tensors", "fingerprint_weights", "frozen", "get_basis",
    "lora_state_dict", "merge", "merged_delta", "select_targets", "summarize", "train",
]
