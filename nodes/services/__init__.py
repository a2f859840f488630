"""ComfyUI glue behind the node declarations: model folders, base weights, patches, the server, the trainer."""
