// The chat page: a subscription key, a deployment from /v1/models, and answers streamed token by token.

import { countdown, el, errorOf, formatNumber, formatTime, retryAfterSeconds, storage, takeKeyFromFragment } from "./common.js";

const KEY_NAME = "gateway.subscriptionKey";
const DEPLOYMENT_NAME = "gateway.deployment";
const PERIODS = { hourly: "hour", daily: "day", weekly: "week", monthly: "month" };

const $ = (id) => document.getElementById(id);
const ui = {
  settings: $("settings"),
  key: $("key"),
  forget: $("forget-key"),
  deployment: $("deployment"),
  log: $("log"),
  empty: $("empty"),
  error: $("error"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  clear: $("clear"),
  usage: $("usage"),
  refreshUsage: $("refresh-usage"),
};

const state = {
  key: "",
  history: [], // what is sent back as context: {role, content}
  controller: null, // the AbortController of the answer being streamed
  cancelCountdown: null,
};

function authHeaders() {
  return { "api-key": state.key };
}

// --- errors, said plainly -----------------------------------------------------------------------

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  if (state.cancelCountdown) state.cancelCountdown();
  state.cancelCountdown = null;
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function explain(error, deployment) {
  switch (error.code) {
    case "invalid_api_key":
      return "The subscription key was not accepted: it is missing, wrong, or was regenerated. Paste a valid key above.";
    case "subscription_suspended":
    case "subscription_expired":
      return `This subscription cannot be used now: ${error.message}`;
    case "quota_exceeded": {
      const reset = error.headers.get("x-ratelimit-reset-quota");
      return `This subscription's token quota is spent${reset ? `; it resets at ${formatTime(reset)}` : ""}.`;
    }
    case "deployment_not_allowed":
      return `This subscription may not use the deployment “${deployment}”. Pick another one.`;
    case "DeploymentNotFound":
    case "model_not_found":
      return `The gateway has no deployment named “${deployment}”.`;
    case "no_backend_available":
      return "No backend can answer for this deployment right now (all are down or their circuit breakers are open). Try again shortly.";
    default:
      break;
  }
  if (error.status === 401) return "The subscription key was not accepted. Paste a valid key above.";
  if (error.status === 403) return `Not allowed: ${error.message}`;
  return `The gateway answered ${error.status}: ${error.message}`;
}

/** A 429: the message and a countdown from Retry-After, with Send held back until it runs out. */
function showThrottled(error) {
  const seconds = retryAfterSeconds(error.headers);
  const why =
    error.code === "backends_throttled"
      ? "Every backend for this deployment is busy."
      : "Throttled: this subscription has used its request or token rate for the minute.";
  if (seconds === null) {
    showError(`${why} Try again shortly.`);
    return;
  }
  ui.error.hidden = false;
  ui.send.disabled = true;
  state.cancelCountdown = countdown(
    seconds,
    (left) => {
      ui.error.textContent = `${why} Try again in ${left} s.`;
    },
    () => {
      state.cancelCountdown = null;
      ui.error.textContent = "You can send again.";
      ui.send.disabled = state.controller !== null;
    },
  );
}

async function showFailure(response, deployment) {
  const error = await errorOf(response);
  if (error.status === 429) showThrottled(error);
  else showError(explain(error, deployment));
  return error;
}

// --- the key and the deployments ----------------------------------------------------------------

async function loadDeployments() {
  ui.deployment.disabled = true;
  ui.deployment.replaceChildren(el("option", { value: "", text: "Loading…" }));
  let response;
  try {
    response = await fetch("../v1/models", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    showError(`The gateway cannot be reached: ${err.message}`);
    return;
  }
  if (!response.ok) {
    ui.deployment.replaceChildren(el("option", { value: "", text: "No deployments" }));
    await showFailure(response, "");
    return;
  }
  const names = (await response.json()).data.map((model) => model.id);
  if (names.length === 0) {
    ui.deployment.replaceChildren(el("option", { value: "", text: "No deployment allowed" }));
    showError("This subscription may not use any deployment.");
    return;
  }
  const remembered = storage.get(DEPLOYMENT_NAME);
  // Embedding deployments cannot chat: prefer another one unless the user picked it before.
  const preferred = names.includes(remembered) ? remembered : names.find((n) => !/embed/i.test(n)) || names[0];
  ui.deployment.replaceChildren(...names.map((name) => el("option", { value: name, text: name, selected: name === preferred })));
  ui.deployment.disabled = false;
}

async function useKey(key) {
  state.key = key;
  ui.key.value = key;
  clearError();
  if (!key) return;
  await loadDeployments();
  await refreshUsage();
}

// --- the usage panel ----------------------------------------------------------------------------

function limitLine(label, limit) {
  if (!limit || limit.limit === null || limit.limit === undefined) return el("div", {}, el("dt", { text: label }), el("dd", { text: "no limit" }));
  const remaining = limit.remaining === null || limit.remaining === undefined ? "–" : formatNumber(limit.remaining);
  return el("div", {}, el("dt", { text: label }), el("dd", { text: `${remaining} left of ${formatNumber(limit.limit)}` }));
}

async function refreshUsage() {
  if (!state.key) return;
  let response;
  try {
    response = await fetch("../usage", { headers: authHeaders(), cache: "no-store" });
  } catch {
    return;
  }
  if (!response.ok) {
    const error = await errorOf(response);
    ui.usage.replaceChildren(el("p", { class: "help", text: `Usage not available: ${error.message}` }));
    return;
  }
  const usage = await response.json();
  const current = usage.current;
  const quota = usage.limits.token_quota;
  const rows = [
    el("div", {}, el("dt", { text: "Subscription" }), el("dd", { text: usage.subscription.name || usage.subscription.id })),
    el("div", {}, el("dt", { text: `Tokens this ${PERIODS[usage.period] || usage.period}` }), el("dd", { text: formatNumber(current.total_tokens) })),
    el("div", {}, el("dt", { text: "Requests" }), el("dd", { text: formatNumber(current.requests) })),
    el("div", {}, el("dt", { text: "Cost" }), el("dd", { text: Number(current.cost).toFixed(4) })),
    limitLine("Tokens per minute", usage.limits.tokens_per_minute),
    limitLine("Requests per minute", usage.limits.requests_per_minute),
    quota
      ? el("div", {}, el("dt", { text: `Quota (${quota.period})` }), el("dd", { text: `${formatNumber(quota.remaining)} left of ${formatNumber(quota.limit)}, resets ${formatTime(quota.resets_at)}` }))
      : el("div", {}, el("dt", { text: "Quota" }), el("dd", { text: "none" })),
  ];
  ui.usage.replaceChildren(el("dl", { class: "facts" }, ...rows));
}

// --- the conversation ---------------------------------------------------------------------------

function addMessage(role, text) {
  ui.empty.hidden = true;
  const content = el("div", { class: "content", text });
  const badges = el("ul", { class: "badges", "aria-label": "About this answer" });
  const item = el("li", { class: `message ${role}` }, el("span", { class: "who", text: role === "user" ? "You" : "Assistant" }), content, badges);
  ui.log.append(item);
  item.scrollIntoView({ block: "end" });
  return { item, content, badges };
}

function badge(list, label, value, kind = "") {
  list.append(el("li", { class: `badge ${kind}`.trim() }, el("span", { class: "label", text: label }), " ", el("span", { class: "value", text: value })));
}

function showBadges(list, headers, usage, stopped) {
  const cache = headers.get("x-cache");
  const backend = headers.get("x-gateway-backend") || (cache === "HIT" ? "cache" : "–");
  badge(list, "backend", backend, "backend");
  if (cache) {
    const similarity = headers.get("x-cache-similarity");
    badge(list, "cache", similarity ? `${cache} ${Number(similarity).toFixed(3)}` : cache, cache === "HIT" ? "hit" : "");
  }
  if (usage) badge(list, "tokens", `${usage.total_tokens} (${usage.prompt_tokens} in, ${usage.completion_tokens} out)`);
  const left = [
    ["tokens/min left", headers.get("x-ratelimit-remaining-tokens")],
    ["requests/min left", headers.get("x-ratelimit-remaining-requests")],
    ["quota left", headers.get("x-ratelimit-remaining-quota-tokens")],
  ];
  for (const [label, value] of left) if (value !== null) badge(list, label, formatNumber(value));
  if (stopped) badge(list, "stopped", "by you", "warn");
}

/** Server-sent events from a fetch body: calls `onData` with each `data:` payload, as they arrive. */
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data && onData(data) === false) return;
    }
  }
}

function setBusy(busy) {
  ui.send.disabled = busy || state.cancelCountdown !== null;
  ui.stop.disabled = !busy;
  ui.deployment.disabled = busy;
}

async function send(text) {
  const deployment = ui.deployment.value;
  if (!state.key) {
    showError("Paste a subscription key first.");
    ui.key.focus();
    return;
  }
  if (!deployment) {
    showError("Pick a deployment first.");
    return;
  }
  clearError();
  storage.set(DEPLOYMENT_NAME, deployment);
  state.history.push({ role: "user", content: text });
  const question = addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.item.setAttribute("aria-busy", "true");
  ui.message.value = "";
  state.controller = new AbortController();
  setBusy(true);
  let response = null;
  let usage = null;
  let stopped = false;
  try {
    response = await fetch("../v1/chat/completions", {
      method: "POST",
      headers: { ...authHeaders(), "content-type": "application/json" },
      body: JSON.stringify({ model: deployment, messages: state.history, stream: true, stream_options: { include_usage: true } }),
      signal: state.controller.signal,
    });
    if (!response.ok) {
      await showFailure(response, deployment);
      // Nothing was answered: take the question back so it can be sent again as it was.
      state.history.pop();
      question.item.remove();
      answer.item.remove();
      ui.message.value = text;
      ui.empty.hidden = ui.log.children.length > 0;
      return;
    }
    await readEvents(response.body, (data) => {
      if (data === "[DONE]") return false;
      const chunk = JSON.parse(data);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer.content.textContent += delta.content;
        answer.item.scrollIntoView({ block: "end" });
      }
      return true;
    });
  } catch (err) {
    if (err.name === "AbortError") stopped = true;
    else showError(`The answer broke off: ${err.message}`);
  } finally {
    state.controller = null;
    setBusy(false);
    answer.item.removeAttribute("aria-busy");
  }
  if (!answer.item.isConnected) return;
  if (answer.content.textContent) state.history.push({ role: "assistant", content: answer.content.textContent });
  else answer.content.textContent = stopped ? "(stopped before the first word)" : "(no answer)";
  if (response) showBadges(answer.badges, response.headers, usage, stopped);
  refreshUsage();
}

// --- wiring -------------------------------------------------------------------------------------

ui.settings.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (key) storage.set(KEY_NAME, key);
  useKey(key);
});

ui.forget.addEventListener("click", () => {
  storage.remove(KEY_NAME);
  state.key = "";
  ui.key.value = "";
  ui.deployment.disabled = true;
  ui.deployment.replaceChildren(el("option", { value: "", text: "Enter a key first" }));
  ui.usage.replaceChildren(el("p", { class: "help", text: "Enter a key to see the usage of its subscription." }));
  ui.key.focus();
});

ui.deployment.addEventListener("change", () => storage.set(DEPLOYMENT_NAME, ui.deployment.value));

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value.trim();
  if (text && !ui.send.disabled) send(text);
});

ui.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  ui.message.focus();
});

ui.clear.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  ui.log.replaceChildren();
  ui.empty.hidden = false;
  clearError();
  ui.message.focus();
});

ui.refreshUsage.addEventListener("click", () => refreshUsage());

useKey(takeKeyFromFragment(KEY_NAME) || storage.get(KEY_NAME));
