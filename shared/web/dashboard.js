// The operations dashboard: everything from the admin API and /metrics, with the admin key; refreshes itself.

import { lineChart } from "./charts.js";
import { el, errorOf, formatNumber, formatTime, storage, takeKeyFromFragment } from "./common.js";
import { parsePrometheus, sumBy, total } from "./prometheus.js";

const KEY_NAME = "gateway.adminKey";
const INTERVAL_NAME = "gateway.dashboardInterval";
const HISTORY = 60; // samples kept for the charts

const $ = (id) => document.getElementById(id);
const ui = {
  controls: $("controls"),
  key: $("admin-key"),
  interval: $("interval"),
  refresh: $("refresh"),
  forget: $("forget-key"),
  error: $("error"),
  status: $("status"),
  backends: $("backends"),
  rpm: $("rpm-chart"),
  tpm: $("tpm-chart"),
  subscriptions: $("subscriptions"),
  failovers: $("failovers"),
  tiles: {
    requests: $("tile-requests"),
    hitRate: $("tile-hit-rate"),
    saved: $("tile-saved"),
    failovers: $("tile-failovers"),
    open: $("tile-open"),
  },
};

const state = { key: "", timer: null, samples: [], busy: false };

class AdminError extends Error {
  constructor(error) {
    super(error.message);
    this.status = error.status;
    this.code = error.code;
  }
}

// An Entra ID token (three base64url parts) goes as a bearer token, checked for the Gateway.Admin or
// Gateway.Reader app role; anything else is the shared admin key.
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function credentialHeaders() {
  return JWT_SHAPE.test(state.key) ? { authorization: `Bearer ${state.key}` } : { "x-admin-key": state.key };
}

async function getJson(path) {
  const response = await fetch(path, { headers: credentialHeaders(), cache: "no-store" });
  if (!response.ok) throw new AdminError(await errorOf(response));
  return response.json();
}

async function getMetrics() {
  const response = await fetch("../metrics", { headers: credentialHeaders(), cache: "no-store" });
  if (response.status === 404) return null; // metrics are off on this gateway: the charts say so
  if (!response.ok) throw new AdminError(await errorOf(response));
  return parsePrometheus(await response.text());
}

// --- tables -------------------------------------------------------------------------------------

function table(caption, headers, rows) {
  const head = el("tr", {}, ...headers.map(([text, numeric]) => el("th", { scope: "col", class: numeric ? "num" : null, text })));
  return el("table", {}, el("caption", { class: "visually-hidden", text: caption }), el("thead", {}, head), el("tbody", {}, ...rows));
}

function cell(text, numeric = false) {
  return el("td", { class: numeric ? "num" : null, text });
}

function stateCell(status, extra) {
  return el("td", {}, el("span", { class: `state ${status}`, text: status.replace("_", "-") }), extra ? ` ${extra}` : "");
}

function renderBackends(report) {
  const rows = report.data.map((row) => {
    const probe = row.last_probe;
    const probeText = probe
      ? `${probe.ok ? "ok" : "failed"}${probe.status ? ` ${probe.status}` : ""}, ${probe.latency_ms === null || probe.latency_ms === undefined ? "–" : `${Math.round(probe.latency_ms)} ms`}, ${formatTime(probe.at)}`
      : "not probed yet";
    return el(
      "tr",
      { "data-backend": row.backend, "data-deployment": row.deployment, "data-breaker": row.breaker },
      cell(row.backend),
      cell(row.deployment === row.backend_deployment ? row.deployment : `${row.deployment} → ${row.backend_deployment}`),
      cell(`${row.priority} / ${row.weight}`, true),
      stateCell(row.breaker, row.breaker_reason ? `(${row.breaker_reason})` : ""),
      cell(row.open_until ? formatTime(row.open_until) : "–"),
      cell(row.throttled_until ? formatTime(row.throttled_until) : "–"),
      cell(probeText),
    );
  });
  const headers = [["Backend"], ["Deployment"], ["Priority / weight", true], ["Breaker"], ["Open until"], ["Throttled until"], ["Last probe"]];
  ui.backends.replaceChildren(table("Backends and deployments", headers, rows));
  const open = report.data.filter((row) => row.breaker !== "closed").length;
  ui.tiles.open.textContent = String(open);
  ui.tiles.open.className = open ? "value alert" : "value";
}

function periodStart(period, now) {
  const d = new Date(now);
  if (period === "hourly") return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours());
  if (period === "daily") return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  if (period === "weekly") return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Tokens used per subscription in the current quota period, one admin-usage call per period in use. */
async function usedThisPeriod(subscriptions) {
  const periods = [...new Set(subscriptions.filter((s) => s.token_quota).map((s) => s.token_quota_period))];
  const used = {};
  const now = Date.now();
  await Promise.all(
    periods.map(async (period) => {
      const from = new Date(periodStart(period, now)).toISOString();
      const report = await getJson(`../gateway/admin/usage?group_by=subscription&from=${encodeURIComponent(from)}`);
      used[period] = Object.fromEntries(report.data.map((row) => [row.subscription, row.total_tokens]));
    }),
  );
  return used;
}

async function renderSubscriptions(usage, subscriptions) {
  const byId = Object.fromEntries(subscriptions.map((s) => [s.id, s]));
  const used = await usedThisPeriod(subscriptions);
  const rows = usage.data.slice(0, 10).map((row) => {
    const sub = byId[row.subscription] || {};
    let quota = "none";
    if (sub.token_quota) {
      const spent = (used[sub.token_quota_period] || {})[sub.id] || 0;
      quota = `${formatNumber(Math.max(0, sub.token_quota - spent))} of ${formatNumber(sub.token_quota)} (${sub.token_quota_period})`;
    }
    return el(
      "tr",
      {},
      cell(row.subscription_name || sub.name || row.subscription),
      cell(formatNumber(row.requests), true),
      cell(formatNumber(row.total_tokens), true),
      cell(Number(row.cost).toFixed(4), true),
      cell(quota, true),
      cell(sub.state || "–"),
    );
  });
  if (rows.length === 0) {
    ui.subscriptions.replaceChildren(el("p", { class: "help", text: "No usage recorded in the last 24 hours." }));
    return;
  }
  const headers = [["Subscription"], ["Requests", true], ["Tokens", true], ["Cost", true], ["Quota left", true], ["State"]];
  ui.subscriptions.replaceChildren(table("Top subscriptions", headers, rows));
}

// --- metrics ------------------------------------------------------------------------------------

function perMinute(key) {
  // Each point counts the last minute: from the oldest sample within 60 s, divided by at least a minute, so
  // two refreshes a second apart do not read as a burst. A counter that went down (a restarted instance,
  // another instance answering) is left out rather than drawn as a negative rate.
  const series = {};
  for (let i = 1; i < state.samples.length; i += 1) {
    const after = state.samples[i];
    let j = i - 1;
    while (j > 0 && after.t - state.samples[j - 1].t <= 60000) j -= 1;
    const before = state.samples[j];
    const minutes = Math.max(1, (after.t - before.t) / 60000);
    const names = new Set([...Object.keys(before[key]), ...Object.keys(after[key])]);
    for (const name of names) {
      const delta = (after[key][name] || 0) - (before[key][name] || 0);
      if (delta < 0) continue;
      (series[name] = series[name] || []).push({ t: after.t, value: delta / minutes });
    }
  }
  return series;
}

function renderMetrics(samples) {
  if (samples === null) {
    const off = "Metrics are off on this gateway (GATEWAY_METRICS_ENDPOINT=true turns them on).";
    for (const target of [ui.rpm, ui.tpm, ui.failovers]) target.replaceChildren(el("p", { class: "help", text: off }));
    return;
  }
  const outcomes = sumBy(samples, "gateway_requests_total", "gateway_outcome");
  const tokens = sumBy(samples, "gen_ai_client_token_usage_sum", (l) => l.gateway_subscription_name || l.gateway_subscription_id || "-");
  state.samples.push({ t: Date.now(), outcomes, tokens });
  if (state.samples.length > HISTORY) state.samples.shift();

  ui.tiles.requests.textContent = formatNumber(Object.values(outcomes).reduce((a, b) => a + b, 0));
  const hits = total(samples, "gateway_cache_lookups_total", (l) => l.gateway_cache_status === "hit");
  const lookups = total(samples, "gateway_cache_lookups_total", (l) => ["hit", "miss"].includes(l.gateway_cache_status));
  ui.tiles.hitRate.textContent = lookups ? `${((100 * hits) / lookups).toFixed(1)} %` : "–";
  ui.tiles.saved.textContent = formatNumber(total(samples, "gateway_cache_tokens_saved_total"));
  ui.tiles.failovers.textContent = formatNumber(total(samples, "gateway_backend_failovers_total"));

  if (state.samples.length < 2) {
    const wait = "Collecting: the rate appears after the next refresh.";
    ui.rpm.replaceChildren(el("p", { class: "help", text: wait }));
    ui.tpm.replaceChildren(el("p", { class: "help", text: wait }));
  } else {
    lineChart(ui.rpm, "Requests per minute by outcome", perMinute("outcomes"), "req/min");
    lineChart(ui.tpm, "Tokens per minute by subscription", perMinute("tokens"), "tokens/min");
  }

  const failovers = samples.filter((s) => s.name === "gateway_backend_failovers_total" && s.value > 0);
  if (failovers.length === 0) {
    ui.failovers.replaceChildren(el("p", { class: "help", text: "No failovers since this instance started." }));
    return;
  }
  const rows = failovers
    .sort((a, b) => b.value - a.value)
    .map((s) => el("tr", {}, cell(s.labels.gateway_backend || "-"), cell(s.labels.gateway_deployment || "-"), cell(s.labels.gateway_attempt_outcome || "-"), cell(formatNumber(s.value), true)));
  ui.failovers.replaceChildren(table("Failovers", [["Backend"], ["Deployment"], ["Cause"], ["Count", true]], rows));
}

// --- refreshing ---------------------------------------------------------------------------------

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function schedule() {
  window.clearTimeout(state.timer);
  const seconds = Number(ui.interval.value);
  if (state.key && seconds > 0) state.timer = window.setTimeout(refresh, seconds * 1000);
}

async function refresh() {
  if (!state.key || state.busy) return;
  state.busy = true;
  ui.status.textContent = "Refreshing…";
  try {
    const [backends, subscriptions, usage, metrics] = await Promise.all([
      getJson("../gateway/admin/backends"),
      getJson("../gateway/admin/subscriptions"),
      getJson("../gateway/admin/usage?group_by=subscription"),
      getMetrics(),
    ]);
    ui.error.hidden = true;
    renderBackends(backends);
    renderMetrics(metrics);
    await renderSubscriptions(usage, subscriptions.data);
    ui.status.textContent = `Updated ${new Date().toLocaleTimeString()} from instance ${backends.instance}.`;
  } catch (err) {
    if (err instanceof AdminError && err.status === 401) showError("The admin key was not accepted. Enter the key set in GATEWAY_ADMIN_KEY.");
    else if (err instanceof AdminError && err.code === "admin_disabled") showError("The admin API is off on this gateway: GATEWAY_ADMIN_KEY is not set.");
    else showError(`The dashboard could not refresh: ${err.message}`);
    ui.status.textContent = "Not updated.";
  } finally {
    state.busy = false;
    schedule();
  }
}

function useKey(key) {
  state.key = key;
  ui.key.value = key;
  state.samples = [];
  if (key) refresh();
}

ui.controls.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (key) storage.set(KEY_NAME, key);
  useKey(key);
});
ui.refresh.addEventListener("click", () => refresh());
ui.forget.addEventListener("click", () => {
  storage.remove(KEY_NAME);
  state.key = "";
  ui.key.value = "";
  window.clearTimeout(state.timer);
  ui.status.textContent = "Enter the admin key to load the dashboard.";
  ui.key.focus();
});
ui.interval.addEventListener("change", () => {
  storage.set(INTERVAL_NAME, ui.interval.value);
  schedule();
});

const savedInterval = storage.get(INTERVAL_NAME);
if (savedInterval) ui.interval.value = savedInterval;
useKey(takeKeyFromFragment(KEY_NAME) || storage.get(KEY_NAME));
