"""QR-LoRA for ComfyUI: the custom-node entry point (V3).

ComfyUI imports this file as a package; everything inside uses relative
imports because ComfyUI itself has a top-level module named `nodes`.
No NODE_CLASS_MAPPINGS on purpose: its presence would make ComfyUI ignore
the V3 entry point.
"""

from comfy_api.latest import ComfyExtension, io

from .nodes import NODE_LIST
from .nodes.services.example_inputs import install_example_inputs
from .nodes.services.folders import register_folders
from .nodes.services.server import register_routes

WEB_DIRECTORY = "./js"

register_folders()
install_example_inputs()  # the images the example workflows load, where absent from ComfyUI/input
register_routes()  # GET /qr_lora/delta_info for the front end (only when ComfyUI's server runs)


class QRLoRAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)


async def comfy_entrypoint() -> QRLoRAExtension:
    return QRLoRAExtension()
