"""Option (combo) inputs checked when a node runs.

ComfyUI validates a V3 node's combo values only in some versions, and an
API call or a workflow saved by another version can carry a value that is
no longer an option: it gets the list of valid ones here, instead of a bare
KeyError from deep inside the node.
"""

from __future__ import annotations

from comfy_api.latest import io


def check_options(node: type[io.ComfyNode], values: dict, skip: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the input and its valid options for the first value that is not one."""
    schema = node.define_schema()
    for item in schema.inputs:
        if not isinstance(item, io.Combo.Input) or item.id in skip or values.get(item.id) is None:
            continue
        options = list(item.options or [])
        if values[item.id] not in options:
            raise ValueError(f"{schema.display_name or schema.node_id}: {item.id} = {values[item.id]!r} is not an "
                             f"option; choose one of: {', '.join(map(str, options))}.")
