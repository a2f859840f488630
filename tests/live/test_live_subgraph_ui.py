"""Train ΔR's live panel in the front end users have now: inside a subgraph (one made around the node, and the
pack's own "Train ΔR from an image" blueprint), with Vue nodes off and on (setting Comfy.VueNodes.Enabled).

A tiny training runs from the page (the graph the front end builds, as its Run button sends it) while the
canvas shows the Train ΔR node inside its subgraph; then the node holds every step's loss, its panel last drew
all of them (node.qrPanelShown, recorded by js/qr_lora.js each time it draws), and the preview strip shows once.
Runs against each ComfyUI's own front end and, in .ci/run, the newest (QR_LORA_FRONTEND_ROOT); skipped where
the front end has no subgraphs, or where its Vue nodes draw no extension canvas widget at all.
"""

from __future__ import annotations

import json
import time

import pytest

from test_live_browser import browser_page, our_errors  # noqa: F401  (browser_page: the page fixture)
from workflow_check import PACK_DIR

STEPS = 8
PREVIEW_EVERY = 4  # two previews: the strip
VUE_NODES = "Comfy.VueNodes.Enabled"


def train_blueprint() -> dict:
    """The pack's blueprint that trains one ΔR (found by what it holds: the files' names are not its contract)."""
    for path in sorted((PACK_DIR / "subgraphs").glob("*.json")):
        blueprint = json.loads(path.read_text())
        inner = blueprint["definitions"]["subgraphs"][0]["nodes"]
        if any(n["type"] == "QRLoRATrainDelta" for n in inner):
            return blueprint
    raise AssertionError("no subgraph blueprint with a Train ΔR node in subgraphs/")


# Builds the graph (tiny test models), puts Train ΔR in a subgraph, opens that subgraph on the canvas and sends
# the prompt the front end builds (its own execution ids: "<subgraph node>:<inner node>"). The only change to
# that prompt: VAEEncode runs as the test pack's stand-in (the tiny models' latent channels).
BUILD_AND_RUN = r"""async ([mode, steps, previewEvery, saveName, blueprint]) => {
  const app = window.app, LG = window.LiteGraph;
  await app.loadGraphData({last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], version: 0.4});
  const g = app.graph;
  const add = (type, pos, values = {}) => {
    const n = LG.createNode(type); n.pos = pos; g.add(n); setWidgets(n, values); return n;
  };
  const setWidgets = (n, values) => {
    for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v;
  };
  const link = (a, slot, b, name) => a.connect(slot, b, b.findInputSlot(name));
  const ck = add('QRTestTinyCheckpoint', [0, 0], {arch: 'sdxl'});
  const dec = add('QRLoRADecompose', [350, 0], {rank: 4});
  const te = add('QRTestTextEncode', [0, 250], {text: 'a photo of a <c> dog'});
  link(ck, 0, dec, 'model'); link(ck, 1, te, 'clip');
  const inner = {training_dtype: 'fp32', preview_every: previewEvery, preview_steps: 2};
  const promoted = {steps, learning_rate: 0.001, save_name: saveName};  // on the blueprint node itself
  let host, train;
  if (mode === 'blueprint') {
    const img = add('EmptyImage', [0, 450], {width: 64, height: 64});
    const made = app.canvas._deserializeItems({nodes: blueprint.nodes, subgraphs: blueprint.definitions.subgraphs},
                                              {position: [800, 0]});
    host = made.nodes.values().next().value;
    train = host.subgraph.nodes.find(n => n.type === 'QRLoRATrainDelta');
    setWidgets(train, inner);
    setWidgets(host, promoted);
    for (const n of host.subgraph.nodes.filter(n => n.type === 'ImageScale')) setWidgets(n, {width: 64, height: 64});
    link(dec, 1, host, 'model'); link(dec, 0, host, 'basis'); link(img, 0, host, 'image');
    link(ck, 2, host, 'vae'); link(te, 0, host, 'positive');
  } else {
    const lat = add('EmptyLatentImage', [0, 450], {width: 64, height: 64});
    const t = add('QRLoRATrainDelta', [800, 0], {...inner, ...promoted});
    link(dec, 1, t, 'model'); link(dec, 0, t, 'basis'); link(lat, 0, t, 'latent'); link(te, 0, t, 'positive');
    link(ck, 2, t, 'vae');
    host = g.convertToSubgraph(new Set([t])).node;
    train = host.subgraph.nodes.find(n => n.type === 'QRLoRATrainDelta');  // the node moved in: a new object
  }
  app.canvas.setGraph(host.subgraph);
  await new Promise(r => setTimeout(r, 300));
  app.canvas.ds.scale = 0.6;
  app.canvas.centerOnNode?.(train);
  app.canvas.setDirty(true, true);
  window.__qrTestTrain = train;
  const {output} = await app.graphToPrompt();
  for (const n of Object.values(output)) if (n.class_type === 'VAEEncode') n.class_type = 'QRTestVAEEncode';
  const api = window.comfyAPI.api.api;
  const r = await api.fetchApi('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                           body: JSON.stringify({prompt: output, client_id: api.clientId})});
  return {status: r.status, body: await r.json(), trainExecutionId: `${host.id}:${train.id}`,
          promptIds: Object.keys(output)};
}"""

STATE = """() => {
  const n = window.__qrTestTrain, st = n.qrTrain;
  const el = document.querySelector(`[data-node-id="${n.id}"]`);
  return {losses: st?.losses?.length ?? 0, done: !!st?.done, summary: st?.summary ?? [], shown: n.qrPanelShown ?? null,
          imgs: (n.imgs || []).length, vueImgs: el ? el.querySelectorAll('img').length : null,
          vueCanvases: el ? el.querySelectorAll('canvas').length : null};
}"""


@pytest.fixture
def page(browser_page):  # noqa: F811
    if not browser_page.evaluate("() => typeof window.app.graph.convertToSubgraph === 'function'"):
        pytest.skip("this front end has no subgraphs (LGraph.convertToSubgraph)")
    yield browser_page
    browser_page.keyboard.press("Escape")


def set_vue_nodes(page, on: bool):
    """Switch Vue nodes; returns the value to restore (settings persist on the server for the later tests)."""
    before = page.evaluate(f"() => window.app.extensionManager.setting.get('{VUE_NODES}')")
    if before is None:
        pytest.skip(f"this front end has no Vue nodes (no setting {VUE_NODES})")
    page.evaluate(f"async (on) => {{ await window.app.extensionManager.setting.set('{VUE_NODES}', on); }}", on)
    return before


@pytest.mark.parametrize("vue", [False, True], ids=["canvas", "vue_nodes"])
@pytest.mark.parametrize("mode", ["subgraph", "blueprint"])
def test_loss_curve_inside_a_subgraph(page, comfy_server, mode, vue):
    start = len(page.console_log)
    restore = set_vue_nodes(page, vue)
    try:
        run = page.evaluate(BUILD_AND_RUN, [mode, STEPS, PREVIEW_EVERY, f"subgraph_ui_{mode}_{vue:d}_{time.time_ns()}",
                                            train_blueprint()])
        assert run["status"] == 200, run
        assert run["trainExecutionId"] in run["promptIds"], run  # the progress events carry this id
        # Done: the node's output arrived (onExecuted writes the summary); then the strip replaces the previews.
        page.wait_for_function("() => (window.__qrTestTrain.qrTrain?.summary ?? []).length > 0", timeout=180_000)
        page.wait_for_timeout(1500)
        state = page.evaluate(STATE)
        if vue and not state["vueCanvases"]:
            pytest.skip("this front end's Vue nodes give extension canvas widgets no canvas (experimental in 1.27)")
        assert state["losses"] == STEPS and state["done"], state
        assert any("loss" in line for line in state["summary"]), state
        # What the panel last drew: every loss of the finished run (with Vue nodes only a repaint shows that).
        assert state["shown"] == {"losses": STEPS, "done": True}, state
        # The strip, once (Vue nodes draw the node's images themselves; the canvas draws node.imgs).
        assert (state["vueImgs"] if vue else state["imgs"]) == 1, state
    finally:
        page.evaluate(f"async (v) => {{ await window.app.extensionManager.setting.set('{VUE_NODES}', v); }}", restore)
        page.evaluate("() => window.app.canvas.setGraph(window.app.rootGraph ?? window.app.graph)")
    errors = our_errors(page.console_log[start:])
    assert not errors, errors
