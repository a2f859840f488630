"""What the workflows' notes tell users to do exists and works: the workflows they name ship, the pack nodes they
name are in the workflow (or in the one they point to), and no note asks for what breaks the graph.

Muting or bypassing the Train nodes (Ctrl+M / Ctrl+B), which an older note advised after the first run, removes
their outputs, and Merge's required inputs then fail; the use-trained workflows are the way to generate again.
Whether a use-trained workflow loads the files its train-and-merge workflow saves is checked against the live
nodes (tests/live/test_live_workflows.py::test_use_trained_loads_what_train_merge_saves).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "workflows").glob("*.json"))}
BREAKS_THE_GRAPH = re.compile(r"ctrl\s*\+\s*[mb]\b|\bmut(e|ed|ing)\b|\bbypass", re.IGNORECASE)
WORKFLOW_NAME = re.compile(r"\bqr_lora_\w+\b(?!/)")  # not a folder such as input/qr_lora_dataset/


def notes(workflow: dict) -> list[str]:
    return [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")]


def pack_display_names() -> dict[str, str]:
    """Display name → node id of every pack node, read from the node declarations (no ComfyUI needed)."""
    found = {}
    for path in (ROOT / "nodes").glob("*.py"):
        for node_id, name in re.findall(r'node_id="(\w+)",\s*display_name="([^"]+)"', path.read_text()):
            found[name] = node_id
    return found


def test_every_workflow_explains_itself():
    assert len(WORKFLOWS) >= 10
    assert all(notes(wf) for wf in WORKFLOWS.values()), [n for n, wf in WORKFLOWS.items() if not notes(wf)]
    assert len(pack_display_names()) >= 8


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_note_asks_to_mute_or_bypass_nodes(name):
    for text in notes(WORKFLOWS[name]):
        assert not BREAKS_THE_GRAPH.search(text), f"{name}: {text!r}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_what_a_note_names_exists(name):
    display = pack_display_names()
    for text in notes(WORKFLOWS[name]):
        named = set(WORKFLOW_NAME.findall(text))
        assert named <= set(WORKFLOWS), f"{name}'s note names workflows the pack does not ship: {named - set(WORKFLOWS)}"
        # A pack node named in full is in this workflow or in one the note points to.
        reachable = {n["type"] for wf in [name, *named] for n in WORKFLOWS[wf]["nodes"]}
        for title, node_id in display.items():
            if title in text:
                assert node_id in reachable, f"{name}'s note names {title!r}, in none of {[name, *sorted(named)]}"


@pytest.mark.parametrize("name", [n for n in WORKFLOWS if n.endswith("_train_merge")])
def test_a_train_merge_note_points_to_its_use_trained_workflow(name):
    """Every family ships a use-trained workflow, and step 4's note names it."""
    use = name.removesuffix("_train_merge") + "_use_trained"
    text = "\n".join(notes(WORKFLOWS[name]))
    assert use in WORKFLOWS, f"{name}'s family has no {use}"
    assert f"'{use}'" in text, text
    loads = {n["type"] for n in WORKFLOWS[use]["nodes"]}
    assert "QRLoRALoadDelta" in loads and "QRLoRATrainDelta" not in loads


def readme_memory_table() -> dict[str, tuple[str, str]]:
    """README "Your first workflow": workflow → (weights on the GPU, training estimate)."""
    rows = re.findall(r"^\| `(qr_lora_\w+)` \([^)]*\) \| ([^|]+) \| ([^|]+) \|$",
                      (ROOT / "README.md").read_text(), re.MULTILINE)
    return {name: (weights.strip(), train.strip()) for name, weights, train in rows}


def test_each_train_merge_note_gives_the_readmes_memory_estimate():
    """One set of figures: step 1's note says what the README's table says, and calls it an estimate."""
    table = readme_memory_table()
    assert set(table) == {n for n in WORKFLOWS if n.endswith("_train_merge")}
    for name, (weights, train) in table.items():
        text = notes(WORKFLOWS[name])[0]
        assert f"{weights} of weights" in text and f"needs {train.split(' (')[0]}" in text, (name, text)
        assert "not yet measured" in text
