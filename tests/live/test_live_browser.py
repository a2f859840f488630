"""ComfyUI's real front end (comfyui-frontend-package) in headless Chromium, driven by Playwright.

Each shipped workflow is loaded as a user's drag-and-drop would (app.loadGraphData):
no missing-node dialog, no schema alert, every widget keeps the file's value, no
node marked with an error other than for a model file the server lacks (the front
end marks such nodes from 1.49) that the node offers for download (properties.models)
or that a shipped workflow trains (a ΔR), no console error from this pack's
extension; a screenshot of each goes to docs/. Deliberately broken workflows must
fail that check on every version whose front end can show the breakage.
Then the SDXL workflow runs (tiny models, as in test_live_prompt) with the page
attached, and the screenshot shows the extension's live panels after a real run.

Needs the PyPI package `playwright` (its driver only: the browser is Debian's
chromium, `playwright install` is never run) and a Chromium binary
($QR_LORA_CHROMIUM, or chromium / chromium-browser on PATH); skipped otherwise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

import pytest

from comfyui_location import skip_or_fail, skip_or_fail_without_comfyui
from workflow_check import FILE_SUFFIXES, FRONTEND_ONLY, WORKFLOW_DIR, unmet_requirement, widget_slots, workflow_files

skip_or_fail_without_comfyui("the browser tests")
try:
    import playwright.sync_api  # noqa: F401
except ImportError:
    skip_or_fail("the PyPI package 'playwright' is not installed")

CHROMIUM = os.environ.get("QR_LORA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    skip_or_fail("no Chromium binary: install Debian's 'chromium' or set QR_LORA_CHROMIUM")

VIEWPORT = {"width": 2400, "height": 1350}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
DEMO_STEPS = 12
PREVIEW_EVERY = 4  # previews after steps 4, 8 and 12 (the screenshot's widgets say so too)
OUR_MARKERS = ("/extensions/qr-lora/", "qr_lora.js", "[qr_lora]")


@pytest.fixture(scope="module")
def browser_page(comfy_server):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="qr-lora-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                       viewport=VIEWPORT)
        page = context.pages[0] if context.pages else context.new_page()
        page.console_log = []
        page.on("console", lambda m: page.console_log.append(
            {"type": m.type, "text": m.text, "url": (m.location or {}).get("url", "")}))
        page.on("pageerror", lambda e: page.console_log.append(
            {"type": "pageerror", "text": f"{e}\n{getattr(e, 'stack', '')}", "url": ""}))
        page.goto(comfy_server.url + "/")
        page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph && 'QRLoRATrainDelta' in window.LiteGraph.registered_node_types",
            timeout=180_000)
        extensions = page.evaluate("() => window.app.extensions.map(e => e.name)")
        assert "qr_lora.ui" in extensions, extensions
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def our_errors(log: list[dict]) -> list[dict]:
    return [e for e in log if e["type"] in ("error", "pageerror")
            and any(m in e["text"] or m in e["url"] for m in OUR_MARKERS)]


def load(page, workflow: dict, name: str) -> None:
    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }", [workflow, name])
    page.wait_for_timeout(800)
    page.evaluate("() => window.app.canvas.setDirty(true, true)")
    page.wait_for_timeout(400)


def zoomed_shot(page, names: list[str], path, scale: float = 1.25) -> None:
    """A legible close-up: the canvas zoomed on the nodes with these types or titles, clipped to them."""
    rect = page.evaluate("""([names, scale]) => {
        const app = window.app, nodes = app.graph.nodes.filter(n => names.includes(n.type) || names.includes(n.title));
        const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 30));
        const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
        const ds = app.canvas.ds, box = app.canvas.canvas.getBoundingClientRect();
        ds.scale = scale;
        ds.offset = [40 / scale - x0, 40 / scale - y0];
        app.canvas.setDirty(true, true);
        return {x: box.left + 20, y: box.top + 20, width: Math.min((x1 - x0) * scale + 40, box.width - 40),
                height: Math.min((y1 - y0) * scale + 40, box.height - 40)};
    }""", [names, scale])
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), clip=rect)


def same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return a == b


def missing_model_files(workflow: dict, object_info: dict) -> dict[int, set[str]]:
    """Per node id, the files its pickers name that the server does not list (absent here: no model is installed)."""
    out: dict[int, set[str]] = {}
    for node in workflow["nodes"]:
        info = object_info.get(node["type"])
        if node["type"] in FRONTEND_ONLY or info is None:
            continue
        for (_, kind, opts), value in zip(widget_slots(info), node.get("widgets_values") or []):
            if (kind == "COMBO" and isinstance(value, str) and value.lower().endswith(FILE_SUFFIXES)
                    and value not in opts.get("options", [])):
                out.setdefault(node["id"], set()).add(value)
    return out


def trained_delta_files(object_info: dict) -> set[str]:
    """The ΔR files the shipped workflows' Train ΔR nodes write (their Load ΔR counterparts name them)."""
    names = [slot[0] for slot in widget_slots(object_info["QRLoRATrainDelta"])]
    out = set()
    for path in workflow_files():
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "QRLoRATrainDelta":
                out.add(dict(zip(names, node["widgets_values"]))["save_name"] + ".safetensors")
    return out


# The front end's missing-model list (pinia store 'missingModel', from 1.49): the nodes it marks for that reason.
MISSING_MODEL_STORE = """(() => {
    const host = [...document.querySelectorAll('body *')].find(e => e.__vue_app__);
    const store = host?.__vue_app__.config.globalProperties.$pinia?._s.get('missingModel');
    return store ? (store.missingModelCandidates ?? []).map(c => String(c.nodeId)) : null;
})()"""


def front_end_problems(page, workflow: dict, name: str, object_info: dict) -> tuple[list[str], dict]:
    """Load `workflow` as a user would; what is wrong with it in the front end, and what the page showed.

    A node the front end marks with an error passes only when it names a model file the server lacks and
    declares that file in properties.models (the front end offers the download): anything else marked is an
    error, and so is a missing file nobody offers.
    """
    start = len(page.console_log)
    try:
        load(page, workflow, name)
    except Exception as e:  # noqa: BLE001  (playwright re-raises the page's error)
        return [f"loading failed: {e}"], {}
    state = page.evaluate(f"""() => ({{
        nodes: window.app.graph.nodes.map(n => ({{id: n.id, type: n.type,
            registered: n.type in window.LiteGraph.registered_node_types, errors: !!n.has_errors}})),
        dialogs: Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText),
        toasts: Array.from(document.querySelectorAll('.p-toast-message')).map(t => t.innerText),
        missingModelNodes: {MISSING_MODEL_STORE},
        saved: window.app.graph.serialize(),
    }})""")
    problems = []
    if len(state["nodes"]) != len(workflow["nodes"]):
        problems.append(f"{len(state['nodes'])} nodes loaded of {len(workflow['nodes'])}")
    problems += [f"#{n['id']} {n['type']}: node type unknown to the front end" for n in state["nodes"]
                 if not n["registered"]]
    problems += [f"a 'missing' dialog: {d}" for d in state["dialogs"] if "missing" in d.lower()]
    problems += [f"alert on load: {t}" for t in state["toasts"] if "invalid" in t.lower() or "error" in t.lower()]
    # A marked node passes when it names model files the server lacks, each offered for download or a ΔR
    # that a shipped train workflow writes (Load ΔR before the first training run).
    missing = {str(i): files for i, files in missing_model_files(workflow, object_info).items()}
    trained = trained_delta_files(object_info)
    by_id = {str(n["id"]): n for n in workflow["nodes"]}
    for n in state["nodes"]:
        node_id = str(n["id"])  # the front end's node ids are strings from 1.49
        if not n["errors"]:
            continue
        if node_id not in missing:
            problems.append(f"#{node_id} {n['type']}: marked with an error, and not for a missing model file")
            continue
        offered = {m["name"] for m in by_id[node_id].get("properties", {}).get("models", [])}
        unexplained = missing[node_id] - offered - trained
        if unexplained:
            problems.append(f"#{node_id} {n['type']}: marked for the missing model file {sorted(unexplained)}, "
                            "which it neither offers for download (properties.models) nor a shipped workflow "
                            "trains")
    # The front end maps each widget value back to the same widget (and keeps it when it saves).
    saved = {str(n["id"]): n for n in state["saved"]["nodes"]}
    for node in workflow["nodes"]:
        if str(node["id"]) not in saved:
            continue
        got = saved[str(node["id"])].get("widgets_values") or []
        want = node.get("widgets_values") or []
        if node["type"] in FRONTEND_ONLY:
            if got[:1] != want[:1]:
                problems.append(f"#{node['id']} {node['type']}: text changed on load")
            continue
        bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got)) if not same_value(w, g)]
        if len(got) != len(want) or bad:  # a count that differs: the file's values sit on the wrong widgets
            problems.append(f"#{node['id']} {node['type']}: widget values changed on load {bad or (want, got)}")
    problems += [f"console: {e}" for e in our_errors(page.console_log[start:])]
    return problems, state


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.stem)
def test_workflow_loads_in_the_real_front_end(comfy_server, browser_page, docs_dir, path):
    workflow = json.loads(path.read_text())
    reason = unmet_requirement(workflow, comfy_server.object_info, comfy_server.version)
    if reason:
        pytest.skip(reason)
    problems, _ = front_end_problems(browser_page, workflow, path.stem, comfy_server.object_info)
    assert not problems, "\n".join(problems)
    browser_page.keyboard.press("Escape")
    browser_page.screenshot(path=str(docs_dir / f"workflow_{path.stem}.png"))


def _sdxl_train_merge() -> dict:
    return _workflow("qr_lora_sdxl_train_merge")


def _node(workflow: dict, node_type: str) -> dict:
    return next(n for n in workflow["nodes"] if n["type"] == node_type)


def test_a_missing_model_file_passes_the_front_end_check(comfy_server, browser_page):
    """The SDXL checkpoint is absent here, as on a new install: the check lets the front end's download offer
    stand (where the front end lists missing models, its list is exactly that loader)."""
    workflow = _sdxl_train_merge()
    loader = _node(workflow, "CheckpointLoaderSimple")
    assert missing_model_files(workflow, comfy_server.object_info) == {loader["id"]: {"sd_xl_base_1.0.safetensors"}}
    problems, state = front_end_problems(browser_page, workflow, "missing_model", comfy_server.object_info)
    assert not problems, "\n".join(problems)
    if state["missingModelNodes"] is not None:
        assert set(state["missingModelNodes"]) == {str(loader["id"])}, state["missingModelNodes"]
    browser_page.keyboard.press("Escape")


def _workflow(name: str) -> dict:
    return json.loads((WORKFLOW_DIR / f"{name}.json").read_text())


def _unknown_node() -> tuple[dict, str]:
    workflow = _sdxl_train_merge()
    _node(workflow, "QRLoRAMergeDeltas")["type"] = "QRLoRANoSuchNode"
    return workflow, "node type unknown"


def _widget_value_dropped() -> tuple[dict, str]:
    workflow = _sdxl_train_merge()
    del _node(workflow, "KSampler")["widgets_values"][2]  # steps: the later values shift onto other widgets
    return workflow, "KSampler: widget values changed"


def _download_not_offered() -> tuple[dict, str]:
    workflow = _sdxl_train_merge()
    del _node(workflow, "CheckpointLoaderSimple")["properties"]["models"]
    return workflow, "neither offers for download"


def _delta_nobody_trains() -> tuple[dict, str]:
    workflow = _workflow("qr_lora_sdxl_use_trained")
    _node(workflow, "QRLoRALoadDelta")["widgets_values"][0] = "trained_by_no_workflow.safetensors"
    return workflow, "nor a shipped workflow trains"


MARKED_ONLY = (_download_not_offered, _delta_nobody_trains)  # shown only where missing models are marked


@pytest.mark.parametrize("breaking", [_unknown_node, _widget_value_dropped, *MARKED_ONLY],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_broken_workflow_fails_the_front_end_check(comfy_server, browser_page, breaking):
    workflow, expected = breaking()
    problems, state = front_end_problems(browser_page, workflow, "broken", comfy_server.object_info)
    for _ in range(2):  # the missing-nodes dialog, then anything under it
        browser_page.keyboard.press("Escape")
    browser_page.evaluate("() => document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")
    if breaking in MARKED_ONLY and state.get("missingModelNodes") is None:
        pytest.skip("this front end marks no node for a missing model (it does from 1.49): nothing to check")
    assert any(expected in p for p in problems), problems


def test_extension_panels_after_a_real_run(browser_page, comfy_server, docs_dir):
    """Train ΔR's loss curve, Decompose's cache state, Merge's λ and Load ΔR's metadata, from a real run."""
    from test_live_prompt import small_prompt

    page = browser_page
    start = len(page.console_log)
    workflow = json.loads((WORKFLOW_DIR / "qr_lora_sdxl_train_merge.json").read_text())
    load(page, workflow, "qr_lora_sdxl_train_merge")
    prompt = small_prompt(workflow, comfy_server.object_info, "sdxl")
    for node in prompt.values():
        if node["class_type"] == "QRLoRATrainDelta":
            node["inputs"].update(steps=DEMO_STEPS, save_name=node["inputs"]["save_name"] + "_browser",
                                  preview_every=PREVIEW_EVERY, preview_steps=4)
    answer = page.evaluate("""async (prompt) => {
        const api = window.comfyAPI.api.api;
        const r = await api.fetchApi('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                 body: JSON.stringify({prompt, client_id: api.clientId})});
        return {status: r.status, body: await r.json()};
    }""", prompt)
    assert answer["status"] == 200, answer
    prompt_id = answer["body"]["prompt_id"]
    deadline = time.monotonic() + 240
    while True:
        history = comfy_server.get(f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            break
        assert time.monotonic() < deadline, comfy_server.log_tail()
        time.sleep(0.5)
    assert history[prompt_id]["status"]["status_str"] == "success", history[prompt_id]["status"]
    trained = [out for nid, out in history[prompt_id]["outputs"].items()
               if prompt[nid]["class_type"] == "QRLoRATrainDelta"]
    assert len(trained) == 2 and all(len(out.get("images", [])) == 1 for out in trained), trained  # the strip
    assert all("3 previews" in out["text"][0] for out in trained), trained
    page.wait_for_timeout(1500)

    panels = page.evaluate("""() => {
        const by = (t) => window.app.graph.nodes.filter(n => n.type === t);
        return {
          train: by('QRLoRATrainDelta').map(n => ({losses: n.qrTrain?.losses?.length ?? 0, step: n.qrTrain?.step,
                                                    total: n.qrTrain?.total, done: n.qrTrain?.done,
                                                    summary: n.qrTrain?.summary ?? []})),
          decompose: by('QRLoRADecompose').map(n => n.qrDecompose ?? null),
          merge: by('QRLoRAMergeDeltas').map(n => n.qrText ?? null),
        };
    }""")
    for t in panels["train"]:
        assert t["losses"] == DEMO_STEPS and t["step"] == t["total"] == DEMO_STEPS and t["done"], t
        assert any("loss" in line for line in t["summary"]), t
    # The panel's state arrives as data (not parsed out of the node's text): a fresh run is a cache miss.
    assert all(d and d["cache"].split()[0] in ("miss", "hit", "recomputed", "off") and d["seconds"] >= 0 and d["rank"] > 0
               for d in panels["decompose"]), panels
    assert all(m for m in panels["merge"]), panels
    page.keyboard.press("Escape")
    page.screenshot(path=str(docs_dir / "ui_after_run_sdxl_train_merge.png"))
    zoomed_shot(page, ["Train content ΔR"], docs_dir / "ui_train_loss_curve.png", 1.1)
    shown = page.evaluate("""() => window.app.graph.nodes.filter(n => n.type === 'QRLoRATrainDelta')
                                 .map(n => (n.imgs || []).length)""")
    assert shown == [1, 1], shown  # the preview strip on each Train ΔR node
    # Room below the panel for the strip, which the front end draws under the node's widgets.
    # Moved to free canvas on top of the others, for a picture of the node alone.
    page.evaluate("""() => { for (const n of window.app.graph.nodes.filter(n => n.title === 'Train content ΔR')) {
                               n.pos = [4000, 0]; n.setSize([n.size[0] * 1.3, n.size[1] + 380]);
                               for (const w of n.widgets) {  // the values this run had (set in its prompt)
                                 if (w.name === 'preview_every') w.value = 4;
                                 if (w.name === 'preview_steps') w.value = 4;
                                 if (w.name === 'steps') w.value = 12; }
                               window.app.graph.bringToFront?.(n) ?? (n.graph?._nodes && n.graph._nodes.push(
                                   ...n.graph._nodes.splice(n.graph._nodes.indexOf(n), 1))); } }""")
    zoomed_shot(page, ["Train content ΔR"], docs_dir / "ui_train_preview_strip.png", 0.75)
    zoomed_shot(page, ["QRLoRADecompose"], docs_dir / "ui_decompose_cache.png")
    zoomed_shot(page, ["QRLoRAMergeDeltas"], docs_dir / "ui_merge_lambdas.png")

    # Load ΔR shows the file's metadata under the picker (the grid workflow names the files just written).
    grid = json.loads((WORKFLOW_DIR / "qr_lora_sdxl_lambda_grid.json").read_text())
    for node in grid["nodes"]:
        if node["type"] == "QRLoRALoadDelta":
            node["widgets_values"][0] = node["widgets_values"][0].replace(".safetensors", "_browser.safetensors")
    page.evaluate("() => window.app.refreshComboInNodes?.()")
    load(page, grid, "qr_lora_sdxl_lambda_grid")
    page.wait_for_function("""() => window.app.graph.nodes.filter(n => n.type === 'QRLoRALoadDelta')
                                 .every(n => n.qrInfo && (n.qrInfo.arch || n.qrInfo.error))""", timeout=20_000)
    infos = page.evaluate("() => window.app.graph.nodes.filter(n => n.type === 'QRLoRALoadDelta').map(n => n.qrInfo)")
    assert [i.get("arch") for i in infos] == ["sdxl", "sdxl"], infos
    assert {i["trigger_words"] for i in infos} == {"<c> dog", "<s> style"}
    page.keyboard.press("Escape")
    zoomed_shot(page, ["QRLoRALoadDelta"], docs_dir / "ui_load_delta_metadata.png")
    errors = our_errors(page.console_log[start:])
    assert not errors, errors


# The front end's blueprint node definitions: the subgraph store's subgraphBlueprints up to 1.49, the node
# definition store's blueprintNodeDefsByName (a Map) in 1.58.
BLUEPRINT_STORES = """(() => {
    const host = [...document.querySelectorAll('body *')].find(e => e.__vue_app__);
    const pinia = host.__vue_app__.config.globalProperties.$pinia;
    const store = pinia._s.get('subgraph'), nodeDefs = pinia._s.get('nodeDef');
    return {store, defs: store.subgraphBlueprints ?? [...(nodeDefs?.blueprintNodeDefsByName?.values?.() ?? [])]};
})()"""


def test_subgraph_blueprints_insert_in_the_real_front_end(browser_page, comfy_server, docs_dir):
    """ComfyUI ≥ 0.8 offers the pack's blueprints ("Subgraph Blueprints"); each inserts as one subgraph node whose
    inner nodes are all known, whose promoted widgets show on it and whose inner widgets keep the file's values.
    Each goes in twice: the second copy's inner nodes are renumbered (1.58 lost proxyWidgets entries so)."""
    import urllib.error

    try:
        listed = comfy_server.get("/global_subgraphs")
    except urllib.error.HTTPError:
        pytest.skip(f"ComfyUI {comfy_server.version} has no subgraph blueprints (no /global_subgraphs route)")
    ours = {e["name"]: i for i, e in listed.items() if e["info"]["node_pack"] == "custom_nodes.qr-lora"}
    names = sorted(ours)
    assert names
    files = {name: json.loads(comfy_server.get(f"/global_subgraphs/{ours[name]}")["data"]) for name in names}
    page = browser_page
    start = len(page.console_log)
    page.evaluate("async () => { await window.app.loadGraphData({last_node_id: 0, last_link_id: 0, nodes: [], "
                  "links: [], groups: [], version: 0.4}); }")
    page.wait_for_function(f"(names) => {{ const {{defs}} = {BLUEPRINT_STORES}; "
                           "const have = defs.map(d => d.display_name); return names.every(n => have.includes(n)); }",
                           arg=names, timeout=30_000)
    inserted = page.evaluate(f"""(names) => {{
        const {{store, defs}} = {BLUEPRINT_STORES}, canvas = window.app.canvas, out = [];
        [...names, ...names].forEach((name, i) => {{
            const def = defs.find(d => d.display_name === name);  // keyed by the server's id
            const bp = JSON.parse(JSON.stringify(store.getBlueprint(def.name)));  // a copy: insertion changes it
            const x = 60 + 520 * i + (i >= names.length ? 3000 : 0);  // the second copies off the picture
            const made = canvas._deserializeItems({{nodes: bp.nodes, subgraphs: bp.definitions?.subgraphs}},
                                                  {{position: [x, 80]}});
            const node = made.nodes.values().next().value;
            out.push({{name, title: node.title, isSubgraph: !!node.subgraph,
                       inner: node.subgraph ? node.subgraph.nodes.map(n => ({{type: n.type, title: n.title,
                           known: n.type in window.LiteGraph.registered_node_types,
                           widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))}})) : [],
                       widgets: (node.widgets || []).map(w => w.name)}});
        }});
        canvas.ds.scale = 1.1; canvas.ds.offset = [20, 20]; canvas.setDirty(true, true);
        return out;
    }}""", names)
    info = comfy_server.object_info
    for node in inserted:
        blueprint = files[node["name"]]
        assert node["isSubgraph"] and node["title"] == node["name"], node
        assert node["inner"] and all(n["known"] for n in node["inner"]), node
        assert any(n["type"].startswith("QRLoRA") for n in node["inner"]), node
        promoted = [s["name"] for s in blueprint["nodes"][0]["inputs"] if "widget" in s]
        assert len(promoted) >= 2 and node["widgets"][:len(promoted)] == promoted, node
        # Inner widgets keep the file's values (a link into a misplaced widget slot moves them: 1.35).
        for want, got in zip(blueprint["definitions"]["subgraphs"][0]["nodes"], node["inner"]):
            names_ = [slot[0] for slot in widget_slots(info[want["type"]])]
            file_values = dict(zip(names_, want["widgets_values"]))
            moved = {k: (v, got["widgets"].get(k)) for k, v in file_values.items()
                     if k in got["widgets"] and not same_value(v, got["widgets"][k])}
            assert not moved, (node["name"], want["type"], moved)
    errors = [e for e in page.console_log[start:] if e["type"] in ("error", "pageerror")
              and ("blueprint" in e["text"].lower() or "subgraph" in e["text"].lower())]
    assert not errors, errors
    page.wait_for_timeout(500)
    page.keyboard.press("Escape")
    page.screenshot(path=str(docs_dir / "ui_subgraph_blueprints.png"), clip={"x": 0, "y": 0, "width": 1300,
                                                                               "height": 520})
