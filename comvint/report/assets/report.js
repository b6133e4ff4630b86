"use strict";
// ComVint report: draws the charts and the sample browser from the JSON embedded in the page.
// No library and no network: every chart is an SVG built here.
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";
const PAGE = 40;
const PALETTE = ["#3f6fd8", "#e08a2e", "#2f8f4e", "#9b59b6", "#c2412d", "#17a2b8"];

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toFixed(n < 1 ? 3 : 2);
}

function shorten(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

// Horizontal bars: rows are [label, value].
function barChart(rows, max) {
  const labelW = 230, barW = 300, rowH = 20, width = labelW + barW + 70;
  const top = max || Math.max(...rows.map((r) => r[1]), 1);
  const svg = s("svg", { viewBox: `0 0 ${width} ${rows.length * rowH + 4}`, role: "img" });
  rows.forEach(([label, value], i) => {
    const y = i * rowH + 2;
    const w = Math.max(1, (value / top) * barW);
    svg.append(s("text", { x: labelW - 6, y: y + 13, "text-anchor": "end" }, shorten(String(label), 38)));
    const bar = s("rect", { x: labelW, y, width: w, height: rowH - 5, fill: PALETTE[0], rx: 2 });
    bar.append(s("title", {}, `${label}: ${fmt(value)}`));
    svg.append(bar);
    svg.append(s("text", { x: labelW + w + 4, y: y + 13, class: "value" }, fmt(value)));
  });
  return svg;
}

// Horizontal stacked bars: rows are {label, parts: {key: value}}.
function stackedChart(rows, keys) {
  const labelW = 230, barW = 300, rowH = 20, legendH = 22, width = labelW + barW + 70;
  const top = Math.max(...rows.map((r) => keys.reduce((a, k) => a + (r.parts[k] || 0), 0)), 1);
  const svg = s("svg", { viewBox: `0 0 ${width} ${rows.length * rowH + legendH + 4}`, role: "img" });
  keys.forEach((k, i) => {
    svg.append(s("rect", { x: labelW + i * 110, y: 2, width: 10, height: 10, fill: PALETTE[i % PALETTE.length] }));
    svg.append(s("text", { x: labelW + i * 110 + 14, y: 11 }, k));
  });
  rows.forEach((row, i) => {
    const y = legendH + i * rowH;
    let x = labelW, total = 0;
    svg.append(s("text", { x: labelW - 6, y: y + 13, "text-anchor": "end" }, shorten(row.label, 38)));
    keys.forEach((k, j) => {
      const v = row.parts[k] || 0;
      if (!v) return;
      const w = (v / top) * barW;
      const seg = s("rect", { x, y, width: w, height: rowH - 5, fill: PALETTE[j % PALETTE.length] });
      seg.append(s("title", {}, `${row.label} · ${k}: ${fmt(v)}`));
      svg.append(seg);
      x += w;
      total += v;
    });
    svg.append(s("text", { x: x + 4, y: y + 13, class: "value" }, fmt(total)));
  });
  return svg;
}

function renderOverview() {
  const o = DATA.overview;
  document.getElementById("source").textContent = `Output: ${DATA.source} · backend: ${o.backend || "–"}${o.mode === "batch" ? " (Batch API)" : ""} · stages: ${o.stages || "–"}`;
  const stat = (value, label, bad) => h("div", { class: bad ? "stat bad" : "stat" }, h("b", {}, fmt(value)), h("span", {}, label));
  const holds = o.identity_holds && o.items_identity_holds !== false;
  document.getElementById("overview").append(
    stat(o.inputs, "inputs (images and files)"),
    stat(o.kept, "kept instructions"),
    stat(o.rejected, "rejected"),
    stat(o.failed, "failures", o.failed > 0),
    stat(o.cost === null ? "–" : `$${o.cost.toFixed(2)}`, "estimated LLM cost"),
    stat(holds ? "holds" : "BROKEN", "accounting identity", !holds),
  );
}

function renderCharts() {
  const root = document.getElementById("charts");
  for (const chart of DATA.charts) {
    const body = chart.kind === "stacked" ? stackedChart(chart.rows, chart.keys) : barChart(chart.rows, chart.max);
    root.append(h("figure", { class: "chart", "data-chart": chart.id }, h("h3", {}, chart.title), body));
  }
  const latency = DATA.llm.filter((r) => Object.keys(r.latency_histogram).length);
  for (const row of latency) {
    const bins = Object.entries(row.latency_histogram).sort((a, b) => binSeconds(a[0]) - binSeconds(b[0]));
    root.append(h("figure", { class: "chart", "data-chart": `latency_${row.stage}` },
      h("h3", {}, `Latency of ${row.stage} requests`), barChart(bins.map(([k, v]) => [k.replace("le_", "≤ ").replace("gt_", "> "), v]))));
  }
}

function binSeconds(bin) {
  const n = parseFloat(bin.replace(/^(le|gt)_/, ""));
  return bin.startsWith("gt_") ? n + 1e9 : n;
}

function renderLLM() {
  const root = document.getElementById("llm");
  if (!DATA.llm.length) {
    root.append(h("p", { class: "note" }, "No LLM stage ran (an ingest-only run)."));
    return;
  }
  const batch = DATA.llm.some((r) => r.batches !== undefined);
  const cols = ["stage", "calls", "cache_hits", ...(batch ? ["batches", "batch_lines"] : []), "requests", "refusals", "retries", "failures",
    "prompt_tokens", "completion_tokens", "cost", "mean_latency_ms"];
  const head = h("tr", {}, cols.map((c) => h("th", {}, c.replace(/_/g, " "))));
  const rows = DATA.llm.map((r) => h("tr", {}, cols.map((c) => h("td", {}, c === "cost" && r.cost !== undefined && r.cost !== null ? `$${r.cost.toFixed(4)}` : fmt(r[c])))));
  root.append(h("table", { id: "llm-table" }, h("thead", {}, head), h("tbody", {}, rows)));
}

// ---- the sample browser ------------------------------------------------------------------------

const CARDS = [];
const BY_ID = new Map();
for (const image of DATA.images) {
  for (const rec of image.records) {
    BY_ID.set(rec.id, rec);
    if (rec.card) CARDS.push({ rec, image });
  }
}

function outcomeOf(rec) {
  return rec.outcome === "kept" ? "kept" : `${rec.outcome}: ${rec.reason || "?"}`;
}

const FILTERS = [
  ["family", "Family", (r) => r.family],
  ["format", "Format", (r) => r.format],
  ["round", "Round", (r) => (r.round === undefined ? undefined : String(r.round))],
  ["outcome", "Outcome", outcomeOf],
];
let shownCount = PAGE;

function renderFilters() {
  const form = document.getElementById("filters");
  for (const [key, label, get] of FILTERS) {
    const values = [...new Set(CARDS.map((c) => get(c.rec)).filter((v) => v !== undefined))].sort();
    const select = h("select", { name: key, id: `filter-${key}` }, h("option", { value: "" }, "all"), values.map((v) => h("option", { value: v }, v)));
    select.addEventListener("change", () => { shownCount = PAGE; renderCards(); });
    form.append(h("label", {}, label, select));
  }
  document.getElementById("more").addEventListener("click", () => { shownCount += PAGE; renderCards(); });
}

function matching() {
  const chosen = FILTERS.map(([key, , get]) => [get, document.getElementById(`filter-${key}`).value]);
  return CARDS.filter((c) => chosen.every(([get, v]) => !v || get(c.rec) === v));
}

function renderCards() {
  const list = matching();
  const root = document.getElementById("cards");
  root.replaceChildren(...list.slice(0, shownCount).map(card));
  document.getElementById("shown").textContent = `Showing ${Math.min(shownCount, list.length)} of ${list.length} matching cards (${CARDS.length} in the sample).`;
  document.getElementById("more").hidden = list.length <= shownCount;
}

function lineage(rec) {
  const chain = [];
  for (let r = rec; r; r = r.parent_id ? BY_ID.get(r.parent_id) : null) {
    chain.unshift(r);
    if (chain.length > 20) break;
  }
  const children = [...BY_ID.values()].filter((r) => r.parent_id === rec.id && r.format !== "open_ended");
  return { chain, children };
}

function step(r, self) {
  const label = `round ${r.round ?? "–"} · ${r.format || "image"} · ${outcomeOf(r)}`;
  return h("li", { class: self ? "self" : null }, h("b", {}, label), ": ", r.instruction || "(no instruction)",
    r.answer ? ` → ${r.answer}` : "", r.evidence ? h("span", { class: "ev" }, `judge: ${r.evidence}`) : "");
}

function card({ rec, image }) {
  const badges = h("div", { class: "badges" },
    h("span", { class: `badge ${rec.outcome}` }, outcomeOf(rec)),
    [rec.family, rec.format, rec.round !== undefined ? `round ${rec.round}` : null, rec.knowledge_type, rec.knowledge_topic]
      .filter(Boolean).map((b) => h("span", { class: "badge" }, b)),
    (rec.image_stages || []).length ? [h("span", { class: "badge saw", title: "these stages' calls carried the picture" },
      `saw the picture: ${rec.image_stages.join(", ")}`)] : []);
  const text = [badges, h("p", { class: "q" }, rec.instruction || `Image ${image.image_id} was not used`)];
  if (rec.options) {
    text.push(h("ol", { class: "options", type: "A" }, rec.options.map((o, i) => h("li", { class: i === rec.answer_index ? "right" : null }, o))));
  }
  if (rec.answer) text.push(h("p", { class: "a" }, h("b", {}, "Answer: "), rec.answer));
  if (rec.evidence && !rec.instruction) text.push(h("p", { class: "evidence" }, rec.evidence));
  if (rec.duplicate_of) text.push(h("p", { class: "evidence" }, `duplicate of ${rec.duplicate_of}`));
  const { chain, children } = lineage(rec);
  if (rec.instruction) {
    text.push(h("ol", { class: "lineage", "data-lineage": chain.length + children.length },
      chain.map((r) => step(r, r === rec)), children.map((r) => step(r, false))));
  }
  return h("article", { class: "card", "data-id": rec.id, "data-outcome": outcomeOf(rec) }, h("div", {}, text), picture(image, rec));
}

function picture(image, rec) {
  const boxes = image.boxes || [];
  const width = image.width || Math.max(1, ...boxes.map((b) => b.box[2]));
  const height = image.height || Math.max(1, ...boxes.map((b) => b.box[3]));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "boxes" });
  if (image.picture) svg.append(s("image", { href: image.picture, x: 0, y: 0, width, height, preserveAspectRatio: "none" }));
  else svg.append(s("rect", { x: 0, y: 0, width, height, fill: "#e9ecf1" }));
  const ids = new Set(rec.ids || []);
  const stroke = Math.max(1.5, width / 200), font = Math.max(9, width / 32);
  const ordered = [...boxes].sort((a, b) => ids.has(a.id) - ids.has(b.id));
  for (const b of ordered) {
    const [x1, y1, x2, y2] = b.box, on = ids.has(b.id);
    const rect = s("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", "data-box": b.id,
      stroke: on ? "#e0392b" : "#7a8494", "stroke-width": on ? stroke * 1.6 : stroke * 0.6, "stroke-opacity": on ? 1 : 0.6 });
    rect.append(s("title", {}, `${b.id} ${b.label}`));
    svg.append(rect);
    if (on) svg.append(s("text", { x: x1 + 2, y: Math.max(font, y1 - 2), "font-size": font, fill: "#e0392b", style: `font-size:${font}px;fill:#e0392b` }, shorten(b.label, 30)));
  }
  const note = image.picture ? "" : " (no image file: boxes on a neutral canvas)";
  return h("div", { class: "picture" }, svg, h("div", { class: "caption" }, `${image.image}, ${width}×${height}${note}`));
}

renderOverview();
renderCharts();
renderLLM();
renderFilters();
renderCards();
