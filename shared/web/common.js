// Helpers both pages use: building DOM without HTML strings, keys in browser storage, the gateway's errors.

/** An element with attributes and children; text is always set as text, never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Browser storage that may be unavailable (private modes, policies): the page still works for this visit. */
export const storage = {
  get(name) {
    try {
      return window.localStorage.getItem(name) || "";
    } catch {
      return "";
    }
  },
  set(name, value) {
    try {
      window.localStorage.setItem(name, value);
    } catch {
      // Storage refused: the key lives in the page only, until it is closed.
    }
  },
  remove(name) {
    try {
      window.localStorage.removeItem(name);
    } catch {
      // Nothing was stored.
    }
  },
};

/**
 * A key handed over in the URL fragment (`#key=...`, as `make run` prints it): stored, then removed from the
 * address bar and the history, so it is not left where a screen share or a bookmark would show it.
 * The fragment never reaches a server.
 */
export function takeKeyFromFragment(storageName) {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const key = params.get("key");
  if (!key) return "";
  storage.set(storageName, key);
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return key;
}

/** Seconds to wait from `Retry-After` (seconds or an HTTP date), else `retry-after-ms`; null when neither. */
export function retryAfterSeconds(headers) {
  const value = headers.get("retry-after");
  if (value) {
    const seconds = Number(value);
    if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
    const when = Date.parse(value);
    if (!Number.isNaN(when)) return Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }
  const ms = Number(headers.get("retry-after-ms"));
  return Number.isFinite(ms) && ms > 0 ? Math.ceil(ms / 1000) : null;
}

/** A failed answer as {status, code, message, headers}: the OpenAI envelope when there is one. */
export async function errorOf(response) {
  let code = "";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || body.error.type || "";
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: the status line is all there is.
  }
  return { status: response.status, code, message, headers: response.headers };
}

/** Calls `tick(secondsLeft)` now and each second down to 0, then `done()`; returns a function that cancels it. */
export function countdown(seconds, tick, done) {
  let left = seconds;
  tick(left);
  const timer = window.setInterval(() => {
    left -= 1;
    if (left <= 0) {
      window.clearInterval(timer);
      done();
    } else {
      tick(left);
    }
  }, 1000);
  return () => window.clearInterval(timer);
}

export function formatNumber(value) {
  if (value === null || value === undefined || value === "") return "–";
  const number = Number(value);
  return Number.isFinite(number) ? number.toLocaleString("en-US") : String(value);
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}
