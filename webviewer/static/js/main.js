// Start-up and navigation: read /config.json, restore or start a session, route by URL hash.
// Routes carry only ids (never a token), so a link can be shared with a colleague who logs in.

import { Session, ApiError, errorText } from "./api.js";
import { Directory } from "./directory.js";
import { h, mount } from "./dom.js";
import { loginView } from "./login.js";
import { patientSearchView, patientFormView } from "./patients.js";
import { patientView } from "./patient_page.js";
import { findingFormView } from "./findings.js";
import { findingHistoryView } from "./finding_history.js";
import { uploadView } from "./upload.js";
import { viewerView } from "./viewer.js";
import { worklistView } from "./worklist.js";

/** @type {Array<[RegExp, (ctx: any, m: RegExpMatchArray, query: any) => any]>} the views by hash path */
const ROUTES = [
  [/^#\/patients\/?$/, (ctx, m, query) => patientSearchView(ctx, query)],
  // from the work list, back to it (only that: a route never takes a free target)
  [/^#\/patients\/new$/, (ctx, m, query) => patientFormView(ctx, null, query.get("from") === "worklist" ? "#/worklist" : null)],
  [/^#\/patients\/([0-9a-f-]{36})\/edit$/, (ctx, m) => patientFormView(ctx, m[1])],
  [/^#\/patients\/([0-9a-f-]{36})$/, (ctx, m) => patientView(ctx, m[1])],
  [/^#\/patients\/([0-9a-f-]{36})\/upload$/, (ctx, m) => uploadView(ctx, m[1])],
  [/^#\/patients\/([0-9a-f-]{36})\/findings\/new$/, (ctx, m) => findingFormView(ctx, m[1], null)],
  [/^#\/patients\/([0-9a-f-]{36})\/findings\/([0-9a-f-]{36})$/, (ctx, m) => findingFormView(ctx, m[1], m[2])],
  [/^#\/patients\/([0-9a-f-]{36})\/institutions\/([0-9a-f-]{36})\/findings\/([0-9a-f-]{36})\/history$/,
    (ctx, m) => findingHistoryView(ctx, m[1], m[2], m[3])],
  [/^#\/worklist$/, (ctx) => worklistView(ctx)],
  [/^#\/view\/([0-9a-f-]{36})\/([0-9a-f-]{36})\/([0-9a-f]{64})$/, (ctx, m, query) => viewerView(ctx, m[1], m[2], m[3], query)],
];

const main = document.getElementById("main");
const alertBox = document.getElementById("alert");
const statusBox = document.getElementById("status");
let cleanup = null;
let ctx = null;
/** @type {AbortController | null} aborted when the user leaves the route on screen */
let onScreen = null;

/** A message for everyone: visible and read out by screen readers (aria-live). */
function announce(text) {
  statusBox.textContent = "";
  // a fresh text node is announced even when the same words repeat
  requestAnimationFrame(() => { statusBox.textContent = text; });
}

function showAlert(text, kind = "error") {
  if (!text) { alertBox.hidden = true; alertBox.replaceChildren(); return; }
  alertBox.className = `alert alert-${kind}`;
  mount(alertBox,
    h("span", { text }),
    h("button", { type: "button", class: "btn btn-quiet", "aria-label": "Dismiss message", text: "×",
      onclick: () => showAlert(null) }));
  alertBox.hidden = false;
}

function describeError(err) {
  if (err instanceof ApiError) return err.displayMessage;
  return `Something went wrong in the viewer: ${errorText(err && err.message ? err.message : err)}`;
}

function parseHash() {
  const raw = location.hash || "#/patients";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

/**
 * The context a view of one route draws with: while the user stays on the route it is `ctx`;
 * once they leave it, its `signal` is aborted, its `main` is a detached element and its messages
 * go nowhere. A view that waits for a server (a node answering after a minute) so cannot draw over
 * the page the user went to: every view draws through `ctx.main`, so this one check covers them all.
 * @param {AbortSignal} signal aborted when the user leaves the route
 */
function routeContext(signal) {
  const elsewhere = document.createElement("div");
  const live = (fn) => (/** @type {any[]} */ ...args) => { if (!signal.aborted) fn(...args); };
  return Object.create(ctx, {
    signal: { value: signal },
    main: { get: () => (signal.aborted ? elsewhere : main) },
    showAlert: { value: live(showAlert) },
    announce: { value: live(announce) },
    navigate: { value: live(navigate) },
  });
}

/** @param {(() => void) | null} stop a view's cleanup */
function stopView(stop) {
  try { if (stop) stop(); } catch { /* a view's cleanup must not block navigation */ }
}

async function route() {
  if (onScreen) onScreen.abort();
  const current = onScreen = new AbortController();
  stopView(cleanup);
  cleanup = null;
  showAlert(null);
  if (!ctx.session.active) {
    renderChrome();
    cleanup = loginView(ctx);
    return;
  }
  renderChrome();
  const { path, query } = parseHash();
  for (const [pattern, view] of ROUTES) {
    const m = path.match(pattern);
    if (m) {
      let stop = null;
      try {
        stop = await view(routeContext(current.signal), m, query) || null;
      } catch (err) {
        if (!current.signal.aborted && !(err instanceof ApiError && err.isAuthFailure)) showAlert(describeError(err));
      }
      if (current.signal.aborted) stopView(stop); else cleanup = stop;
      return;
    }
  }
  location.replace("#/patients");
}

function renderChrome() {
  const active = ctx.session.active;
  document.getElementById("nav").hidden = !active;
  document.getElementById("account").hidden = !active;
  if (active) {
    const user = ctx.session.user;
    document.getElementById("account-name").textContent = user.full_name || user.username;
  }
}

function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

async function start() {
  let config;
  try {
    const response = await fetch("/config.json", { cache: "no-cache" });
    config = await response.json();
  } catch {
    mount(main, h("p", { class: "panel", text: "The viewer's configuration could not be loaded. Reload the page; if this persists, tell IT." }));
    return;
  }
  const session = new Session(config.toplevel_url);
  ctx = {
    session,
    dir: new Directory(session),
    main,
    announce,
    showAlert,
    describeError,
    navigate,
    expiredMessage: null,
  };
  session.onExpired = (err) => {
    ctx.dir = new Directory(session);
    ctx.expiredMessage = err.code === "session_expired"
      ? "Your session has ended. Please log in again."
      : err.code === "logged_out"
        ? "You logged out in another tab of this browser. Please log in again."
        : err.code === "bad_answer"
          ? `Your login could not be renewed: ${err.message}. Please log in again.`
          : "Your login has expired. Please log in again.";
    route();
  };
  session.onRenewed = () => renderChrome();
  session.restore();
  document.getElementById("logout").addEventListener("click", async () => {
    await session.logout();
    ctx.dir = new Directory(session);
    ctx.expiredMessage = null;
    announce("You are logged out.");
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
