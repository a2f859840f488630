"""Checks a UI-format workflow against a live server's /object_info, and converts it to API format.

The rules are the front end's: widget values fill a node's widget inputs in
input order (required, then optional); a seed-like INT carries one extra
'control after generate' value, an image-upload combo one 'upload' value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = PACK_DIR / "workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".png", ".jpg", ".jpeg", ".webp")
PACK_MODULE = "custom_nodes.qr-lora"


# A workflow's extra may bound the ComfyUI versions it is written for (both optional):
REQUIRES_KEY = "qr_lora_requires_comfyui"  # the oldest ComfyUI with all its nodes and inputs
BELOW_KEY = "qr_lora_requires_comfyui_below"  # the first ComfyUI whose nodes changed under it (another file serves it)


def workflow_files() -> list[Path]:
    return sorted(WORKFLOW_DIR.glob("*.json"))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def unmet_requirement(workflow: dict, object_info: dict, server_version: str) -> str | None:
    """Why this ComfyUI cannot load the workflow (outside the versions it declares), or None.

    Raises AssertionError when a declaration is stale: a server outside the declared versions that validates
    the workflow as it is.
    """
    extra = workflow.get("extra") or {}
    need, below = extra.get(REQUIRES_KEY), extra.get(BELOW_KEY)
    have = version_tuple(server_version)
    if need is not None and have < version_tuple(need):
        declared = f"≥ {need}"
        missing = sorted({n["type"] for n in workflow["nodes"]
                          if n["type"] not in FRONTEND_ONLY and n["type"] not in object_info})
        if missing:
            return f"ComfyUI {server_version} has no {', '.join(missing)}: this workflow needs ComfyUI {declared}"
    elif below is not None and have >= version_tuple(below):
        declared = f"< {below}"
    else:
        return None
    # Every node is there, yet an option or a widget may not be (CLIPLoader's type 'flux2' arrived with the
    # model; Make Training Dataset's texts became an input without a widget in 0.33).
    problems = validate(workflow, object_info).problems
    assert problems, f"the workflow declares ComfyUI {declared}, but {server_version} runs it as it is"
    return f"ComfyUI {server_version} cannot run it ({problems[0]}): this workflow is for ComfyUI {declared}"


def spec_of(info: dict, name: str) -> tuple[str, dict, bool]:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None:
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if isinstance(kind, list):
                return "COMBO", {**opts, "options": kind}, section == "optional"
            return kind, opts, section == "optional"
    raise KeyError(name)


def inputs_in_order(info: dict) -> list[tuple[str, str, dict, bool]]:
    out = []
    for section in ("required", "optional"):
        for n in info.get("input_order", {}).get(section) or list(info["input"].get(section, {})):
            out.append((n, *spec_of(info, n)))
    return out


def widget_slots(info: dict) -> list[tuple[str, str, dict]]:
    slots = []
    for name, kind, opts, _ in inputs_in_order(info):
        if kind not in WIDGET_TYPES or opts.get("forceInput"):
            continue
        slots.append((name, kind, opts))
        if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
            slots.append((name + ":control", "CONTROL", {}))
        if opts.get("image_upload"):
            slots.append((name + ":upload", "UPLOAD", {}))
    return slots


def is_core(info: dict) -> bool:
    mod = info.get("python_module", "")
    return mod == "nodes" or mod.startswith(("comfy_extras.", "comfy_api_nodes."))


def compatible(out_type: str, in_type: str) -> bool:
    """The front end's rule: '*' fits all, comma-separated lists fit when they share a type."""
    if out_type == "*" or in_type == "*":
        return True
    a, b = set(str(out_type).split(",")), set(str(in_type).split(","))
    return bool(a & b)


def check_value(node_label: str, name: str, kind: str, opts: dict, value, problems: list[str]) -> None:
    where = f"{node_label}.{name}"
    if kind == "CONTROL":
        if value not in CONTROL_VALUES:
            problems.append(f"{where}: control value {value!r} not in {sorted(CONTROL_VALUES)}")
        return
    if kind == "UPLOAD":
        return
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: {value!r} is not an integer")
            return
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: {value!r} is not a number")
            return
    elif kind == "STRING":
        if not isinstance(value, str):
            problems.append(f"{where}: {value!r} is not a string")
        return
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            problems.append(f"{where}: {value!r} is not a boolean")
        return
    elif kind == "COMBO":
        options = opts.get("options", [])
        if value in options:
            return
        # Model and image pickers list the server's files: a missing file is the user's to download
        # (the workflow declares it under properties.models), an invalid enum choice is an error.
        # (An enum's choices never end in a file suffix, so such a value names a file.)
        if isinstance(value, str) and value.lower().endswith(FILE_SUFFIXES):
            return
        problems.append(f"{where}: {value!r} is not one of {options[:12]}")
        return
    lo, hi = opts.get("min"), opts.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        problems.append(f"{where}: {value!r} outside [{lo}, {hi}]")


@dataclass
class Report:
    problems: list[str]
    node_types: set[str]


def validate(workflow: dict, object_info: dict) -> Report:
    """Every node type known (core or this pack), widget values valid, links type-compatible."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    types = set()
    for n in workflow["nodes"]:
        t = n["type"]
        types.add(t)
        label = f"#{n['id']} {t}"
        if t in FRONTEND_ONLY:
            continue
        info = object_info.get(t)
        if info is None:
            problems.append(f"{label}: node type missing on the server (the front end would show 'missing nodes')")
            continue
        if not (is_core(info) or info.get("python_module", "").startswith(PACK_MODULE)):
            problems.append(f"{label}: comes from another custom-node pack ({info.get('python_module')})")
        slots = widget_slots(info)
        values = n.get("widgets_values") or []
        if isinstance(values, dict):
            problems.append(f"{label}: dict widgets_values are not supported here")
            continue
        if len(values) != len(slots):
            problems.append(f"{label}: {len(values)} widget values for {len(slots)} widgets "
                            f"({[s[0] for s in slots]})")
            continue
        for (name, kind, opts), value in zip(slots, values):
            check_value(label, name, kind, opts, value, problems)
        declared = {name: (kind, optional) for name, kind, _, optional in inputs_in_order(info)}
        for slot in n.get("inputs", []):
            if slot["name"] not in declared:
                problems.append(f"{label}: input {slot['name']!r} does not exist")
            elif declared[slot["name"]][0] not in WIDGET_TYPES and slot.get("type") != declared[slot["name"]][0]:
                problems.append(f"{label}: input {slot['name']!r} typed {slot.get('type')} but the node says "
                                f"{declared[slot['name']][0]}")
        linked = {s["name"] for s in n.get("inputs", []) if s.get("link") is not None}
        for name, kind, opts, optional in inputs_in_order(info):
            if not optional and kind not in WIDGET_TYPES and name not in linked:
                problems.append(f"{label}: required input {name!r} is not connected (it would show red)")
        for i, out in enumerate(n.get("outputs", [])):
            if i >= len(info["output"]) or out["type"] != info["output"][i]:
                problems.append(f"{label}: output {i} {out.get('type')} does not match the node "
                                f"({info['output']})")
    for link in workflow["links"]:
        lid, src, sslot, dst, dslot, ltype = link[:6]
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: node {src if src not in nodes else dst} does not exist")
            continue
        s, d = nodes[src], nodes[dst]
        try:
            out_type = object_info[s["type"]]["output"][sslot]
            in_name = d["inputs"][dslot]["name"]
            in_type = spec_of(object_info[d["type"]], in_name)[0]
        except (KeyError, IndexError) as e:
            problems.append(f"link {lid}: bad slot ({e})")
            continue
        if not compatible(out_type, in_type):
            problems.append(f"link {lid}: {s['type']} output {out_type} → {d['type']}.{in_name} ({in_type})")
        if d["inputs"][dslot].get("link") != lid or lid not in (s["outputs"][sslot].get("links") or []):
            problems.append(f"link {lid}: not recorded on both ends")
    return Report(problems, types)


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt the front end would queue (muted/bypassed nodes and Notes left out)."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n["type"] in FRONTEND_ONLY or n.get("mode", 0) != 0:
            continue
        info = object_info[n["type"]]
        inputs = {}
        for (name, _, _), value in zip(widget_slots(info), n.get("widgets_values") or []):
            if ":" not in name:
                inputs[name] = value
        for slot in n.get("inputs", []):
            if slot.get("link") is not None:
                _, src, sslot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), sslot]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n.get("title", n["type"])}}
    return prompt
