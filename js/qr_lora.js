// QR-LoRA front-end extension (served from WEB_DIRECTORY = ./js).
//
// Uses only the public extension API: app.registerExtension, the node-type
// hooks (beforeRegisterNodeDef: onNodeCreated / onExecuted / onConfigure), a canvas
// widget per node (addCustomWidget)
// and api events. Nothing of the front end's internals is patched.
//
// - Train ΔR: live loss curve, step and ETA from `qr_lora.train_progress`
//   events (nodes/services/server.py); the final curve stays after the run.
// - Decompose: cache state (hit / miss) and time of the last run.
// - Merge ΔR: the λ values, large.
// - Load ΔR: the file's architecture, rank and trigger words under the picker
//   (GET /qr_lora/delta_info, nodes/services/server.py).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TRAIN = "QRLoRATrainDelta";
const DECOMPOSE = "QRLoRADecompose";
const MERGE = "QRLoRAMergeDeltas";
const LOAD = "QRLoRALoadDelta";
const PROGRESS_EVENT = "qr_lora.train_progress";

const PAD = 6;
const PANEL = "qr_lora_panel";
const LINE = 15;
const CURVE_H = 96;

function fmtTime(s) {
  if (s == null || !isFinite(s)) return "…";
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function fmtLoss(v) {
  return v == null || !isFinite(v) ? "–" : v < 0.001 ? v.toExponential(2) : v.toFixed(4);
}

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

// Grow the node (never shrink it) when its panel needs more room than it has, and repaint the panel.
function fitNode(node) {
  const min = node.computeSize?.();
  if (min && node.size[1] < min[1]) {
    node.setSize([Math.max(node.size[0], min[0]), min[1]]);
  }
  node.setDirtyCanvas?.(true, true);
  app.canvas?.setDirty?.(true, true);  // a node inside a subgraph does not reach the canvas itself (1.27)
  // Vue nodes (Comfy.VueNodes.Enabled) draw a canvas widget on a canvas of its own, again only when
  // triggerDraw is called: a dirty graph canvas does not repaint it.
  node.widgets?.find((w) => w.name === PANEL)?.triggerDraw?.();
}

// The panel is a canvas widget of its own (not serialized, not sent to the server), so the
// front end's layout gives it its place among the node's widgets.
function addPanelWidget(node, panel) {
  if (node.widgets?.some((w) => w.name === PANEL)) return;
  node.addCustomWidget({
    name: PANEL,
    type: PANEL,
    value: null,
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      let h = 0;
      try { h = panel(node).height; } catch { h = 0; }
      return [width ?? node.size[0], h + 2 * PAD];
    },
    draw(ctx, n, width, y) {
      try {
        const p = panel(n);
        p.draw(ctx, PAD + 6, y + PAD, (width ?? n.size[0]) - 2 * PAD - 12);
        n.qrPanelShown = p.shown ?? true;  // what the panel last put on screen (the browser tests read it)
      } catch (e) {
        if (!n.qrDrawError) { n.qrDrawError = true; console.warn("[qr_lora] panel:", e); }
      }
    },
  });
}

function drawLines(ctx, lines, x, y, width) {
  ctx.save();
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  for (const [i, line] of lines.entries()) {
    const [text, color, font] = Array.isArray(line) ? line : [line];
    ctx.font = font ?? "12px sans-serif";
    ctx.fillStyle = color ?? "#ccc";
    let t = String(text);
    while (t.length > 4 && ctx.measureText(t).width > width) t = t.slice(0, -2);
    if (t !== String(text)) t = t.slice(0, -1) + "…";
    ctx.fillText(t, x, y + i * LINE);
  }
  ctx.restore();
}

function drawCurve(ctx, losses, x, y, w, h, done) {
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.strokeStyle = "#555";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.fill();
  ctx.stroke();
  const vals = losses.filter((v) => v != null && isFinite(v));
  if (vals.length > 1) {
    let lo = Math.min(...vals);
    let hi = Math.max(...vals);
    if (hi - lo < 1e-12) { hi += 1e-6; lo -= 1e-6; }
    const px = (i) => x + 2 + (i / Math.max(losses.length - 1, 1)) * (w - 4);
    const py = (v) => y + h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    // raw loss
    ctx.strokeStyle = "rgba(120,170,255,0.45)";
    ctx.beginPath();
    let started = false;
    losses.forEach((v, i) => {
      if (v == null || !isFinite(v)) return;
      if (!started) { ctx.moveTo(px(i), py(v)); started = true; } else ctx.lineTo(px(i), py(v));
    });
    ctx.stroke();
    // moving average (what to read: single-image losses are noisy by nature)
    const k = Math.max(1, Math.round(losses.length / 25));
    ctx.strokeStyle = done ? "#7d7" : "#fc6";
    ctx.lineWidth = 2;
    ctx.beginPath();
    started = false;
    let sum = 0, n = 0;
    const win = [];
    losses.forEach((v, i) => {
      if (v == null || !isFinite(v)) return;
      win.push(v); sum += v; n++;
      if (win.length > k) { sum -= win.shift(); n--; }
      const m = sum / n;
      if (!started) { ctx.moveTo(px(i), py(m)); started = true; } else ctx.lineTo(px(i), py(m));
    });
    ctx.stroke();
    ctx.font = "10px sans-serif";
    ctx.fillStyle = "#999";
    ctx.textBaseline = "top";
    ctx.fillText(fmtLoss(hi), x + 3, y + 2);
    ctx.textBaseline = "bottom";
    ctx.fillText(fmtLoss(lo), x + 3, y + h - 2);
  } else {
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#888";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("loss curve appears when training starts", x + w / 2, y + h / 2);
  }
  ctx.restore();
}

// A node by the id the server runs it under: inside subgraphs that is the path of node ids from the root
// graph ("8:7": node 7 of the subgraph that node 8 instantiates). The front end resolves such ids with
// helpers it does not hand to extensions (not on app or comfyAPI, 1.27 to 1.58), so the path is walked here.
function findNode(id) {
  let graph = app.rootGraph ?? app.graph;
  if (!graph || id == null) return null;
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;  // set on subgraph nodes only
  }
  return node;
}

function textOf(message) {
  const t = message?.text;
  if (t == null) return [];
  return (Array.isArray(t) ? t : [t]).join("\n").split("\n").filter((l) => l.trim());
}

// ---------------------------------------------------------------------------- per-node panels

const panels = {
  [TRAIN](node) {
    const st = node.qrTrain ?? {};
    const losses = st.losses ?? [];
    const lines = [];
    if (st.total) {
      if (st.done) {
        lines.push([`done: ${st.total} steps · loss ${fmtLoss(losses[0])} → ${fmtLoss(losses.at(-1))}`, "#7d7"]);
      } else {
        const pct = Math.floor((100 * st.step) / st.total);
        lines.push([`step ${st.step}/${st.total} (${pct}%) · loss ${fmtLoss(st.loss)} · ETA ${fmtTime(st.eta)}`, "#fc6"]);
      }
    } else {
      lines.push(["not trained yet in this session", "#888"]);
    }
    for (const l of st.summary ?? []) lines.push([l, "#aaa", "11px sans-serif"]);
    return { height: CURVE_H + PAD + lines.length * LINE, shown: { losses: losses.length, done: !!st.done },
      draw(ctx, x, y, w) {
        drawCurve(ctx, losses, x, y, w, CURVE_H, st.done);
        drawLines(ctx, lines, x, y + CURVE_H + PAD, w);
      } };
  },

  [DECOMPOSE](node) {
    const st = node.qrDecompose;
    let lines;
    if (!st) {
      lines = [["basis: not computed in this session", "#888"]];
    } else {
      const { cache, seconds, rank, method, targets } = st;
      lines = [
        [`cache ${cache} · ${seconds.toFixed(2)} s`, cache.startsWith("hit") ? "#7d7" : "#fc6", "bold 13px sans-serif"],
        ...`${targets}\nrank ${rank}, method ${method}`.split("\n").map((l) => [l, "#aaa", "11px sans-serif"]),
      ];
    }
    return { height: lines.length * LINE, draw(ctx, x, y, w) { drawLines(ctx, lines, x, y, w); } };
  },

  [MERGE](node) {
    const f = (v) => (typeof v === "number" ? v.toFixed(2) : "–");
    const big = "bold 16px sans-serif";
    const lines = [
      [`λc (content) = ${f(widgetValue(node, "lambda_content"))}`, "#9cf", big],
      [`λs (style)   = ${f(widgetValue(node, "lambda_style"))}`, "#f9c", big],
    ];
    for (const i of [1, 2]) {
      const inp = node.inputs?.find((s) => s.name === `extra_${i}`);
      if (inp?.link != null) lines.push([`λ${i} (extra ${i}) = ${f(widgetValue(node, `lambda_extra_${i}`))}`, "#fd8", big]);
    }
    for (const l of node.qrText ?? []) lines.push([l, "#aaa", "11px sans-serif"]);
    return { height: lines.length * (LINE + 4), draw(ctx, x, y, w) {
      ctx.save();
      lines.forEach((l, i) => drawLines(ctx, [l], x, y + i * (LINE + 4), w));
      ctx.restore();
    } };
  },

  [LOAD](node) {
    const info = node.qrInfo;
    let lines;
    if (!info) lines = [["…", "#888"]];
    else if (info.error) lines = [[info.error.split(":")[0] === info.file ? info.error : `⚠ ${info.error}`, "#e88", "11px sans-serif"]];
    else {
      const tr = info.training ?? {};
      lines = [
        [`${(info.arch ?? "?").toUpperCase()} · rank ${info.rank ?? "?"} · ${info.targets ?? "?"} targets (${info.preset ?? "?"})`, "#9cf"],
        [`trigger words: ${info.trigger_words || "—"}`, "#fc6"],
        [[tr.steps_done ?? tr.steps ? `${tr.steps_done ?? tr.steps} steps` : null, tr.lr ? `lr ${tr.lr}` : null,
          tr.final_loss != null ? `final loss ${fmtLoss(tr.final_loss)}` : null, info.size_mb != null ? `${info.size_mb} MB` : null]
          .filter(Boolean).join(" · ") || (info.mode ?? ""), "#aaa", "11px sans-serif"],
      ];
    }
    return { height: lines.length * LINE, draw(ctx, x, y, w) { drawLines(ctx, lines, x, y, w); } };
  },
};

async function refreshDeltaInfo(node) {
  const file = widgetValue(node, "delta_file");
  if (!file) { node.qrInfo = { error: "no ΔR file in models/qr_lora yet" }; node.setDirtyCanvas?.(true, true); return; }
  if (node.qrInfoFile === file && node.qrInfo) return;
  node.qrInfoFile = file;
  try {
    const r = await api.fetchApi(`/qr_lora/delta_info?file=${encodeURIComponent(file)}`);
    node.qrInfo = r.ok ? await r.json() : { error: `HTTP ${r.status}` };
  } catch (e) {
    node.qrInfo = { error: String(e?.message ?? e) };
  }
  fitNode(node);
}

// The front end shows a node's live previews in place of its output images for as long as it keeps them,
// and Vue nodes show them twice (as the live preview and as the node's images). Train ΔR's last live preview
// is the strip it then returns as its output, so once that output arrives the live previews are dropped and
// the node's views are handed the output again (a new object, so that they look again). The front end's
// node-output store has no extension API: it is reached through pinia where it is there (1.27 to 1.58);
// elsewhere the previews stay.
function nodeOutputStore() {
  const pinia = app.extensionManager?._p
    ?? document.querySelector("#vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
  return pinia?._s?.get?.("nodeOutput");
}

function showOutputNotPreviews(executionId, node, output) {
  const store = nodeOutputStore();
  if (!store?.setNodeOutputsByExecutionId) return;
  const inSubgraph = node.graph && node.graph !== (app.rootGraph ?? app.graph);
  if (store.revokePreviewsByLocatorId) {  // at once (revokePreviewsByExecutionId waits 400 ms from 1.4x)
    store.revokePreviewsByLocatorId(inSubgraph ? `${node.graph.id}:${node.id}` : String(node.id));
  } else {
    store.revokePreviewsByExecutionId?.(executionId);
  }
  setTimeout(() => store.setNodeOutputsByExecutionId(executionId, { ...output, images: [...output.images] }), 500);
}

function onExecuted(event) {
  const id = String(event.detail?.display_node ?? event.detail?.node);
  const output = event.detail?.output;
  const node = findNode(id);
  if (!output?.images?.length || !isTrain(node)) return;
  try { showOutputNotPreviews(id, node, output); } catch (e) { console.warn("[qr_lora] previews:", e); }
}

function isTrain(node) {
  return node != null && (node.comfyClass === TRAIN || node.type === TRAIN);
}

function onProgress(event) {
  const d = event.detail ?? {};
  const node = findNode(d.node);
  if (!isTrain(node)) return;
  const st = node.qrTrain && !node.qrTrain.done ? node.qrTrain : { losses: [] };
  const incoming = Array.isArray(d.losses) ? d.losses : [d.loss];
  const first = d.step - incoming.length + 1; // step of incoming[0]
  if (first <= 1) st.losses = [];
  st.losses.push(...incoming);
  Object.assign(st, { step: d.step, total: d.total, loss: d.loss, eta: d.eta_s, done: d.step >= d.total, summary: [] });
  node.qrTrain = st;
  fitNode(node);
}

app.registerExtension({
  name: "qr_lora.ui",

  async setup() {
    api.addEventListener(PROGRESS_EVENT, onProgress);
    api.addEventListener("executed", onExecuted);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const panel = panels[nodeData?.name];
    if (!panel) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const text = textOf(message);
      if (nodeData.name === TRAIN) {
        const st = this.qrTrain ?? { losses: [] };
        st.done = true;
        st.total = st.total || st.losses.length;
        st.summary = text;
        this.qrTrain = st;
      } else if (nodeData.name === DECOMPOSE) {
        this.qrDecompose = message?.qr_lora_basis?.[0] ?? null;  // sent as data by nodes/decompose_node.py
      } else {
        this.qrText = text;
      }
      fitNode(this);
      return r;
    };

    const onNodeCreatedPanel = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreatedPanel?.apply(this, arguments);
      addPanelWidget(this, panel);
      return r;
    };

    const onConfigurePanel = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigurePanel?.apply(this, arguments);
      queueMicrotask(() => fitNode(this));
      return r;
    };

    if (nodeData.name === LOAD) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        const w = this.widgets?.find((x) => x.name === "delta_file");
        if (w) {
          const cb = w.callback;
          const node = this;
          w.callback = function () {
            const out = cb?.apply(this, arguments);
            node.qrInfo = null;
            refreshDeltaInfo(node);
            return out;
          };
        }
        queueMicrotask(() => refreshDeltaInfo(this));
        return r;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = onConfigure?.apply(this, arguments);
        this.qrInfo = null;
        this.qrInfoFile = null;
        queueMicrotask(() => refreshDeltaInfo(this));
        return r;
      };
    }

  },
});
