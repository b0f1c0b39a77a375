// The page of `nmt serve`: plain JavaScript, drawn by hand on canvases, no build step and
// nothing fetched from outside the server. It asks /v1/translate (n-best, attention) and
// /v1/inspect (gates and memory cells per unit) and draws what they answer.
"use strict";

const $ = (id) => document.getElementById(id);
const UNITS = 10; // units drawn at once
const QUANTITIES = [
  ["input", "input gate"],
  ["forget", "forget gate"],
  ["output", "output gate"],
  ["cell", "memory cell"],
];
const TRACE_NAMES = {
  decoder: "decoder",
  encoder_forward: "encoder, forward",
  encoder_backward: "encoder, backward",
};
const view = { inspection: null, trace: "decoder", units: [], chosenStep: -1, step: 0 };

// -- colour scales: [value -> colour], each with its legend's range --------------------
function ramp(stops) {
  return (x) => {
    const p = Math.min(Math.max(x, 0), 1) * (stops.length - 1);
    const i = Math.min(Math.floor(p), stops.length - 2);
    const f = p - i;
    const mix = stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
    return `rgb(${mix[0]},${mix[1]},${mix[2]})`;
  };
}
const BLUES = ramp([
  [247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107],
]);
const VIRIDIS = ramp([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]);
const RDBU = ramp([
  [33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43],
]);

// a scale's colour() takes the value itself
function unitScale(colours, label) {
  return { low: 0, high: 1, colour: colours, label };
}
function symmetricScale(values, label) {
  const most = Math.max(1e-6, ...values.flat().map(Math.abs));
  return { low: -most, high: most, colour: (v) => RDBU((v + most) / (2 * most)), label };
}

// -- a heat map on a canvas: labelled rows and columns, a highlighted step, a legend ----
const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";

function heatmap(canvas, m) {
  // m: {values (rows x cols), rowLabels, colLabels, scale, title, cell, highlightRow,
  //     highlightCol, onHover(row, col), onClick(row, col)}
  const cell = m.cell || 22;
  const ctx = canvas.getContext("2d");
  ctx.font = FONT;
  const widest = (labels) => Math.max(0, ...labels.map((s) => ctx.measureText(s).width));
  // the first column's label, at 45 degrees, reaches left of the plot: room for it too
  const reach = widest(m.colLabels) * Math.SQRT1_2 - cell / 2 + 4;
  const left = Math.ceil(Math.max(widest(m.rowLabels) + 12, reach));
  const top = m.title ? 26 : 8;
  const bottom = Math.ceil(widest(m.colLabels) * Math.SQRT1_2) + 22; // labels at 45 degrees
  const plotW = m.colLabels.length * cell;
  const plotH = m.rowLabels.length * cell;
  const width = left + plotW + 110; // the legend on the right
  const height = top + Math.max(plotH, 90) + bottom;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.font = FONT;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);

  if (m.title) {
    ctx.fillStyle = "#1f2328";
    ctx.font = `600 ${FONT}`;
    ctx.textBaseline = "top";
    ctx.fillText(m.title, left, 4);
    ctx.font = FONT;
  }
  m.values.forEach((row, r) =>
    row.forEach((v, c) => {
      ctx.fillStyle = m.scale.colour(v);
      ctx.fillRect(left + c * cell, top + r * cell, cell - 1, cell - 1);
    }),
  );
  ctx.strokeStyle = "#1f2328";
  ctx.lineWidth = 2;
  if (m.highlightRow >= 0) {
    ctx.strokeRect(left - 1, top + m.highlightRow * cell - 1, plotW + 1, cell + 1);
  }
  if (m.highlightCol >= 0) {
    ctx.strokeRect(left + m.highlightCol * cell - 1, top - 1, cell + 1, plotH + 1);
  }

  ctx.fillStyle = "#1f2328";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  m.rowLabels.forEach((s, r) => ctx.fillText(s, left - 6, top + r * cell + cell / 2));
  m.colLabels.forEach((s, c) => {
    ctx.save();
    ctx.translate(left + c * cell + cell / 2, top + plotH + 6);
    ctx.rotate(-Math.PI / 4);
    ctx.fillText(s, 0, 0);
    ctx.restore();
  });
  legend(ctx, m.scale, left + plotW + 18, top, Math.max(plotH, 90));
  canvas.geometry = { left, top, cell, rows: m.rowLabels.length, cols: m.colLabels.length };
  canvas.onmousemove = (e) => hit(canvas, e, m.onHover);
  canvas.onclick = (e) => hit(canvas, e, m.onClick);
}

function legend(ctx, scale, x, y, h) {
  const barW = 12;
  for (let i = 0; i < h; i++) {
    const v = scale.high - (i / (h - 1)) * (scale.high - scale.low);
    ctx.fillStyle = scale.colour(v);
    ctx.fillRect(x, y + i, barW, 1);
  }
  ctx.strokeStyle = "#8c959f";
  ctx.lineWidth = 1;
  ctx.strokeRect(x + 0.5, y + 0.5, barW, h - 1);
  ctx.fillStyle = "#1f2328";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const mid = (scale.low + scale.high) / 2;
  [[scale.high, 0], [mid, h / 2], [scale.low, h - 1]].forEach(([v, dy]) =>
    ctx.fillText(format(v), x + barW + 5, y + dy),
  );
  ctx.save();
  ctx.translate(x + barW + 48, y + h / 2);
  ctx.rotate(Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillStyle = "#59636e";
  ctx.fillText(scale.label, 0, 0);
  ctx.restore();
}

function format(v) {
  return Math.abs(v) >= 10 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toFixed(2);
}

function hit(canvas, event, handler) {
  if (!handler) return;
  const g = canvas.geometry;
  const box = canvas.getBoundingClientRect();
  const col = Math.floor((event.clientX - box.left - g.left) / g.cell);
  const row = Math.floor((event.clientY - box.top - g.top) / g.cell);
  if (row >= 0 && row < g.rows && col >= 0 && col < g.cols) handler(row, col);
}

// -- talking to the server ----------------------------------------------------------------
async function post(path, body) {
  const key = $("key").value.trim();
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(key ? { ...body, api_key: key } : body),
  });
  // the server answers JSON, errors included; a proxy in front of it may not
  const text = await response.text();
  let answer = null;
  try {
    answer = JSON.parse(text);
  } catch (err) {
    answer = null;
  }
  if (!response.ok || answer === null) {
    const said = answer && answer.error ? answer.error : text.trim().slice(0, 200);
    throw new Error(`${response.status} ${response.statusText}: ${said || "no message"}`);
  }
  return answer;
}

function say(message, error = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", error);
}

async function loadPairs() {
  const languages = await (await fetch("/languages")).json();
  const names = Object.fromEntries(languages.map((l) => [l.code, l.name]));
  for (const language of languages) {
    for (const target of language.targets) {
      const option = document.createElement("option");
      option.value = `${language.code}-${target}`;
      const to = `${names[target] || target} (${target})`;
      option.textContent = `${language.name} (${language.code}) → ${to}`;
      $("pair").append(option);
    }
  }
  const settings = await (await fetch("/frontend/settings")).json();
  $("key-row").hidden = !settings.keyRequired; // a server with --api-keys
}

function clearResults() {
  // a new question: what was shown belongs to the old one, whatever the answer
  view.inspection = null;
  view.attention = null;
  $("translation").textContent = "";
  $("nbest").querySelector("tbody").replaceChildren();
  $("result").hidden = true;
  $("inside").hidden = true;
}

async function translate() {
  const text = $("text").value.trim();
  if (!text) return say("Type a sentence first.", true);
  const [source, target] = $("pair").value.split("-");
  const beam = Math.min(Math.max(Number($("beam").value) || 5, 1), 32);
  $("go").disabled = true;
  clearResults();
  say("Translating…");
  try {
    const nbest = Math.min(5, beam);
    const body = { text, source, target, beam, nbest, attention: true };
    const answer = await post("/v1/translate", body);
    showTranslation(answer.translations[0].nbest);
    say("Looking inside…");
    view.inspection = await post("/v1/inspect", { text, source, target, beam });
    view.step = 0;
    chooseMoving();
    $("inside").hidden = false;
    say("");
  } catch (err) {
    say(err.message, true);
  } finally {
    $("go").disabled = false;
  }
}

// -- the translation and its attention ----------------------------------------------------
function showTranslation(nbest) {
  $("translation").textContent = nbest[0].text;
  const body = $("nbest").querySelector("tbody");
  body.replaceChildren(
    ...nbest.map((h, i) => {
      const tr = document.createElement("tr");
      [String(i + 1), h.text, h.score.toFixed(3), h.logprob.toFixed(3)].forEach((s, k) => {
        const td = document.createElement("td");
        td.textContent = s;
        if (k >= 2) td.className = "num";
        tr.append(td);
      });
      return tr;
    }),
  );
  view.attention = nbest[0].attention;
  $("result").hidden = false;
  drawAttention();
}

function drawAttention() {
  const a = view.attention;
  if (!a || !a.weights.length) {
    $("attention").width = 0; // nothing was translated (a number, a URL): nothing attended
    return;
  }
  const decoding = view.trace === "decoder" && Boolean(view.inspection);
  heatmap($("attention"), {
    values: a.weights,
    rowLabels: a.target,
    colLabels: a.source,
    scale: unitScale(BLUES, "attention weight"),
    cell: 24,
    highlightRow: decoding ? view.step : -1,
    highlightCol: view.inspection && !decoding ? view.step : -1,
    // a cell is a decoder step (its row) and a source position (its column)
    onHover: (row, col) => view.inspection && setTrace(view.trace, decoding ? row : col),
    onClick: (row, col) => view.inspection && setTrace(view.trace, decoding ? row : col, true),
  });
}

// -- the gates: a trace, its units, a step ---------------------------------------------------
function trace() {
  return view.inspection.traces[view.trace];
}
function pieces() {
  return view.inspection[trace().pieces];
}

function chooseMoving() {
  view.units = trace().moving.slice(0, UNITS);
  view.chosenStep = -1;
  drawInside();
}

function chooseAt(step) {
  view.units = trace().distinctive[step].slice(0, UNITS);
  view.chosenStep = step;
  view.step = step;
  drawInside();
}

function setTrace(name, step, choose = false) {
  if (name !== view.trace) {
    view.trace = name;
    document.querySelector(`input[name=trace][value=${name}]`).checked = true;
    view.units = trace().moving.slice(0, UNITS);
    view.chosenStep = -1;
  }
  view.step = Math.min(step, pieces().length - 1);
  if (choose) chooseAt(view.step);
  else drawInside();
}

function drawInside() {
  const t = trace();
  const labels = pieces();
  const units = view.units;
  $("step").max = String(labels.length - 1);
  $("step").value = String(view.step);
  $("step-label").textContent = `${view.step + 1} of ${labels.length}: ${labels[view.step]}`;
  const where =
    view.chosenStep >= 0 ? `most distinctive at “${labels[view.chosenStep]}”` : "that change most";
  $("units-caption").textContent =
    `${TRACE_NAMES[view.trace]}: the ${units.length} units ${where} (of ${t.units})`;
  drawWords(labels);

  const old = $("gates").children; // redrawn in place: hovering must not replace them
  const canvases = QUANTITIES.map(([key, title], i) => {
    const canvas = old[i] || document.createElement("canvas");
    const values = units.map((u) => t[key].map((step) => step[u]));
    const scale =
      key === "cell" ? symmetricScale(values, "cell value") : unitScale(VIRIDIS, "gate value");
    heatmap(canvas, {
      values,
      rowLabels: units.map((u) => `unit ${u}`),
      colLabels: labels,
      scale,
      title,
      cell: 22,
      highlightCol: view.step,
      onHover: (row, col) => setTrace(view.trace, col),
      onClick: (row, col) => chooseAt(col),
    });
    canvas.dataset.quantity = key;
    return canvas;
  });
  if (old.length !== canvases.length) $("gates").replaceChildren(...canvases);
  drawReadout(t, units);
  drawAttention();
}

function drawWords(labels) {
  // built once per trace and sentence, then only marked: hovering must not replace the
  // button under the pointer
  const words = $("words");
  const key = `${view.trace}\u0000${labels.join("\u0000")}`;
  if (words.dataset.key !== key) {
    words.dataset.key = key;
    words.replaceChildren(
      ...labels.map((piece, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = piece;
        b.title = `step ${i + 1}: click for the units most distinctive here`;
        b.onmouseenter = () => setTrace(view.trace, i);
        b.onclick = () => chooseAt(i);
        return b;
      }),
    );
  }
  [...words.children].forEach((b, i) => {
    b.classList.toggle("step", i === view.step);
    b.classList.toggle("chosen", i === view.chosenStep);
  });
}

function drawReadout(t, units) {
  const head = document.createElement("tr");
  ["unit", ...QUANTITIES.map(([, title]) => title)].forEach((s) => {
    const th = document.createElement("th");
    th.textContent = s;
    head.append(th);
  });
  const rows = units.map((u) => {
    const tr = document.createElement("tr");
    const cells = [String(u), ...QUANTITIES.map(([key]) => t[key][view.step][u].toFixed(3))];
    cells.forEach((s, k) => {
      const td = document.createElement("td");
      td.textContent = s;
      if (k) td.className = "num";
      tr.append(td);
    });
    return tr;
  });
  const caption = document.createElement("caption");
  caption.textContent = `values at step ${view.step + 1} (“${pieces()[view.step]}”)`;
  $("readout").replaceChildren(caption, head, ...rows);
}

// -- wiring -------------------------------------------------------------------------------
$("go").onclick = translate;
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) translate();
});
$("moving").onclick = () => view.inspection && chooseMoving();
$("step").oninput = () => setTrace(view.trace, Number($("step").value));
document.querySelectorAll("input[name=trace]").forEach((radio) => {
  radio.onchange = () => setTrace(radio.value, 0);
});
loadPairs().catch((err) => say(`cannot list the language pairs: ${err.message}`, true));
