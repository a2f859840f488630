"""HTTP route for the front end: GET /qr_lora/delta_info?file=<name> → a ΔR file's metadata.

Reads only the safetensors header (no tensors), so hovering or picking a
file in Load ΔR costs nothing. Registered once, only when ComfyUI's server
exists (not in tests that load the pack without one).
"""

from __future__ import annotations

import sys

from ..qr_core.delta import describe_delta_header
from ..qr_core.files import read_header
from . import bridge

ROUTE = "/qr_lora/delta_info"
_registered = False


def delta_info(file_name: str) -> dict:
    """Metadata of a ΔR file in models/qr_lora, as shown under the Load ΔR picker."""
    path = bridge.input_path(bridge.FOLDER, file_name)
    header, meta = read_header(path)  # header only; also refuses truncated files
    info = describe_delta_header(header, meta)
    info.update(file=file_name, format=meta.get("qr_lora_format"), size_mb=round(path.stat().st_size / 2**20, 2))
    return info


def register_routes() -> None:
    global _registered
    if _registered:
        return
    module = sys.modules.get("server")  # ComfyUI's server.py, loaded by main.py before custom nodes
    prompt_server = getattr(module, "PromptServer", None)
    server = getattr(prompt_server, "instance", None)
    if server is None:
        return

    from aiohttp import web

    @server.routes.get(ROUTE)
    async def _delta_info(request):
        name = request.query.get("file", "")
        try:
            return web.json_response(delta_info(name))
        except (FileNotFoundError, ValueError) as e:
            return web.json_response({"file": name, "error": str(e)})  # 200: the picker may name a file not (yet) there
        except Exception as e:  # a damaged file: say so instead of a 500 page
            return web.json_response({"file": name, "error": f"{type(e).__name__}: {e}"})

    _registered = True
