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
