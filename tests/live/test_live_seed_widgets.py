"""Seeds that stay put, in ComfyUI's real front end (headless Chromium): a Train ΔR or λ Grid added to the
graph starts with its seed's "control after generate" at fixed, on each ComfyUI version's own front end
(from the schema where /object_info carries it, from js/qr_lora_seed.js where the front end ignores it), and
a workflow that saved another control value keeps it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from comfyui_location import skip_or_fail, skip_or_fail_without_comfyui

skip_or_fail_without_comfyui("the browser tests")
try:
    import playwright.sync_api  # noqa: F401
except ImportError:
    skip_or_fail("the PyPI package 'playwright' is not installed")

CHROMIUM = os.environ.get("QR_LORA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    skip_or_fail("no Chromium binary: install Debian's 'chromium' or set QR_LORA_CHROMIUM")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SEEDED = ("QRLoRATrainDelta", "QRLoRALambdaGrid")


@pytest.fixture(scope="module")
def page(comfy_server):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="qr-lora-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                       viewport={"width": 1600, "height": 1000})
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(comfy_server.url + "/")
        page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph && 'QRLoRATrainDelta' in window.LiteGraph.registered_node_types",
            timeout=180_000)
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


# A node as the node search adds it: LiteGraph.createNode, then into the graph; its seed widget's linked control.
ADD_AND_READ = """(type) => {
    const node = window.LiteGraph.createNode(type);
    window.app.graph.add(node);
    const seed = node.widgets.find(w => w.name === 'seed');
    const control = (seed.linkedWidgets || [])[0];
    return {control: control ? control.value : null, options: control?.options?.values ?? null, id: node.id};
}"""


@pytest.mark.parametrize("node_type", SEEDED)
def test_a_new_node_starts_with_a_fixed_seed(comfy_server, page, node_type):
    page.evaluate("() => window.app.graph.clear()")
    got = page.evaluate(ADD_AND_READ, node_type)
    assert got["control"] == "fixed", (comfy_server.version, got)
    assert "randomize" in got["options"]  # the user can still choose another


def test_a_saved_control_value_is_kept_on_load(comfy_server, page):
    """Loading a workflow whose Train ΔR saved 'increment' keeps it (the extension only sets new nodes)."""
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate(ADD_AND_READ, "QRLoRATrainDelta")
    workflow = page.evaluate("() => window.app.graph.serialize()")
    node = workflow["nodes"][0]
    values = node["widgets_values"]
    index = values.index("fixed")
    values[index] = "increment"
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'seed_kept'); }", workflow)
    page.wait_for_timeout(500)
    value = page.evaluate("""() => {
        const node = window.app.graph.nodes.find(n => n.type === 'QRLoRATrainDelta');
        return node.widgets.find(w => w.name === 'seed').linkedWidgets[0].value;
    }""")
    assert value == "increment", comfy_server.version


# Train ΔR's widget values as a workflow saved them from 2026-11-29 to 2026-12-02 (noise_draws and
# storage_dtype were required then, before seed), and the value each widget must show after loading.
SAVED_2026_11_29 = [400, 0.0002, "Adam", 2, 3, 77, "increment", "logit-normal", "x0", "fp32", "fp16", True,
                    "ΔR only", True, "<c> cat", "old_run", 50, "cosine", 5, 2, 4, False, 10, 6]
EXPECTED = {"steps": 400, "learning_rate": 0.0002, "optimizer": "Adam", "batch_size": 2, "noise_draws": 3,
            "seed": 77, "timestep_sampling": "logit-normal", "loss_space": "x0", "training_dtype": "fp32",
            "storage_dtype": "fp16", "gradient_checkpointing": True, "triangular": True, "trigger_words": "<c> cat",
            "save_name": "old_run", "save_every": 50, "lr_schedule": "cosine", "warmup_steps": 5,
            "gradient_accumulation": 2, "keep_last": 4, "save_training_state": False, "preview_every": 10,
            "preview_steps": 6, "overwrite": False}


def test_a_workflow_saved_with_the_older_widget_order_loads_by_name(comfy_server, page):
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate(ADD_AND_READ, "QRLoRATrainDelta")
    workflow = page.evaluate("() => window.app.graph.serialize()")
    workflow["nodes"][0]["widgets_values"] = SAVED_2026_11_29
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'older_order'); }", workflow)
    page.wait_for_timeout(500)
    shown = page.evaluate("""() => {
        const node = window.app.graph.nodes.find(n => n.type === 'QRLoRATrainDelta');
        const out = Object.fromEntries(node.widgets.map(w => [w.name, w.value]));
        out.control = node.widgets.find(w => w.name === 'seed').linkedWidgets[0].value;
        return out;
    }""")
    assert {k: shown.get(k) for k in EXPECTED} == EXPECTED, comfy_server.version
    assert shown["control"] == "increment"
