"""The graph side of tools/build_workflows.py: ComfyUI workflows (UI format, as the front end saves them) and
subgraph blueprints built node by node, with each node's widgets and sockets laid out from a server's /object_info.

Nothing here knows the pack's recipes; build_workflows.py holds those.
"""

from __future__ import annotations

import uuid


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
PACK_ID = "qr-lora"  # the Registry id (pyproject [project].name)


def input_spec(info: dict, name: str) -> tuple[str, dict]:
    """(type, options) of a node input from object_info; combos come back as ('COMBO', {'options': [...]})."""
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None:
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            if isinstance(kind, list):
                return "COMBO", {**opts, "options": kind}
            return kind, opts
    raise KeyError(name)


def ordered_inputs(info: dict) -> list[tuple[str, str, dict, bool]]:
    """(name, type, options, optional) in the order the front end creates widgets and slots."""
    out = []
    for section in ("required", "optional"):
        names = info.get("input_order", {}).get(section) or list(info["input"].get(section, {}))
        for n in names:
            kind, opts = input_spec(info, n)
            out.append((n, kind, opts, section == "optional"))
    return out


def is_widget(kind: str, opts: dict) -> bool:
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def has_control(name: str, kind: str, opts: dict) -> bool:
    """The front end adds a 'control after generate' widget (one more value) to these INT inputs."""
    return kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))


def widget_layout(info: dict) -> list[tuple[str, str, dict]]:
    """The widgets_values slots of a node: (input name or '<name>:control' / '<name>:upload', type, options)."""
    slots = []
    for name, kind, opts, _ in ordered_inputs(info):
        if not is_widget(kind, opts):
            continue
        slots.append((name, kind, opts))
        if has_control(name, kind, opts):
            slots.append((name + ":control", "CONTROL", {"options": ["fixed", "increment", "decrement", "randomize"]}))
        if opts.get("image_upload"):
            slots.append((name + ":upload", "UPLOAD", {}))
    return slots


class Workflow:
    def __init__(self, object_info: dict, *, models: dict | None = None, panel_extra: dict | None = None):
        """models: file name → (download URL, models/ folder), listed in a node's properties when a widget names
        the file (the front end offers the download); panel_extra: node type → px of room for a front-end panel."""
        self.info = object_info
        self.models = models or {}
        self.panel_extra = panel_extra or {}
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def node(self, type_: str, pos, values: dict | None = None, *, title: str | None = None, size=None,
             color: str | None = None, text: str | None = None) -> dict:
        values = dict(values or {})
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": type_, "pos": [float(pos[0]), float(pos[1])], "size": None, "flags": {},
                "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": []}
        if type_ in FRONTEND_ONLY:
            node["widgets_values"] = [text or ""]
            node["size"] = list(size or [360, 160])
            node["color"], node["bgcolor"] = "#432", "#653"
            self.nodes.append(node)
            return node
        info = self.info[type_]
        n_widgets = 0
        for name, kind, opts, optional in ordered_inputs(info):
            if is_widget(kind, opts):
                continue
            slot = {"name": name, "type": kind, "link": None}
            if optional:
                slot["shape"] = 7
            node["inputs"].append(slot)
        for i, (kind, oname) in enumerate(zip(info["output"], info.get("output_name") or info["output"])):
            node["outputs"].append({"name": oname, "type": kind, "links": [], "slot_index": i})
        wv = []
        for name, kind, opts in widget_layout(info):
            if name.endswith(":control"):
                wv.append(values.pop(name, "fixed"))
            elif name.endswith(":upload"):
                wv.append("image")
            else:
                wv.append(values.pop(name) if name in values else opts.get("default", _fallback(kind, opts)))
                n_widgets += 2 if opts.get("multiline") else 1
        if values:
            raise KeyError(f"{type_}: unknown widget(s) {sorted(values)}")
        node["widgets_values"] = wv
        props = {"Node name for S&R": type_}
        is_pack = type_.startswith("QRLoRA")
        props["cnr_id"] = PACK_ID if is_pack else "comfy-core"
        models = [{"name": v, "url": self.models[v][0], "directory": self.models[v][1]}
                  for v in wv if isinstance(v, str) and v in self.models]
        if models:
            props["models"] = models
        node["properties"] = props
        if title:
            node["title"] = title
        if color:
            node["color"], node["bgcolor"] = color, _darker(color)
        slots = max(len(node["inputs"]), len(node["outputs"]))
        height = 36 + slots * 22 + n_widgets * 26 + (200 if type_ == "LoadImage" else 0) + (250 if type_ in ("SaveImage", "PreviewImage") else 0) + self.panel_extra.get(type_, 0)
        node["size"] = list(size or [340, height])
        self.nodes.append(node)
        return node

    def link(self, src: dict, out: int | str, dst: dict, inp: str) -> None:
        if isinstance(out, str):
            out = next(i for i, o in enumerate(src["outputs"]) if o["name"] == out)
        slot = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == inp)
        kind = src["outputs"][out]["type"]
        lid = len(self.links) + 1
        self.links.append([lid, src["id"], out, dst["id"], slot, kind])
        src["outputs"][out]["links"].append(lid)
        dst["inputs"][slot]["link"] = lid

    def group(self, title: str, nodes: list[dict], color: str, pad: int = 30) -> None:
        x0 = min(n["pos"][0] for n in nodes) - pad
        y0 = min(n["pos"][1] for n in nodes) - pad - 40
        x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + pad
        y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + pad
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def to_json(self, name: str) -> dict:
        for order, n in enumerate(self.nodes):
            n["order"] = order
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"qr-lora/workflows/{name}")), "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.62, "offset": [120, 160]}, "frontendVersion": "1.27.10"},
                "version": 0.4}


def _fallback(kind: str, opts: dict):
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind, (opts.get("options") or [""])[0])


def _darker(color: str) -> str:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return "#%02x%02x%02x" % (int(r * 0.7), int(g * 0.7), int(b * 0.7))

def link_to_widget(wf: Workflow, src: dict, out: int | str, dst: dict, name: str) -> None:
    """Link into a widget input (a STRING list into Make Training Dataset's texts), as the front end saves it:
    an input slot that names its widget, the widget's value kept in widgets_values. Where the input has no
    widget (0.33's texts) its plain slot is linked."""
    if not any(s["name"] == name for s in dst["inputs"]):
        kind, _ = input_spec(wf.info[dst["type"]], name)
        dst["inputs"].append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
    wf.link(src, out, dst, name)


def add_widget_slots(info: dict, node: dict) -> None:
    """Give `node` an input slot for each of its widgets, after its sockets and in the order the front end makes
    them, as the front end saves a node: a link into a widget names its slot by index, and front ends before 1.49
    take that index as it is (a slot list of only some widgets would point the link at another widget)."""
    have = {s["name"] for s in node["inputs"]}
    for name, kind, opts, _ in ordered_inputs(info):
        if is_widget(kind, opts) and name not in have:
            node["inputs"].append({"name": name, "type": kind, "widget": {"name": name}, "link": None})


# A blueprint is a workflow whose root graph is one node of a subgraph type, defined in definitions.subgraphs
# (what the front end's "Publish subgraph" saves).
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20


def blueprint(name: str, description: str, wf: Workflow, inputs: list, outputs: list, promoted: list) -> dict:
    """A subgraph blueprint of `wf`'s nodes.

    inputs: (name, type, [(node, input name), …]) fed from the subgraph's input node;
    outputs: (name, type, node, output slot) to its output node;
    promoted: (node, widget name[, input name]) shown on the blueprint node itself: a subgraph input linked to
    that widget's input, the form every front end with subgraphs shows as a widget on the node (1.58 turns
    properties.proxyWidgets into such inputs, and loses an entry whose inner node id it had to renumber).
    """
    def uid(what: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qr-lora/subgraphs/{name}/{what}"))

    links = [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
              "type": l[5]} for l in wf.links]
    next_link = len(links) + 1
    sg_inputs, sg_outputs = [], []
    widget_inputs = []
    for node, widget, *label in promoted:
        add_widget_slots(wf.info[node["type"]], node)
        kind, _ = input_spec(wf.info[node["type"]], widget)
        widget_inputs.append((label[0] if label else widget, kind, [(node, widget)]))
    for i, (iname, kind, targets) in enumerate(inputs + widget_inputs):
        ids = []
        for node, inp in targets:
            slot = next(k for k, sl in enumerate(node["inputs"]) if sl["name"] == inp)
            links.append({"id": next_link, "origin_id": SUBGRAPH_INPUT_ID, "origin_slot": i, "target_id": node["id"],
                          "target_slot": slot, "type": kind})
            node["inputs"][slot]["link"] = next_link
            ids.append(next_link)
            next_link += 1
        sg_inputs.append({"id": uid(f"in/{iname}"), "name": iname, "type": kind, "linkIds": ids,
                          "localized_name": iname})
    for j, (oname, kind, node, slot) in enumerate(outputs):
        links.append({"id": next_link, "origin_id": node["id"], "origin_slot": slot, "target_id": SUBGRAPH_OUTPUT_ID,
                      "target_slot": j, "type": kind})
        node["outputs"][slot]["links"].append(next_link)
        sg_outputs.append({"id": uid(f"out/{oname}"), "name": oname, "type": kind, "linkIds": [next_link],
                           "localized_name": oname})
        next_link += 1
    for order, n in enumerate(wf.nodes):
        n["order"] = order
    x0 = min(n["pos"][0] for n in wf.nodes)
    y0 = min(n["pos"][1] for n in wf.nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in wf.nodes)
    sg_id = uid("definition")
    definition = {
        "id": sg_id, "version": 1, "name": name, "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": len(wf.nodes), "lastLinkId": next_link - 1, "lastRerouteId": 0},
        "inputNode": {"id": SUBGRAPH_INPUT_ID, "bounding": [x0 - 220, y0, 120, 40 + 20 * len(sg_inputs)]},
        "outputNode": {"id": SUBGRAPH_OUTPUT_ID, "bounding": [x1 + 100, y0, 120, 40 + 20 * len(outputs)]},
        "inputs": sg_inputs, "outputs": sg_outputs, "widgets": [], "nodes": wf.nodes, "groups": [], "links": links,
        "extra": {}}
    root_id = len(wf.nodes) + 1
    root = {"id": root_id, "type": sg_id, "pos": [0.0, 0.0], "size": [340, 60 + 26 * (len(inputs) + len(promoted))],
            "flags": {}, "order": 0, "mode": 0, "title": name,
            "inputs": [{"name": i["name"], "type": i["type"], "link": None} for i in sg_inputs[:len(inputs)]]
            + [{"name": i["name"], "type": i["type"], "widget": {"name": i["name"]}, "link": None}
               for i in sg_inputs[len(inputs):]],
            "outputs": [{"name": o["name"], "type": o["type"], "links": []} for o in sg_outputs],
            "properties": {"cnr_id": PACK_ID},
            "widgets_values": []}
    return {"id": uid("blueprint"), "revision": 0, "last_node_id": root_id, "last_link_id": 0, "nodes": [root],
            "links": [], "groups": [], "config": {}, "definitions": {"subgraphs": [definition]},
            "extra": {"BlueprintDescription": description}, "version": 0.4}
