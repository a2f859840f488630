// Seeds that stay put: a new Train ΔR or λ Grid node starts with its seed's "control after generate" at
// "fixed", so queueing again reruns nothing unless the user changes something (a randomized seed would
// retrain a Train ΔR on every queue).
//
// ComfyUI versions whose node schema can say so (io.ControlAfterGenerate: nodes/seeds.py) tell front ends
// that read it through /object_info; older front ends start every INT named "seed" at "randomize" whatever
// the schema says, and this sets it. A node loaded from a workflow or pasted gets its saved value after
// this runs (the front end configures a node after creating it), so a user's choice is kept.

import { app } from "../../scripts/app.js";

const SEEDED = new Set(["QRLoRATrainDelta", "QRLoRALambdaGrid"]);
const CONTROLS = ["fixed", "increment", "decrement", "randomize"];

function seedControl(node) {
  const seed = node.widgets?.find((w) => w.name === "seed");
  return seed?.linkedWidgets?.find((w) => CONTROLS.includes(w.value)) ?? null;
}

app.registerExtension({
  name: "qr_lora.fixed_seeds",
  nodeCreated(node) {
    if (!SEEDED.has(node.comfyClass ?? node.type)) return;
    const control = seedControl(node);
    if (control && control.value !== "fixed") control.value = "fixed";
  },
});
