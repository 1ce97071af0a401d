// pve_exporter guest control page: plain JS, no build step, talks to /api/v1 with a bearer token
// kept only in sessionStorage. Every value from the API is written with textContent (never HTML).
"use strict";

const API = new URL("../api/v1/", window.location.href);
const TOKEN_KEY = "pve_exporter.control.token";
const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "interrupted"]);
const FOLLOW_MS = 1000;
const PAGE = 25;

const state = { scopes: [], historyOffset: 0, historyTotal: 0, followed: new Map(), pending: null };

const $ = (id) => document.getElementById(id);

function token() { return window.sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body, extraHeaders) {
  const headers = { "Accept": "application/json", ...(extraHeaders || {}) };
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(new URL(path, API), init);
  let doc = null;
  try { doc = await resp.json(); } catch (e) { doc = null; }
  if (!resp.ok) {
    if (resp.status === 401 && path !== "whoami") signOut("The token is no longer accepted; sign in again.");
    throw new ApiError(resp.status, doc);
  }
  return doc;
}

function explain(err) {
  if (!(err instanceof ApiError)) return String(err);
  const b = err.body || {};
  const tips = (b.recovery_suggestions || []).join(" ");
  let text = `${err.status} ${b.error_code || ""}: ${b.error || err.message}`;
  if (err.status === 429 && b.details && b.details.retry_after_seconds) text += ` (retry in ${b.details.retry_after_seconds} s)`;
  return tips ? `${text} — ${tips}` : text;
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
  m.hidden = !text;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

// ---- session ----------------------------------------------------------------------------------
async function signIn(candidate) {
  window.sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    const me = await api("GET", "whoami");
    state.scopes = me.scopes;
    $("session-user").textContent = me.user;
    $("session-scopes").textContent = me.scopes.join(", ");
    $("session").hidden = false;
    $("login").hidden = true;
    $("app").hidden = false;
    $("login-error").hidden = true;
    await Promise.all([loadClusters(), loadGuests(), loadHistory()]);
  } catch (err) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = explain(err);
    $("login-error").hidden = false;
  }
}

function signOut(why) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  state.followed.clear();
  $("session").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
  $("token-input").value = "";
  say(why || "", Boolean(why));
}

// ---- clusters and guests ------------------------------------------------------------------------
async function loadClusters() {
  const doc = await api("GET", "clusters");
  const sel = $("f-cluster");
  const keep = sel.value;
  while (sel.options.length > 1) sel.remove(1);
  const parts = [];
  for (const c of doc.clusters) {
    const o = document.createElement("option");
    o.value = c.name;
    o.textContent = c.name;
    sel.appendChild(o);
    const age = c.age_seconds === null ? "never collected" : `data ${Math.round(c.age_seconds)} s old`;
    parts.push(`${c.name}: ${c.health}, ${age}`);
  }
  sel.value = keep;
  $("clusters-line").textContent = parts.join(" · ");
}

function guestQuery() {
  const q = new URLSearchParams();
  for (const [param, id] of [["cluster", "f-cluster"], ["node", "f-node"], ["type", "f-type"],
                             ["status", "f-status"], ["tag", "f-tag"]]) {
    const v = $(id).value.trim();
    if (v) q.set(param, v);
  }
  return q.toString();
}

async function loadGuests() {
  const qs = guestQuery();
  const doc = await api("GET", "guests" + (qs ? "?" + qs : ""));
  const body = $("guests").tBodies[0];
  body.replaceChildren();
  const canPower = state.scopes.includes("power");
  for (const g of doc.guests) {
    const tr = document.createElement("tr");
    tr.dataset.key = `${g.cluster}/${g.vmid}`;
    cell(tr, g.cluster);
    cell(tr, g.vmid);
    cell(tr, g.name);
    cell(tr, g.node);
    cell(tr, g.type + (g.template ? " (template)" : ""));
    cell(tr, g.status, "status status-" + g.status);
    cell(tr, g.tags.join(", "));
    const td = cell(tr, "", "actions");
    for (const action of ["start", "stop", "restart"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = action;
      b.dataset.action = action;
      b.disabled = !canPower || g.template || Boolean(g.active_operation);
      b.addEventListener("click", () => askConfirm(g, action));
      td.appendChild(b);
    }
    body.appendChild(tr);
  }
  if (!doc.guests.length) {
    const tr = document.createElement("tr");
    cell(tr, "no guests match").colSpan = 8;
    body.appendChild(tr);
  }
}

// ---- actions ----------------------------------------------------------------------------------
const FORCE_LABEL = {
  start: "force (no effect on start)",
  stop: "force: hard stop instead of a guest shutdown",
  restart: "force: reset (qemu) / stop and start (lxc) instead of a guest reboot",
};

function askConfirm(guest, action) {
  state.pending = { guest, action };
  const label = guest.name ? `${guest.name} (${guest.type} ${guest.vmid})` : `${guest.type} ${guest.vmid}`;
  $("confirm-title").textContent = `${action[0].toUpperCase()}${action.slice(1)} ${label}?`;
  $("confirm-text").textContent = `Cluster ${guest.cluster}, node ${guest.node}, now ${guest.status}.`;
  $("confirm-force").checked = false;
  $("confirm-force").disabled = action === "start";
  $("confirm-force-label").textContent = FORCE_LABEL[action];
  $("confirm").showModal();
}

async function runPending() {
  const p = state.pending;
  state.pending = null;
  if (!p) return;
  const body = { force: $("confirm-force").checked && p.action !== "start" };
  const t = Number($("confirm-timeout").value);
  if (t >= 1 && t <= 3600) body.timeout_seconds = t;
  const key = (window.crypto && window.crypto.randomUUID) ? window.crypto.randomUUID()
    : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  try {
    const op = await api("POST", `clusters/${encodeURIComponent(p.guest.cluster)}/guests/${p.guest.vmid}/${p.action}`,
                         body, { "Idempotency-Key": key });
    say(`${p.action} ${p.guest.cluster}/${p.guest.vmid}: accepted (operation ${op.id})`, false);
    follow(op);
    await loadGuests();
  } catch (err) {
    say(explain(err), true);
  }
}

function follow(op) {
  if (state.followed.has(op.id)) return;
  const li = document.createElement("li");
  li.id = "follow-" + op.id;
  $("followed").appendChild(li);
  $("followed-empty").hidden = true;
  state.followed.set(op.id, li);
  renderFollowed(li, op);
  const tick = async () => {
    if (!state.followed.has(op.id)) return;
    try {
      const cur = await api("GET", "operations/" + op.id);
      renderFollowed(li, cur);
      if (TERMINAL.has(cur.status)) {
        state.followed.delete(op.id);
        await Promise.all([loadGuests(), loadHistory()]);
        return;
      }
    } catch (err) {
      li.textContent += " (" + explain(err) + ")";
    }
    window.setTimeout(tick, FOLLOW_MS);
  };
  window.setTimeout(tick, FOLLOW_MS);
}

function renderFollowed(li, op) {
  li.dataset.status = op.status;
  li.className = "status-" + op.status;
  const force = op.force ? " (force)" : "";
  const name = op.resource_name ? ` ${op.resource_name}` : "";
  let text = `${op.operation}${force} ${op.cluster}/${op.resource_id}${name}: ${op.status}`;
  if (op.duration_seconds !== null) text += ` after ${op.duration_seconds} s`;
  if (op.error_message) text += ` — ${op.error_message}`;
  li.textContent = text;
}

// ---- history ----------------------------------------------------------------------------------
function historyQuery() {
  const q = new URLSearchParams();
  for (const [param, id] of [["cluster", "h-cluster"], ["node", "h-node"], ["resource_type", "h-type"],
                             ["resource_id", "h-vmid"], ["operation", "h-operation"], ["status", "h-status"],
                             ["user", "h-user"]]) {
    const v = $(id).value.trim();
    if (v) q.set(param, v);
  }
  for (const [param, id] of [["since", "h-since"], ["until", "h-until"]]) {
    const v = $(id).value;
    if (v) q.set(param, v + (v.length === 16 ? ":00Z" : "Z"));
  }
  q.set("limit", String(PAGE));
  q.set("offset", String(state.historyOffset));
  return q.toString();
}

async function loadHistory() {
  let doc;
  try {
    doc = await api("GET", "operations?" + historyQuery());
  } catch (err) {
    say(explain(err), true);
    return;
  }
  state.historyTotal = doc.total;
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const op of doc.operations) {
    const tr = document.createElement("tr");
    tr.dataset.id = op.id;
    tr.dataset.key = `${op.cluster}/${op.resource_id}`;
    tr.dataset.status = op.status;
    cell(tr, fmtTime(op.requested_at));
    cell(tr, op.cluster);
    cell(tr, `${op.resource_type || "?"} ${op.resource_id}` + (op.node ? ` @${op.node}` : ""));
    cell(tr, op.resource_name);
    cell(tr, op.operation + (op.force ? " (force)" : ""));
    cell(tr, op.status, "status status-" + op.status);
    cell(tr, op.user);
    cell(tr, op.duration_seconds === null ? "" : `${op.duration_seconds} s`);
    cell(tr, op.error_message || (op.batch_id ? `batch ${op.batch_id.slice(0, 8)}` : ""));
    body.appendChild(tr);
  }
  const first = doc.total ? state.historyOffset + 1 : 0;
  const last = state.historyOffset + doc.operations.length;
  $("history-page").textContent = `${first}–${last} of ${doc.total}`;
  $("history-prev").disabled = state.historyOffset === 0;
  $("history-next").disabled = last >= doc.total;
}

// ---- wiring -----------------------------------------------------------------------------------
function guard(fn) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    try { await fn(); } catch (err) { say(explain(err), true); }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (value) signIn(value);
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("guest-filters").addEventListener("submit", guard(async () => { await loadClusters(); await loadGuests(); }));
  $("history-filters").addEventListener("submit", guard(async () => { state.historyOffset = 0; await loadHistory(); }));
  $("history-prev").addEventListener("click", guard(async () => {
    state.historyOffset = Math.max(0, state.historyOffset - PAGE);
    await loadHistory();
  }));
  $("history-next").addEventListener("click", guard(async () => {
    state.historyOffset += PAGE;
    await loadHistory();
  }));
  $("confirm-cancel").addEventListener("click", () => { state.pending = null; $("confirm").close(); });
  $("confirm-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("confirm").close();
    runPending();
  });
  const saved = token();
  if (saved) signIn(saved);
});
