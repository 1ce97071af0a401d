// pve_exporter guest control page: plain JS, no build step, talks to /api/v1 with a bearer token
// kept only in sessionStorage. Every value from the API is written with textContent (never HTML).
"use strict";

const API = new URL("../api/v1/", window.location.href);
const TOKEN_KEY = "pve_exporter.control.token";
const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "interrupted"]);
const FOLLOW_MS = 1000;
const REFRESH_MS = 5000;
const REFRESH_BIG_MS = 30000;  // with thousands of guests the list is fetched less often
const BIG = 2000;
const MAX_ROWS = 500;  // rows drawn at most; the filter narrows the rest
const PAGE = 25;
const LOG_PAGE = 500;

const state = {
  scopes: [], canPower: false, guests: [], clusters: [], sort: { key: "vmid", dir: 1 }, selected: new Set(),
  historyOffset: 0, historyTotal: 0, followed: new Map(), pending: null, refreshTimer: null,
  bulk: { plan: null, batches: [], skipped: [], timer: null }, log: { opId: null, shown: 0, timer: null },
};

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

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function cell(tr, text, cls) {
  const td = el("td", text === null || text === undefined ? "" : text, cls);
  tr.appendChild(td);
  return td;
}

function button(text, onClick, attrs) {
  const b = el("button", text);
  b.type = "button";
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("data-")) b.dataset[k.slice(5).replace(/-(\w)/g, (_, c) => c.toUpperCase())] = v;
    else b.setAttribute(k, v);
  }
  b.addEventListener("click", onClick);
  return b;
}

function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)}\u00a0${units[i]}`;  // never split from its unit
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m`;
  return `${s}s`;
}

function fmtAge(s) { return s === null || s === undefined ? "never" : `${Math.round(s)} s`; }

function guestLabel(g) {
  return g.name ? `${g.name} (${g.type} ${g.vmid})` : `${g.type} ${g.vmid}`;
}

// ---- session ----------------------------------------------------------------------------------
async function signIn(candidate) {
  window.sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    const me = await api("GET", "whoami");
    state.scopes = me.scopes;
    state.canPower = me.scopes.includes("power") || me.scopes.includes("admin");
    document.body.classList.toggle("read-only", !state.canPower);
    $("session-user").textContent = me.user;
    $("session-scopes").textContent = me.scopes.join(", ") + (state.canPower ? "" : ": read only, no power actions");
    $("session").hidden = false;
    $("login").hidden = true;
    $("app").hidden = false;
    $("login-error").hidden = true;
    await Promise.all([loadGuests(), loadHistory()]);
    scheduleRefresh();
  } catch (err) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = explain(err);
    $("login-error").hidden = false;
  }
}

function signOut(why) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  if (state.refreshTimer) window.clearTimeout(state.refreshTimer);
  if (state.bulk.timer) window.clearTimeout(state.bulk.timer);
  if (state.log.timer) window.clearTimeout(state.log.timer);
  state.refreshTimer = null;
  state.followed.clear();
  state.selected.clear();
  state.bulk = { plan: null, batches: [], skipped: [], timer: null };
  state.log = { opId: null, shown: 0, timer: null };
  if ($("log-dialog").open) $("log-dialog").close();
  $("session").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
  $("token-input").value = "";
  say(why || "", Boolean(why));
}

// ---- clusters and guests ------------------------------------------------------------------------
function scheduleRefresh() {
  const every = state.guests.length > BIG ? REFRESH_BIG_MS : REFRESH_MS;
  state.refreshTimer = window.setTimeout(async () => {
    if (!token()) return;
    try { await loadGuests(); } catch (err) { say(explain(err), true); }
    if (token()) scheduleRefresh();
  }, every);
}

async function loadGuests() {
  const doc = await api("GET", "guests");
  state.guests = doc.guests;
  state.clusters = doc.clusters;
  document.body.classList.toggle("single-cluster", doc.clusters.length === 1);
  const known = new Set(doc.guests.map((g) => `${g.cluster}/${g.vmid}`));
  for (const k of [...state.selected]) if (!known.has(k)) state.selected.delete(k);
  renderSummary();
  fillClusterSelect();
  renderGuests();
}

function renderSummary() {
  const ul = $("cluster-summary");
  ul.replaceChildren();
  for (const c of state.clusters) {
    const li = el("li");
    li.dataset.cluster = c.name;
    li.dataset.health = c.health;
    li.appendChild(el("strong", c.name));
    li.appendChild(el("span", c.health, "health-" + c.health));
    const parts = [
      `nodes ${c.nodes_online}/${c.nodes} online`,
      `guests ${c.guests_running}/${c.guests} running`,
      `data ${fmtAge(c.age_seconds)} old`,
      c.failing_collectors.length ? `failing: ${c.failing_collectors.join(", ")}` : "no collector failing",
    ];
    for (const p of parts) {
      li.appendChild(el("span", "·", "sep"));
      const s = el("span", p);
      if (p.startsWith("failing:")) s.className = "status-failed";
      li.appendChild(s);
    }
    li.title = c.health === "unreachable"
      ? "PVE does not answer: the guests shown are the last known ones"
      : `collected every ${c.interval_seconds} s`;
    ul.appendChild(li);
  }
}

function fillClusterSelect() {
  const sel = $("f-cluster");
  const keep = sel.value;
  while (sel.options.length > 1) sel.remove(1);
  for (const c of state.clusters) {
    const o = el("option", c.name);
    o.value = c.name;
    sel.appendChild(o);
  }
  sel.value = keep;
}

function visibleGuests() {
  const text = $("g-text").value.trim().toLowerCase();
  const cluster = $("f-cluster").value, type = $("f-type").value, status = $("f-status").value;
  const words = text ? text.split(/\s+/) : [];
  const out = state.guests.filter((g) => {
    if ((cluster && g.cluster !== cluster) || (type && g.type !== type) || (status && g.status !== status)) return false;
    if (!words.length) return true;
    const hay = [g.cluster, String(g.vmid), g.name || "", g.node, g.type, g.status, ...g.tags].join(" ").toLowerCase();
    return words.every((w) => hay.includes(w));
  });
  const { key, dir } = state.sort;
  const val = (g) => {
    if (key === "cpu") return g.cpu === null ? -1 : g.cpu;
    if (key === "mem") return g.mem === null ? -1 : g.mem;
    if (key === "uptime") return g.uptime === null ? -1 : g.uptime;
    if (key === "backup") return g.last_backup || "";
    if (key === "vmid") return g.vmid;
    return String(g[key] || "").toLowerCase();
  };
  out.sort((a, b) => {
    const x = val(a), y = val(b);
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.cluster < b.cluster ? -1 : a.cluster > b.cluster ? 1 : a.vmid - b.vmid;
  });
  return out;
}

// Why an action cannot be run on a guest now (null: it can).
function blocked(g, action) {
  if (g.template) return "templates cannot be started, stopped or restarted";
  if (!g.node_online) return `node ${g.node} is offline`;
  if (g.active_operation) return `an action is in progress (operation ${g.active_operation.slice(0, 8)})`;
  const up = g.status === "running" || g.status === "paused";
  if (g.status === "unknown") return "the guest's state is unknown";
  if (action === "start" && g.status !== "stopped") return `already ${g.status}`;
  if (action !== "start" && !up) return "not running";
  return null;
}

function renderGuests() {
  const focusKey = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.focusKey : undefined;
  const rows = visibleGuests();
  const clusterOf = new Map(state.clusters.map((c) => [c.name, c]));
  const body = $("guests").tBodies[0];
  body.replaceChildren();
  for (const g of rows.slice(0, MAX_ROWS)) {
    const key = `${g.cluster}/${g.vmid}`;
    const tr = el("tr");
    tr.dataset.key = key;
    tr.dataset.status = g.status;
    if (state.canPower) {
      const td = cell(tr, "", "power-only");
      const box = el("input");
      box.type = "checkbox";
      box.className = "select";
      box.checked = state.selected.has(key);
      box.dataset.focusKey = key + ":select";
      box.setAttribute("aria-label", `select ${guestLabel(g)}`);
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(key); else state.selected.delete(key);
        tr.classList.toggle("selected", box.checked);
        renderBulkBar();
      });
      tr.classList.toggle("selected", box.checked);
      td.appendChild(box);
    }
    cell(tr, g.cluster).dataset.col = "cluster";
    cell(tr, g.vmid).dataset.col = "vmid";
    const name = cell(tr, g.name, "name");
    name.dataset.col = "name";
    if (g.name) name.title = g.name;
    const node = cell(tr, g.node, "opt" + (g.node_online ? "" : " status-unknown"));
    if (!g.node_online) node.title = "node offline";
    cell(tr, g.type + (g.template ? " template" : ""), "opt wrap");
    const st = cell(tr, g.status, "status status-" + g.status);
    st.dataset.col = "status";
    const c = clusterOf.get(g.cluster) || {};
    const stale = c.health === "unreachable" || !c.fresh;
    const age = `figures ${fmtAge(g.data_age_seconds)} old` + (stale ? " (last known: the cluster does not answer)" : "");
    const cpu = cell(tr, g.cpu === null ? "" : `${(g.cpu * 100).toFixed(1)} %`, "num" + (stale ? " muted" : ""));
    cpu.dataset.col = "cpu";
    cpu.title = (g.maxcpu ? `of ${g.maxcpu} CPU(s); ` : "") + age;
    const memText = g.maxmem ? `${g.mem === null ? "–" : fmtBytes(g.mem)} / ${fmtBytes(g.maxmem)}` : "";
    const mem = cell(tr, memText, "num" + (stale ? " muted" : ""));
    mem.dataset.col = "mem";
    mem.title = age;
    tr.dataset.age = String(g.data_age_seconds);
    cell(tr, fmtDuration(g.uptime), "num opt").dataset.col = "uptime";
    const backup = cell(tr, g.last_backup ? g.last_backup.slice(0, 10) : "none", "num opt" + (g.last_backup ? "" : " muted"));
    backup.dataset.col = "backup";
    backup.title = g.last_backup
      ? `newest backup over every source: ${g.last_backup} (${fmtDuration((Date.now() - Date.parse(g.last_backup)) / 1000)} ago)`
      : "no backup known on any source";
    cell(tr, g.tags.join(", "), "opt wrap");
    if (state.canPower) {
      const td = cell(tr, "", "actions power-only");
      for (const action of ["start", "stop", "restart"]) {
        const why = blocked(g, action);
        const b = button(action, () => (action === "start" ? runAction(g, action, {}) : askConfirm(g, action)),
                         { "data-action": action, "data-focus-key": `${key}:${action}` });
        b.disabled = Boolean(why);
        b.title = why ? `${action}: ${why}` : `${action} ${guestLabel(g)}`;
        b.setAttribute("aria-label", `${action} ${guestLabel(g)}` + (why ? ` (unavailable: ${why})` : ""));
        td.appendChild(b);
      }
    }
    body.appendChild(tr);
  }
  if (rows.length > MAX_ROWS) {
    const tr = el("tr");
    cell(tr, `${rows.length - MAX_ROWS} more not shown: narrow the filter`, "muted").colSpan = 12;
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = el("tr");
    const empty = state.clusters.filter((c) => c.health !== "ok" && c.health !== "partial");
    cell(tr, empty.length ? `no guests shown; ${empty.map((c) => `${c.name} is ${c.health}`).join(", ")}`
      : "no guests match").colSpan = 12;
    body.appendChild(tr);
  }
  $("guest-count").textContent = `${rows.length} of ${state.guests.length}`
    + (rows.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown)` : "");
  for (const th of $("guests").tHead.querySelectorAll("th[data-col]")) {
    if (th.dataset.col === state.sort.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  const all = $("select-all");
  const shown = rows.slice(0, MAX_ROWS);
  all.checked = shown.length > 0 && shown.every((g) => state.selected.has(`${g.cluster}/${g.vmid}`));
  if (focusKey) refocus(focusKey);
  renderBulkBar();
}

// ---- single actions ---------------------------------------------------------------------------
const FORCE_LABEL = {
  stop: "force: hard stop instead of a guest shutdown",
  restart: "force: reset (qemu) / stop and start (lxc) instead of a guest reboot",
};
const EXPLAIN = {
  stop: "The guest is asked to shut down (ACPI / guest agent) and given the timeout.",
  restart: "The guest is asked to reboot (ACPI / guest agent) and given the timeout.",
};

function askConfirm(guest, action) {
  state.pending = { guest, action, opener: document.activeElement.dataset.focusKey };
  $("confirm-title").textContent = `${action[0].toUpperCase()}${action.slice(1)} ${guestLabel(guest)}?`;
  $("confirm-text").textContent = `Cluster ${guest.cluster}, node ${guest.node}, now ${guest.status}. ${EXPLAIN[action]}`;
  $("confirm-force").checked = false;
  $("confirm-force-label").textContent = FORCE_LABEL[action];
  $("confirm-ok").textContent = `${action[0].toUpperCase()}${action.slice(1)} ${guest.name || guest.vmid}`;
  $("confirm").showModal();
  $("confirm-cancel").focus();
}

async function runPending() {
  const p = state.pending;
  state.pending = null;
  if (!p) return;
  const body = { force: $("confirm-force").checked };
  const t = Number($("confirm-timeout").value);
  if (t >= 1 && t <= 3600) body.timeout_seconds = t;
  await runAction(p.guest, p.action, body);
  refocus(p.opener);
}

// The rows are redrawn every few seconds: focus goes back to the same control, found by its key.
function refocus(focusKey) {
  const again = focusKey && document.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
  if (again) again.focus();
}

async function runAction(g, action, body) {
  const key = (window.crypto && window.crypto.randomUUID) ? window.crypto.randomUUID()
    : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  try {
    const op = await api("POST", `clusters/${encodeURIComponent(g.cluster)}/guests/${g.vmid}/${action}`,
                         body, { "Idempotency-Key": key });
    say(`${action} ${g.cluster}/${g.vmid}: accepted (operation ${op.id})`, false);
    follow(op);
    await loadGuests();
  } catch (err) {
    say(explain(err), true);
  }
}

function follow(op) {
  if (state.followed.has(op.id)) return;
  const li = el("li");
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
      li.appendChild(el("span", " (" + explain(err) + ")"));
    }
    window.setTimeout(tick, FOLLOW_MS);
  };
  window.setTimeout(tick, FOLLOW_MS);
}

function opText(op) {
  const force = op.force ? " (force)" : "";
  const name = op.resource_name ? ` ${op.resource_name}` : "";
  let text = `${op.operation}${force} ${op.cluster}/${op.resource_id}${name}: ${op.status}`;
  if (op.duration_seconds !== null) text += ` after ${op.duration_seconds} s`;
  if (op.error_message) text += ` — ${op.error_message}`;
  return text;
}

function logButton(op) {
  return button("task log", () => openLog(op), { "class": "log", "data-op": op.id,
    "aria-label": `task log of ${op.operation} ${op.cluster}/${op.resource_id}` });
}

function renderFollowed(li, op) {
  li.dataset.status = op.status;
  li.className = "status-" + op.status;
  li.replaceChildren(el("span", opText(op)));
  if (op.upid) li.appendChild(logButton(op));
}

// ---- task log ---------------------------------------------------------------------------------
function openLog(op) {
  if (state.log.timer) window.clearTimeout(state.log.timer);
  state.log = { opId: op.id, shown: 0, timer: null };
  $("log-title").textContent = `Task log: ${op.operation}${op.force ? " (force)" : ""} ${op.cluster}/${op.resource_id}`
    + (op.resource_name ? ` ${op.resource_name}` : "");
  $("log-meta").textContent = op.upid || "";
  $("log-text").textContent = "";
  $("log-text").dataset.lines = "0";
  if (!$("log-dialog").open) $("log-dialog").showModal();
  $("log-close").focus();
  pollLog(op.id);
}

async function pollLog(opId) {
  if (state.log.opId !== opId || !$("log-dialog").open) return;
  let doc;
  try {
    doc = await api("GET", `operations/${opId}/log?start=${state.log.shown}&limit=${LOG_PAGE}`);
  } catch (err) {
    $("log-meta").textContent = explain(err);
    return;
  }
  if (state.log.opId !== opId) return;
  const pre = $("log-text");
  let lines = doc.lines;
  // PVE answers an empty log with one "no content" line: not a line to keep once the log grows
  if (state.log.shown === 0 && doc.total === 1 && lines.length === 1 && lines[0].t === "no content") {
    pre.textContent = "(no lines yet)";
    lines = [];
  } else if (state.log.shown === 0) {
    pre.textContent = "";
  }
  for (const line of lines) {
    pre.textContent += (pre.textContent ? "\n" : "") + line.t;
    state.log.shown = Math.max(state.log.shown, line.n);
  }
  pre.dataset.lines = String(state.log.shown);
  pre.dataset.status = doc.operation_status;
  if (lines.length) pre.scrollTop = pre.scrollHeight;
  const running = !TERMINAL.has(doc.operation_status);
  $("log-meta").textContent = `${doc.upid} · node ${doc.node} · ${doc.total} line(s) · operation ${doc.operation_status}`
    + (running ? " · refreshing" : "");
  const more = doc.total > state.log.shown && lines.length > 0;
  if (running || more) state.log.timer = window.setTimeout(() => pollLog(opId), more ? 0 : FOLLOW_MS);
}

// ---- bulk actions -----------------------------------------------------------------------------
function renderBulkBar() {
  const n = state.selected.size;
  const busy = state.bulk.batches.length > 0 || state.bulk.plan !== null;
  $("bulk").hidden = !state.canPower || (n === 0 && !busy);
  $("bulk-count").textContent = `${n} selected`;
  $("bulk-dry-run").disabled = n === 0 || state.bulk.batches.length > 0;
}

function selectedByCluster() {
  const out = new Map();
  for (const key of state.selected) {
    const i = key.lastIndexOf("/");
    const cluster = key.slice(0, i), vmid = Number(key.slice(i + 1));
    if (!out.has(cluster)) out.set(cluster, []);
    out.get(cluster).push(vmid);
  }
  return out;
}

function bulkBody(cluster, vmids, dryRun) {
  const c = Number($("bulk-concurrency").value);
  return { action: $("bulk-action").value, selector: { cluster, vmids }, force: $("bulk-force").checked,
           dry_run: dryRun, concurrency: c >= 1 && c <= 64 ? Math.floor(c) : 4 };
}

function guestLine(x) {
  const name = x.name ? ` ${x.name}` : "";
  return `${x.cluster || "?"}/${x.vmid}${name}`;
}

async function dryRun() {
  const action = $("bulk-action").value;
  const wouldRun = [], skipped = [], warnings = [];
  for (const [cluster, vmids] of selectedByCluster()) {
    const plan = await api("POST", "actions", bulkBody(cluster, vmids, true));
    wouldRun.push(...plan.would_run);
    skipped.push(...plan.skipped);
    warnings.push(...plan.warnings);
  }
  state.bulk.plan = { action, force: $("bulk-force").checked, wouldRun, skipped };
  const ul = $("bulk-would-run"), sk = $("bulk-skipped");
  ul.replaceChildren();
  sk.replaceChildren();
  for (const x of wouldRun) {
    const li = el("li", `${guestLine(x)} — ${x.pve_calls.join(", then ")}`);
    li.dataset.key = `${x.cluster}/${x.vmid}`;
    ul.appendChild(li);
  }
  for (const x of skipped) {
    const li = el("li", `${guestLine(x)} — ${x.message}`);
    li.dataset.key = `${x.cluster}/${x.vmid}`;
    li.dataset.reason = x.reason;
    sk.appendChild(li);
  }
  if (!wouldRun.length) ul.appendChild(el("li", "nothing", "muted"));
  if (!skipped.length) sk.appendChild(el("li", "nothing", "muted"));
  const force = state.bulk.plan.force ? " (force)" : "";
  $("bulk-plan-title").textContent = `Dry run: ${action}${force} — ${wouldRun.length} would run, ${skipped.length} skipped`
    + (warnings.length ? ` (${warnings.join("; ")})` : "");
  $("bulk-run").textContent = `Run ${action}${force} on ${wouldRun.length}`;
  $("bulk-run").disabled = wouldRun.length === 0;
  $("bulk-plan").hidden = false;
  $("bulk-progress").hidden = true;
  renderBulkBar();
  $("bulk-run").disabled ? $("bulk-back").focus() : $("bulk-run").focus();
}

async function runBulk() {
  const plan = state.bulk.plan;
  if (!plan) return;
  const byCluster = new Map();
  for (const x of plan.wouldRun) {
    if (!byCluster.has(x.cluster)) byCluster.set(x.cluster, []);
    byCluster.get(x.cluster).push(x.vmid);
  }
  $("bulk-action").value = plan.action;
  $("bulk-force").checked = plan.force;
  state.bulk.batches = [];
  state.bulk.skipped = plan.skipped;  // the dry run's skips are part of the result, with their reason
  for (const [cluster, vmids] of byCluster) {
    const batch = await api("POST", "actions", bulkBody(cluster, vmids, false));
    state.bulk.batches.push(batch);
  }
  state.bulk.plan = null;
  state.selected.clear();
  $("bulk-plan").hidden = true;
  $("bulk-progress").hidden = false;
  $("bulk-cancel").hidden = false;
  $("bulk-cancel").disabled = false;
  $("bulk-done").hidden = true;
  $("bulk-progress-title").textContent = `Bulk ${plan.action}${plan.force ? " (force)" : ""}`;
  renderProgress();
  renderGuests();
  $("bulk-cancel").focus();
  state.bulk.timer = window.setTimeout(pollBulk, FOLLOW_MS);
}

function renderProgress() {
  const batches = state.bulk.batches;
  let total = 0, finished = 0;
  const counts = {};
  const ul = $("bulk-results");
  ul.replaceChildren();
  for (const b of batches) {
    total += b.total;
    finished += b.finished;
    for (const [s, n] of Object.entries(b.counts)) counts[s] = (counts[s] || 0) + n;
    for (const op of b.operations) {
      const li = el("li", null, "status-" + op.status);
      li.dataset.key = `${op.cluster}/${op.resource_id}`;
      li.dataset.status = op.status;
      li.appendChild(el("span", opText(op)));
      if (op.upid) li.appendChild(logButton(op));
      ul.appendChild(li);
    }
  }
  const seen = new Set();
  for (const x of [...state.bulk.skipped, ...batches.flatMap((b) => b.skipped)]) {
    const key = `${x.cluster}/${x.vmid}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const li = el("li", `${guestLine(x)}: skipped — ${x.message}`, "muted");
    li.dataset.key = key;
    li.dataset.status = "skipped";
    ul.appendChild(li);
  }
  $("bulk-bar").max = Math.max(total, 1);
  $("bulk-bar").value = finished;
  const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`);
  const done = batches.every((b) => b.status === "finished" || b.status === "cancelled");
  $("bulk-progress-text").textContent = `${finished} of ${total} done` + (parts.length ? ` (${parts.join(", ")})` : "")
    + (done ? "" : " · refreshing");
  $("bulk-progress").dataset.state = done ? "done" : "running";
  $("bulk-progress").dataset.finished = String(finished);
  $("bulk-progress").dataset.total = String(total);
  return done;
}

async function pollBulk() {
  state.bulk.timer = null;
  if (!state.bulk.batches.length) return;
  try {
    state.bulk.batches = await Promise.all(state.bulk.batches.map((b) => api("GET", `actions/${b.batch_id}`)));
  } catch (err) {
    say(explain(err), true);
  }
  if (renderProgress()) {
    $("bulk-cancel").hidden = true;
    $("bulk-done").hidden = false;
    await Promise.all([loadGuests(), loadHistory()]);
    return;
  }
  state.bulk.timer = window.setTimeout(pollBulk, FOLLOW_MS);
}

async function cancelBulk() {
  $("bulk-cancel").disabled = true;
  let n = 0;
  const after = [];
  for (const b of state.bulk.batches) {
    const doc = await api("DELETE", `actions/${b.batch_id}`);
    n += (doc.cancelled_now || []).length;
    after.push(doc);
  }
  state.bulk.batches = after;
  say(`cancelled ${n} action(s) that had not started; running ones go on`, false);
  renderProgress();
}

function closeBulk() {
  if (state.bulk.timer) window.clearTimeout(state.bulk.timer);
  state.bulk = { plan: null, batches: [], skipped: [], timer: null };
  $("bulk-plan").hidden = true;
  $("bulk-progress").hidden = true;
  renderBulkBar();
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
    const tr = el("tr");
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
    const td = cell(tr, "");
    if (op.upid) td.appendChild(logButton(op));
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
  $("guest-filters").addEventListener("submit", guard(loadGuests));
  for (const id of ["g-text", "f-cluster", "f-type", "f-status"]) $(id).addEventListener("input", renderGuests);
  for (const b of document.querySelectorAll("button.sort")) {
    b.addEventListener("click", () => {
      const key = b.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      renderGuests();
    });
  }
  $("select-all").addEventListener("change", () => {
    for (const g of visibleGuests().slice(0, MAX_ROWS)) {  // the rows shown
      const key = `${g.cluster}/${g.vmid}`;
      if ($("select-all").checked) state.selected.add(key); else state.selected.delete(key);
    }
    renderGuests();
  });
  $("bulk-dry-run").addEventListener("click", guard(dryRun));
  $("bulk-run").addEventListener("click", guard(runBulk));
  $("bulk-back").addEventListener("click", () => { state.bulk.plan = null; $("bulk-plan").hidden = true; renderBulkBar(); });
  $("bulk-cancel").addEventListener("click", guard(cancelBulk));
  $("bulk-done").addEventListener("click", closeBulk);
  $("bulk-clear").addEventListener("click", () => { state.selected.clear(); renderGuests(); });
  $("history-filters").addEventListener("submit", guard(async () => { state.historyOffset = 0; await loadHistory(); }));
  $("history-prev").addEventListener("click", guard(async () => {
    state.historyOffset = Math.max(0, state.historyOffset - PAGE);
    await loadHistory();
  }));
  $("history-next").addEventListener("click", guard(async () => {
    state.historyOffset += PAGE;
    await loadHistory();
  }));
  $("confirm-cancel").addEventListener("click", () => {
    const p = state.pending;
    state.pending = null;
    $("confirm").close();
    if (p) refocus(p.opener);
  });
  $("confirm-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("confirm").close();
    runPending();
  });
  $("log-close").addEventListener("click", () => $("log-dialog").close());
  $("log-dialog").addEventListener("close", () => {
    if (state.log.timer) window.clearTimeout(state.log.timer);
    state.log = { opId: null, shown: 0, timer: null };
  });
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;
    if (ev.key === "/" && !typing && !$("app").hidden) {
      ev.preventDefault();
      $("g-text").focus();
    }
  });
  const saved = token();
  if (saved) signIn(saved);
});
