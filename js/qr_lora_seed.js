// Seeds that stay put, and Train ΔR widgets from workflows saved with an older widget order.
//
// 1. A new Train ΔR or λ Grid node starts with its seed's "control after generate" at "fixed", so queueing
//    again reruns nothing unless the user changes something (a randomized seed would retrain a Train ΔR on
//    every queue). ComfyUI versions whose node schema can say so (io.ControlAfterGenerate: nodes/seeds.py)
//    tell front ends that read it through /object_info; older front ends start every INT named "seed" at
//    "randomize" whatever the schema says, and this sets it. A node loaded from a workflow or pasted gets its
//    saved value after this runs (the front end configures a node after creating it): a user's choice is kept.
// 2. Workflows save widget values by position. From 2026-11-29 to 2026-12-02 Train ΔR had noise_draws and
//    storage_dtype among its required inputs, before seed; they are optional now (API prompts saved before
//    them validate again), which moves their widgets behind save_every. A workflow of those days is read by
//    name here, so every value lands on its own widget.

import { app } from "../../scripts/app.js";

const TRAIN = "QRLoRATrainDelta";
const SEEDED = new Set([TRAIN, "QRLoRALambdaGrid"]);
const CONTROLS = ["fixed", "increment", "decrement", "randomize"];
// Train ΔR's widget values as saved between 2026-11-29 and 2026-12-02 ("control" = the seed's control).
const TRAIN_2026_11_29 = ["steps", "learning_rate", "optimizer", "batch_size", "noise_draws", "seed", "control",
  "timestep_sampling", "loss_space", "training_dtype", "storage_dtype", "gradient_checkpointing", "mode",
  "triangular", "trigger_words", "save_name", "save_every", "lr_schedule", "warmup_steps",
  "gradient_accumulation", "keep_last", "save_training_state", "preview_every", "preview_steps"];

// The seed's control widget: the first widget linked to it, in every front end from 1.27 to 1.49.
function seedControl(node) {
  return node.widgets?.find((w) => w.name === "seed")?.linkedWidgets?.[0] ?? null;
}

function isTrain20261129(values) {
  return Array.isArray(values) && values.length === TRAIN_2026_11_29.length && typeof values[4] === "number"
    && typeof values[5] === "number" && CONTROLS.includes(values[6]);
}

function restoreByName(node, values) {
  TRAIN_2026_11_29.forEach((name, i) => {
    const widget = name === "control" ? seedControl(node) : node.widgets?.find((w) => w.name === name);
    if (widget) widget.value = values[i];
  });
}

app.registerExtension({
  name: "qr_lora.fixed_seeds",
  nodeCreated(node) {
    if (!SEEDED.has(node.comfyClass ?? node.type)) return;
    const control = seedControl(node);
    if (control && control.value !== "fixed") control.value = "fixed";
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== TRAIN) return;
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const result = onConfigure?.apply(this, arguments);
      if (isTrain20261129(info?.widgets_values)) restoreByName(this, info.widgets_values);
      return result;
    };
  },
});
