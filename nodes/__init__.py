"""The pack's ComfyUI nodes (V3 schema), thin declarations over qr_core."""

from .decompose_node import QRDecompose
from .delta_nodes import QRLoadDelta, QRSaveDelta
from .grid_node import QRLambdaGrid
from .klora_node import QRKLoRA
from .merge_nodes import QRExportLoRA, QRMergeDeltas, QRScheduleHooks
from .similarity_node import QRDeltaSimilarity
from .train_node import QRTrainDelta

NODE_LIST = [QRDecompose, QRTrainDelta, QRLoadDelta, QRMergeDeltas, QRSaveDelta, QRExportLoRA, QRDeltaSimilarity, QRLambdaGrid,
             QRScheduleHooks, QRKLoRA]
