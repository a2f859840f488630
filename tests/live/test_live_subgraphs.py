"""The pack's subgraph blueprints (subgraphs/*.json) as ComfyUI ≥ 0.8 serves them, against the live nodes.

ComfyUI 0.8 finds custom_nodes/<pack>/subgraphs/*.json (app/subgraph_manager.py), lists them at
GET /global_subgraphs (id → name, source, node pack) and serves each file's text at /global_subgraphs/{id};
the front end then offers them under "Subgraph Blueprints". ComfyUI 0.3.64 has no such route: skipped there.
"""

from __future__ import annotations

import json
import urllib.error

import pytest

from workflow_check import PACK_DIR, compatible, inputs_in_order, spec_of, validate, widget_slots

SUBGRAPH_DIR = PACK_DIR / "subgraphs"
BLUEPRINT_FILES = sorted(SUBGRAPH_DIR.glob("*.json"))
PACK_ENTRY = "custom_nodes.qr-lora"  # the server names a blueprint's pack by its folder under custom_nodes


def served(comfy_server) -> dict:
    """The pack's entries of GET /global_subgraphs by name; skips on a ComfyUI without blueprints."""
    try:
        listed = comfy_server.get("/global_subgraphs")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            pytest.skip(f"ComfyUI {comfy_server.version} has no subgraph blueprints (no /global_subgraphs route; "
                        "packs' subgraphs/ are served from ComfyUI 0.8 on)")
        raise
    return {e["name"]: dict(e, id=i) for i, e in listed.items() if e["info"]["node_pack"] == PACK_ENTRY}


def test_the_server_lists_every_blueprint_of_the_pack(comfy_server):
    entries = served(comfy_server)
    assert len(BLUEPRINT_FILES) >= 2
    assert set(entries) == {p.stem for p in BLUEPRINT_FILES}, entries
    assert all(e["source"] == "custom_node" for e in entries.values())


@pytest.mark.parametrize("path", BLUEPRINT_FILES, ids=lambda p: p.stem)
def test_blueprint_is_served_and_fits_the_live_nodes(comfy_server, path):
    entry = served(comfy_server)[path.stem]
    data = comfy_server.get(f"/global_subgraphs/{entry['id']}")["data"]
    assert data == path.read_text()
    blueprint = json.loads(data)

    # The front end's rule for a blueprint: the root graph is one node of the one subgraph type defined.
    (definition,) = blueprint["definitions"]["subgraphs"]
    (root,) = blueprint["nodes"]
    assert root["type"] == definition["id"]
    assert [(s["name"], s["type"]) for s in root["inputs"]] == [(s["name"], s["type"]) for s in definition["inputs"]]
    assert [(s["name"], s["type"]) for s in root["outputs"]] == [(s["name"], s["type"]) for s in definition["outputs"]]
    assert blueprint["extra"]["BlueprintDescription"]

    # Inside: every node known to the server, widget values valid, inner links type-compatible.
    nodes = {n["id"]: n for n in definition["nodes"]}
    inner = [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]
             for l in definition["links"] if l["origin_id"] in nodes and l["target_id"] in nodes]
    report = validate({"nodes": definition["nodes"], "links": inner}, comfy_server.object_info)
    assert not report.problems, "\n".join(report.problems)
    assert any(t.startswith("QRLoRA") for t in report.node_types)

    # The boundary: each subgraph input feeds inputs of its type, each output comes from an output of its type.
    info = comfy_server.object_info
    for link in definition["links"]:
        if link["origin_id"] == definition["inputNode"]["id"]:
            sg_in = definition["inputs"][link["origin_slot"]]
            target = nodes[link["target_id"]]
            name = target["inputs"][link["target_slot"]]["name"]
            assert link["id"] in sg_in["linkIds"] and target["inputs"][link["target_slot"]]["link"] == link["id"]
            assert compatible(sg_in["type"], spec_of(info[target["type"]], name)[0]), (sg_in, target["type"], name)
        elif link["target_id"] == definition["outputNode"]["id"]:
            sg_out = definition["outputs"][link["target_slot"]]
            source = nodes[link["origin_id"]]
            assert link["id"] in sg_out["linkIds"]
            assert info[source["type"]]["output"][link["origin_slot"]] == sg_out["type"], (sg_out, source["type"])
        else:
            assert link["origin_id"] in nodes and link["target_id"] in nodes, link
    # Widgets shown on the blueprint node: subgraph inputs, each linked to a widget of an inner node (the form
    # every front end with subgraphs shows; properties.proxyWidgets lost entries in 1.58).
    promoted = [s for s in root["inputs"] if "widget" in s]
    assert len(promoted) >= 2 and "proxyWidgets" not in root["properties"], root
    for slot in promoted:
        sg_in = next(s for s in definition["inputs"] if s["name"] == slot["name"])
        for link in (l for l in definition["links"] if l["id"] in sg_in["linkIds"]):
            target = nodes[link["target_id"]]
            widget = target["inputs"][link["target_slot"]].get("widget", {}).get("name")
            assert widget and compatible(sg_in["type"], spec_of(info[target["type"]], widget)[0]), (slot, target)
            # The slot index is where the front end puts that widget's slot (sockets, then widgets in input
            # order): front ends before 1.49 follow target_slot as it is.
            widgets = [n for n, *_ in widget_slots(info[target["type"]]) if ":" not in n]
            sockets = [n for n, *_ in inputs_in_order(info[target["type"]]) if n not in widgets]
            assert [s["name"] for s in target["inputs"]] == sockets + widgets, target["type"]
