// Prometheus text exposition (what /metrics answers) into samples: {name, labels, value}.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescape(value) {
  return value.replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
}

export function parsePrometheus(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[3] || "").matchAll(LABEL)) labels[name] = unescape(value);
    const value = match[4] === "+Inf" ? Infinity : match[4] === "-Inf" ? -Infinity : Number(match[4]);
    samples.push({ name: match[1], labels, value });
  }
  return samples;
}

/** The sum of a metric's samples, grouped by one label (or by a function of the labels). */
export function sumBy(samples, name, label) {
  const out = {};
  for (const sample of samples) {
    if (sample.name !== name) continue;
    const key = typeof label === "function" ? label(sample.labels) : sample.labels[label] || "-";
    out[key] = (out[key] || 0) + sample.value;
  }
  return out;
}

export function total(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((sum, s) => sum + s.value, 0);
}
