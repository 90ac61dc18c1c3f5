// The retain dashboard: a client of the public API (GET /models, /models/{name}/accuracy,
// /models/{name}/versions, /jobs; PUT /models/{name}/serving-version; POST /tasks/{id}/promote),
// written in plain JS with inline SVG: nothing to build, nothing fetched from elsewhere.
//
// Auth: a key entered here is kept in sessionStorage (this tab only) and sent as
// `Authorization: Bearer <key>` on every request; with no key, requests carry no such header (a
// proxy in front may add its own). A 401 answer opens the key prompt.
//
// Stable hooks for tests and scripts: #models [data-model]; #heatmap .row[data-version][data-serving]
// [data-promoted]; #heatmap .cell[data-version][data-task][data-accuracy] (its .value text = the value to three
// decimals, as `retain matrix` prints it); #serving-mark[data-version]; #task-lines circle[data-task]
// [data-version]; #versions tr[data-version] with buttons [data-action=serve|promote]; #jobs
// li[data-job-id][data-status]; text models: #try-text (a form, shown only for them) with #try-text-input and
// #try-text-results li[data-label][data-probability].
"use strict";

const KEY_STORAGE = "retain.apiKey";
const POLL_MS = 1000;
const BASE = new URL(".", location.href); // the API root: the page is served at <root>/ui
const SVG_NS = "http://www.w3.org/2000/svg";
// Accuracy colour ramp (0 red, 0.5 yellow, 1 green); app/reports.py draws PNGs with the same stops.
const RAMP = [[0.0, [215, 48, 39]], [0.5, [254, 224, 139]], [1.0, [26, 152, 80]]];
const TASK_COLOURS = ["#2f5fd0", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#e67700", "#5c940d",
  "#495057", "#364fc7"];
const ACTIVE = new Set(["queued", "running"]);

const state = { model: null, models: [], jobsSignature: null };

class AuthNeeded extends Error {}

// ------------------------------------------------------------------ requests

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, BASE), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    showKeyPrompt(key ? "The server refused this API key (401). Enter another one."
      : "The server needs an API key (401).");
    throw new AuthNeeded("401");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const detail = data && data.detail !== undefined ? data.detail : `${response.status} ${response.statusText}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

const modelPath = (name, rest = "") => `models/${encodeURIComponent(name)}${rest}`;

function setStatus(message, isError = false) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function reportError(error) {
  if (!(error instanceof AuthNeeded)) setStatus(String(error.message || error), true);
}

// ------------------------------------------------------------------ formatting

// Three decimals as Python's f"{x:.3f}" prints them (the CLI's format). toFixed agrees except on exact
// binary ties at the fourth decimal, which are the odd multiples of 1/16: Python rounds those half to even.
function fixed3(x) {
  if (x < 0) return "-" + fixed3(-x);
  const sixteenths = x * 16;
  if (Number.isInteger(sixteenths) && sixteenths % 2 === 1) {
    const below = Math.floor(x * 1000);
    return ((below % 2 === 0 ? below : below + 1) / 1000).toFixed(3);
  }
  return x.toFixed(3);
}

const maybe3 = (x) => (x === null || x === undefined ? "–" : fixed3(x));

function lambdaText(value) {
  if (value === null || value === undefined) return "–";
  return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-2) ? value.toExponential(1) : String(+value.toPrecision(4));
}

function rampColour(value) {
  for (let i = 1; i < RAMP.length; i++) {
    const [high, to] = RAMP[i];
    const [low, from] = RAMP[i - 1];
    if (value <= high || i === RAMP.length - 1) {
      const t = Math.min(1, Math.max(0, (value - low) / (high - low)));
      return from.map((c, k) => Math.round(c + (to[k] - c) * t));
    }
  }
  return RAMP[0][1];
}

const rgb = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
const inkOn = (c) => ((0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255 > 0.55 ? "#1b1f29" : "#ffffff");

function el(tag, attributes = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value)); // booleans as "true" / "false": data-serving="false" is a fact too
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const svgTitle = (text) => el("svg:title", { text });
const taskLabel = (task) => (task.name ? `${task.task_id}: ${task.name}` : `task ${task.task_id}`);
const shorten = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

// ------------------------------------------------------------------ heatmap

function renderHeatmap(matrix) {
  const tasks = matrix.tasks;
  const rows = matrix.rows;
  const labelW = 200, cellW = 84, cellH = 34, headH = 40, markW = 86;
  const width = labelW + tasks.length * cellW + markW;
  const height = headH + rows.length * cellH + 2;
  const svg = el("svg:svg", { id: "heatmap", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `accuracy matrix of ${matrix.model}` });
  svg.append(el("svg:defs", {}, el("svg:pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)" }, el("svg:rect", { width: 2, height: 6, fill: "rgba(0,0,0,0.16)" }))));
  tasks.forEach((task, j) => {
    const x = labelW + j * cellW + cellW / 2;
    svg.append(el("svg:text", { class: "column-label", x, y: headH - 10, "text-anchor": "middle", "font-size": 12,
      "data-task": task.task_id }, shorten(taskLabel(task), 11), svgTitle(taskLabel(task))));
  });
  rows.forEach((row, i) => {
    const y = headH + i * cellH;
    const group = el("svg:g", { class: "row", "data-version": row.model_version, "data-serving": row.serving,
      "data-promoted": row.promoted });
    const label = `v${row.model_version} · ${row.task_name || (row.task_id === null ? "–" : "task " + row.task_id)}`;
    group.append(el("svg:text", { class: row.promoted ? "row-label" : "row-label rejected", x: labelW - 10,
      y: y + cellH / 2 + 4, "text-anchor": "end", "font-size": 13 },
      shorten(label, 22) + (row.promoted ? "" : " · rejected"), svgTitle(label)));
    const byTask = new Map(row.accuracy.map((cell) => [cell.task_id, cell]));
    tasks.forEach((task, j) => {
      const x = labelW + j * cellW;
      const cell = byTask.get(task.task_id);
      const value = cell ? cell.accuracy : null;
      const colour = value === null ? [240, 241, 244] : rampColour(value);
      const g = el("svg:g", { class: value === null ? "cell empty" : "cell", "data-version": row.model_version,
        "data-task": task.task_id, "data-accuracy": value === null ? "" : value });
      g.append(el("svg:rect", { x: x + 1, y: y + 1, width: cellW - 2, height: cellH - 2, rx: 3, fill: rgb(colour) }));
      if (!row.promoted) {
        g.append(el("svg:rect", { x: x + 1, y: y + 1, width: cellW - 2, height: cellH - 2, rx: 3, fill: "url(#hatch)",
          stroke: "#b42318", "stroke-dasharray": "4 3" }));
      }
      g.append(el("svg:text", { class: "value", x: x + cellW / 2, y: y + cellH / 2 + 5, "text-anchor": "middle",
        fill: value === null ? "#98a2b3" : inkOn(colour) }, value === null ? "–" : fixed3(value)));
      if (cell) g.append(svgTitle(`v${row.model_version} on ${taskLabel(task)}: ${fixed3(value)} (n_test ${cell.n_test})`));
      group.append(g);
    });
    if (row.serving) {
      group.append(el("svg:rect", { x: labelW - 1, y: y, width: tasks.length * cellW + 2, height: cellH, fill: "none",
        stroke: "#1d2230", "stroke-width": 2, rx: 4 }));
      group.append(el("svg:g", { id: "serving-mark", "data-version": row.model_version },
        el("svg:text", { x: labelW + tasks.length * cellW + 10, y: y + cellH / 2 + 4, "font-size": 13,
          "font-weight": 600, fill: "#2f5fd0" }, "◀ serving")));
    }
    svg.append(group);
  });
  return svg;
}

// ------------------------------------------------------------------ line chart

function renderTaskLines(matrix) {
  const rows = matrix.rows;
  const width = 660, height = 250, left = 44, right = 170, top = 12, bottom = 30;
  const plotW = width - left - right, plotH = height - top - bottom;
  const xOf = (i) => left + (rows.length === 1 ? plotW / 2 : (i * plotW) / (rows.length - 1));
  const yOf = (a) => top + (1 - a) * plotH;
  const svg = el("svg:svg", { id: "task-lines", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "each task's test accuracy after every update" });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("svg:line", { x1: left, x2: left + plotW, y1: yOf(tick), y2: yOf(tick), stroke: "#e3e6ec" }));
    svg.append(el("svg:text", { x: left - 6, y: yOf(tick) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" },
      tick.toFixed(2)));
  }
  rows.forEach((row, i) => {
    svg.append(el("svg:text", { x: xOf(i), y: height - 10, "text-anchor": "middle", "font-size": 11,
      fill: row.promoted ? "#667085" : "#b42318" }, `v${row.model_version}${row.serving ? " ◀" : ""}`));
  });
  matrix.tasks.forEach((task, t) => {
    const colour = TASK_COLOURS[t % TASK_COLOURS.length];
    const points = [];
    rows.forEach((row, i) => {
      const cell = row.accuracy.find((c) => c.task_id === task.task_id);
      if (cell) points.push({ row, i, accuracy: cell.accuracy });
    });
    const line = points.filter((p) => p.row.promoted); // the lineage users were served; rejected points stand alone
    if (line.length > 1) {
      svg.append(el("svg:polyline", { points: line.map((p) => `${xOf(p.i)},${yOf(p.accuracy)}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 2, "data-task": task.task_id }));
    }
    for (const p of points) {
      svg.append(el("svg:circle", { cx: xOf(p.i), cy: yOf(p.accuracy), r: 4, "data-task": task.task_id,
        "data-version": p.row.model_version, "data-accuracy": p.accuracy,
        fill: p.row.promoted ? colour : "#fff", stroke: colour, "stroke-width": 2 },
        svgTitle(`${taskLabel(task)} after v${p.row.model_version}: ${fixed3(p.accuracy)}${p.row.promoted ? "" : " (rejected)"}`)));
    }
    const ly = top + 6 + t * 18;
    svg.append(el("svg:line", { x1: left + plotW + 16, x2: left + plotW + 34, y1: ly, y2: ly, stroke: colour,
      "stroke-width": 2 }));
    svg.append(el("svg:text", { x: left + plotW + 40, y: ly + 4, "font-size": 12 }, shorten(taskLabel(task), 20)));
  });
  return svg;
}

// ------------------------------------------------------------------ served accuracy (feedback loop)

function renderLiveAccuracy(live) {
  const points = live.history;
  if (!points.length) {
    return el("p", { class: "hint" }, "No labelled predictions yet (POST /feedback, or `retain feedback`).");
  }
  const width = 660, height = 200, left = 44, right = 20, top = 12, bottom = 30;
  const plotW = width - left - right, plotH = height - top - bottom;
  const times = points.map((p) => Date.parse(p.at));
  const first = Math.min(...times), last = Math.max(...times), span = Math.max(last - first, 1);
  const xOf = (t) => left + ((t - first) / span) * plotW;
  const yOf = (a) => top + (1 - a) * plotH;
  const svg = el("svg:svg", { id: "live-accuracy", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "served accuracy over time, updates marked" });
  for (const tick of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: left, x2: left + plotW, y1: yOf(tick), y2: yOf(tick), stroke: "#e3e6ec" }));
    svg.append(el("svg:text", { x: left - 6, y: yOf(tick) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" },
      tick.toFixed(2)));
  }
  for (const update of live.updates) {
    const t = Date.parse(update.at);
    if (t < first || t > last) continue;
    svg.append(el("svg:line", { x1: xOf(t), x2: xOf(t), y1: top, y2: top + plotH, stroke: "#b42318",
      "stroke-dasharray": "4 3", "data-version": update.model_version }, svgTitle(`v${update.model_version} promoted`)));
    svg.append(el("svg:text", { x: xOf(t) + 3, y: top + 10, "font-size": 11, fill: "#b42318" }, `v${update.model_version}`));
  }
  svg.append(el("svg:polyline", { points: points.map((p, i) => `${xOf(times[i])},${yOf(p.accuracy)}`).join(" "),
    fill: "none", stroke: "#1f6feb", "stroke-width": 2 }));
  svg.append(el("svg:text", { x: left, y: height - 8, "font-size": 11, fill: "#667085" },
    `${new Date(first).toLocaleTimeString()} → ${new Date(last).toLocaleTimeString()} (window ${live.window})`));
  return svg;
}

function renderTriggerDecisions(triggers) {
  const list = document.getElementById("trigger-decisions");
  list.replaceChildren(...triggers.decisions.slice(-8).reverse().map((d) =>
    el("li", { class: d.fired ? "fired" : "" },
      `${new Date(d.created_at).toLocaleTimeString()} ${d.trigger} ${d.fired ? "fired" : "waits"}` +
      `${d.task_id ? ` → task ${d.task_id}` : ""}: ${d.reason}`)));
  list.append(el("li", { class: "hint" }, `${triggers.buffered_labels} label(s) buffered`));
}

// ------------------------------------------------------------------ versions

function recipeText(recipe) {
  if (!recipe || Object.keys(recipe).length === 0) return "–";
  const parts = [recipe.label_mode && `labels ${recipe.label_mode}`, recipe.n_samples && `n=${recipe.n_samples}`,
    recipe.consolidation];
  return parts.filter(Boolean).join(" · ");
}

function strategyText(version) {
  const chosen = version.strategy_choice && version.strategy_choice.strategy;
  return chosen ? `${version.strategy || "auto"} → ${chosen}` : version.strategy || "–";
}

function gateCell(version) {
  const gate = version.validation;
  if (!gate) return el("td", { text: "–" });
  if (gate.passed) {
    const drops = Object.values(gate.drops || {});
    return el("td", { class: "gate passed", text: drops.length === 0 ? "passed (no earlier task)"
      : `passed: largest drop ${fixed3(Math.max(...drops))} ≤ ${fixed3(gate.max_forgetting)}` });
  }
  const note = version.promoted ? "; promoted by hand" : "";
  if (gate.not_learnt) { // the new task itself was not learnt: its reason says what to try
    return el("td", { class: "gate tripped", title: gate.not_learnt.reason,
      text: `rejected: task ${gate.not_learnt.task} not learnt (${fixed3(gate.not_learnt.accuracy)} ≤ always `
        + `answering ${gate.not_learnt.majority_label}: ${fixed3(gate.not_learnt.majority_share)})${note}` });
  }
  const falls = (gate.tripped_by || []).map((key) => `task ${key} −${fixed3(gate.drops[key])}`).join(", ");
  return el("td", { class: "gate tripped", text: `rejected: ${falls} > ${fixed3(gate.max_forgetting)}${note}` });
}

function renderVersions(versions) {
  const body = document.querySelector("#versions tbody");
  body.replaceChildren();
  const serving = versions.find((v) => v.serving);
  for (const v of [...versions].reverse()) {
    const actions = el("td", { class: "actions" });
    if (!v.promoted) {
      actions.append(el("button", { type: "button", "data-action": "promote", "data-task": v.task_id,
        "data-version": v.number, title: "Accept this version although the forgetting gate rejected it",
        text: `Promote v${v.number}` }));
    } else if (!v.serving) {
      const back = serving && v.number < serving.number;
      actions.append(el("button", { type: "button", "data-action": "serve", "data-version": v.number,
        text: back ? `Roll back to v${v.number}` : `Serve v${v.number}` }));
    }
    const search = v.lambda_search && v.lambda_search.length ? ` (searched ${v.lambda_search.length})` : "";
    body.append(el("tr", { "data-version": v.number, "data-serving": v.serving, "data-promoted": v.promoted },
      el("td", {}, `v${v.number} `, v.serving ? el("span", { class: "badge serving", text: "serving" })
        : v.promoted ? null : el("span", { class: "badge rejected", text: "rejected" })),
      el("td", { text: v.parent_number ? `v${v.parent_number}` : "–" }),
      el("td", { text: v.task_id === null ? "–" : taskLabel({ task_id: v.task_id, name: v.task_name }) }),
      el("td", { text: strategyText(v), title: (v.strategy_choice && v.strategy_choice.reason) || "" }),
      el("td", { class: "lambda", text: lambdaText(v.ewc_lambda) + search }),
      el("td", { class: "recipe", text: recipeText(v.fisher_recipe),
        title: v.fisher_recipe ? JSON.stringify(v.fisher_recipe, null, 1) : null }),
      gateCell(v),
      actions));
  }
}

async function onVersionAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button || !state.model) return;
  const name = state.model;
  document.querySelectorAll("#versions button").forEach((b) => { b.disabled = true; });
  try {
    if (button.dataset.action === "serve") {
      const number = Number(button.dataset.version);
      const answer = await api(modelPath(name, "/serving-version"), { method: "PUT",
        body: { version: number, reason: "set from the dashboard" } });
      setStatus(`${name} now serves v${answer.serving_version} (was v${answer.previous_version}).`);
    } else {
      const answer = await api(`tasks/${button.dataset.task}/promote`, { method: "POST" });
      setStatus(`${name}: v${answer.model_version} promoted and served (was v${answer.previous_version}).`);
    }
  } catch (error) {
    reportError(error);
  }
  await refreshAll();
}

// ------------------------------------------------------------------ models

function renderModels() {
  const list = document.getElementById("models");
  list.replaceChildren();
  for (const model of state.models) {
    const facts = [model.serving_version ? `serving v${model.serving_version}` : "nothing served yet",
      model.family, `${model.n_tasks} task${model.n_tasks === 1 ? "" : "s"}`];
    list.append(el("li", {}, el("button", { type: "button", "data-model": model.name,
      class: model.name === state.model ? "selected" : null }, model.name, el("small", { text: facts.join(" · ") }))));
  }
  document.getElementById("no-models").hidden = state.models.length > 0;
}

function selectModel(name) {
  state.model = name;
  if (name) history.replaceState(null, "", `#model=${encodeURIComponent(name)}`);
  renderModels();
  return refreshModel();
}

function modelFromHash() {
  const found = /^#model=(.+)$/.exec(location.hash);
  return found ? decodeURIComponent(found[1]) : null;
}

async function refreshModel() {
  const name = state.model;
  const view = document.getElementById("model-view");
  if (!name) { view.hidden = true; return; }
  const [matrix, versions] = await Promise.all([api(modelPath(name, "/accuracy")), api(modelPath(name, "/versions"))]);
  if (name !== state.model) return; // the user picked another model meanwhile
  const model = state.models.find((m) => m.name === name);
  view.hidden = false;
  view.dataset.model = name;
  document.getElementById("model-name").textContent = name;
  document.getElementById("model-summary").textContent = model
    ? `${model.architecture} · ${model.family} · ${model.n_versions} versions · forgetting gate ` +
      `${model.max_forgetting === null ? "default" : fixed3(model.max_forgetting)}` : "";
  const isText = Boolean(model && model.input_shape.length === 1 && model.input_shape[0] === "text");
  const tryText = document.getElementById("try-text");
  if (tryText.hidden === isText) document.getElementById("try-text-results").replaceChildren();
  tryText.hidden = !isText;
  document.getElementById("heatmap-box").replaceChildren(renderHeatmap(matrix));
  document.getElementById("lines-box").replaceChildren(renderTaskLines(matrix));
  document.getElementById("matrix-metrics").textContent =
    `average accuracy ${maybe3(matrix.average_accuracy)}   BWT ${maybe3(matrix.bwt)}   forgetting ${maybe3(matrix.forgetting)}` +
    "   (over the promoted versions)";
  renderVersions(versions);
  const [live, triggers] = await Promise.all([api(modelPath(name, "/live-accuracy")), api(modelPath(name, "/triggers"))]);
  if (name !== state.model) return;
  document.getElementById("live-box").replaceChildren(renderLiveAccuracy(live));
  renderTriggerDecisions(triggers);
}

async function refreshModels() {
  state.models = await api("models");
  if (!state.model || !state.models.some((m) => m.name === state.model)) {
    const wanted = modelFromHash();
    state.model = state.models.some((m) => m.name === wanted) ? wanted : (state.models[0] || {}).name || null;
  }
  renderModels();
}

async function refreshAll() {
  try {
    await refreshModels();
    await refreshModel();
  } catch (error) {
    reportError(error);
  }
}

// ------------------------------------------------------------------ jobs

function jobDetail(job) {
  const p = job.progress || {};
  if (job.status === "running") {
    const parts = [p.phase || "starting", `${Math.round(100 * (p.fraction || 0))}%`];
    if (p.epochs) parts.push(`epoch ${p.epoch}/${p.epochs}`);
    if (p.loss !== null && p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(3)}`);
    if (p.samples_per_second) parts.push(`${Math.round(p.samples_per_second)} samples/s`);
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${Math.round(p.eta_seconds)} s`);
    return parts.join(" · ");
  }
  if (job.status === "queued") return `queued, attempt ${job.attempt}/${job.max_attempts}`;
  const made = job.model_version ? `v${job.model_version}` : "no version";
  if (job.status === "rejected") return `${made} stored, not promoted · ${job.error || "forgetting gate"}`;
  return `${made}${job.error && job.status !== "succeeded" ? " · " + job.error : ""}`;
}

function renderJobs(jobs) {
  const list = document.getElementById("jobs");
  const shown = [...jobs.filter((j) => ACTIVE.has(j.status)), ...jobs.filter((j) => !ACTIVE.has(j.status)).slice(0, 8)];
  list.replaceChildren(...shown.map((job) => el("li", { "data-job-id": job.id, "data-status": job.status,
    "data-model": job.model },
    el("div", { class: "what" }, el("span", { text: `job ${job.id} · ${job.model} · ${job.task_id === null ? "nothing stored" : "task " + job.task_id}` }),
      el("span", { class: `badge ${job.status}`, text: job.status })),
    job.status === "running" ? el("progress", { max: 1, value: (job.progress || {}).fraction || 0 }) : null,
    el("div", { class: "detail", text: jobDetail(job) }))));
  document.getElementById("no-jobs").hidden = jobs.length > 0;
}

async function pollJobs() {
  try {
    const jobs = await api("jobs?limit=50");
    renderJobs(jobs);
    const signature = jobs.map((j) => `${j.id}:${j.status}`).join(",");
    if (state.jobsSignature !== null && signature !== state.jobsSignature) await refreshAll(); // a job moved on
    state.jobsSignature = signature;
  } catch (error) {
    reportError(error);
  } finally {
    setTimeout(pollJobs, POLL_MS);
  }
}

// ------------------------------------------------------------------ the API key

function showKeyPrompt(message) {
  const form = document.getElementById("auth-prompt");
  document.getElementById("auth-message").textContent = message;
  form.hidden = false;
  document.getElementById("api-key-input").focus();
}

function setUpKeyPrompt() {
  const form = document.getElementById("auth-prompt");
  document.getElementById("api-key-button").addEventListener("click", () => {
    if (form.hidden) showKeyPrompt("An API key for this tab (kept in sessionStorage, sent as Authorization: Bearer).");
    else form.hidden = true;
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = document.getElementById("api-key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    document.getElementById("api-key-input").value = "";
    form.hidden = true;
    setStatus(key ? "API key set for this tab." : "No API key: requests go without one.");
    refreshAll();
  });
  document.getElementById("api-key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    form.hidden = true;
    setStatus("API key forgotten: requests go without one.");
    refreshAll();
  });
}

// ------------------------------------------------------------------ text models

async function onTryText(event) {
  event.preventDefault();
  const name = state.model;
  const texts = document.getElementById("try-text-input").value.split("\n").map((t) => t.trim()).filter(Boolean);
  const results = document.getElementById("try-text-results");
  if (!name || texts.length === 0) return;
  try {
    const answer = await api("predict", { method: "POST", body: { model: name, inputs: texts, top_k: 3 } });
    results.replaceChildren(...answer.predictions.map((p, i) => el("li", {
      "data-label": p.label, "data-probability": p.probability },
      el("strong", { text: String(p.label) }), ` ${fixed3(p.probability)} · `,
      el("span", { class: "hint", text: shorten(texts[i], 80) }),
      el("small", { text: " (" + (p.top_k || []).slice(1).map(([l, q]) => `${l} ${fixed3(q)}`).join(", ") + ")" }))));
    setStatus(`${name} v${answer.model_version} answered ${texts.length} text${texts.length === 1 ? "" : "s"}.`);
  } catch (error) {
    reportError(error);
  }
}

// ------------------------------------------------------------------ start

document.getElementById("models").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-model]");
  if (button) selectModel(button.dataset.model).catch(reportError);
});
document.getElementById("versions").addEventListener("click", onVersionAction);
document.getElementById("try-text").addEventListener("submit", onTryText);
setUpKeyPrompt();
refreshAll().then(pollJobs);
