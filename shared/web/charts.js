// Line charts in plain SVG: series of {t, value} points, drawn with CSS classes (no inline styles, so CSP holds).

import { el } from "./common.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 200;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };
const MAX_SERIES = 8;

function svg(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function shortNumber(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/**
 * A chart of named series over time into `container`, with a legend and a text summary for screen readers.
 * `series` is {name: [{t: epochMs, value}]}.
 */
export function lineChart(container, title, series, unit) {
  const names = Object.keys(series).sort().slice(0, MAX_SERIES);
  const points = names.flatMap((n) => series[n]);
  if (points.length === 0) {
    container.replaceChildren(el("p", { class: "help", text: "No traffic in the window yet." }));
    return;
  }
  const t0 = Math.min(...points.map((p) => p.t));
  const t1 = Math.max(...points.map((p) => p.t), t0 + 1);
  const top = niceMax(Math.max(...points.map((p) => p.value)));
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / top) * (HEIGHT - PAD.top - PAD.bottom);

  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title });
  for (const fraction of [0, 0.5, 1]) {
    const v = top * fraction;
    chart.append(svg("line", { class: fraction === 0 ? "axis" : "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, shortNumber(v)));
  }
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  chart.append(svg("text", { x: PAD.left, y: HEIGHT - 6 }, clock(t0)));
  chart.append(svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" }, clock(t1)));
  names.forEach((name, i) => {
    const line = series[name].map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    const group = svg("g", { class: `series-${i}` });
    group.append(svg("title", {}, name));
    group.append(svg("polyline", { points: line }));
    const last = series[name][series[name].length - 1];
    if (last) group.append(svg("circle", { cx: x(last.t), cy: y(last.value), r: 3 }));
    chart.append(group);
  });
  const legend = el(
    "ul",
    { class: "legend" },
    ...names.map((name, i) => {
      const last = series[name][series[name].length - 1];
      return el("li", {}, el("span", { class: `swatch series-${i}`, "aria-hidden": "true" }), `${name}: ${shortNumber(last ? last.value : 0)} ${unit}`);
    }),
  );
  container.replaceChildren(chart, legend);
}
