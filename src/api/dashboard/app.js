// The dashboard: plain DOM, no library. Reads /metrics, /orders and the
// live /events stream. A token entered in the page (kept in sessionStorage)
// is sent as Authorization: Bearer on every call: the operator's shows the
// operator's parts (/admin/…); a customer's (a JWT, for a server started
// with --auth jwt) shows that customer's orders only. With a token the live
// stream is read with fetch() (sse.js), since EventSource cannot send one.
"use strict";
const $ = (id) => document.getElementById(id);
const STATUSES = ["placed", "reserved", "completed", "rejected", "cancelled", "shipped"];
const SHOWN = 20;
const orders = new Map(); // order_id -> {order_id, customer_id, status, updated_at}
const samples = []; // [time ms, total orders] every 2 s, 5 minutes

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
const token = () => sessionStorage.getItem("orderflow-token") || "";
const authorization = () => (token() ? { Authorization: "Bearer " + token() } : {});
// The customer a JWT names (its `sub`, read unverified: the server verifies
// it); null for the operator token or none.
function customer() {
  const parts = token().split(".");
  if (parts.length !== 3) return null;
  try {
    const bytes = Uint8Array.from(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === "string" ? sub : null;
  } catch { return null; }
}
const NEEDS_TOKEN = "this server checks tokens: enter a customer's token or the operator token above";
function fail(message) {
  $("error").textContent = message; $("error").hidden = false;
  setTimeout(() => { $("error").hidden = true; }, 5000);
}
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, authorization());
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  const body = text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  if (response.status === 401 && !token()) throw new Error(NEEDS_TOKEN);
  if (!response.ok) {
    const message = body?.error?.message || response.status + " " + response.statusText;
    throw Object.assign(new Error(message), { status: response.status, code: body?.error?.code });
  }
  return body;
}
const time = (at) => at ? new Date(at).toLocaleTimeString() : "";
const statusCell = (s) => el("span", { class: "status " + s }, s);
const orderLink = (id) => el("a", { href: "#/orders/" + id }, id.slice(0, 8) + "…" + id.slice(-4));

// Orders per status, queue depth, dead letters, orders/s: /metrics.
function metric(text, name, label) {
  const re = new RegExp("^" + name + (label ? "\\{[^}]*" + label + "[^}]*\\}" : "") + " ([0-9.e+]+)$", "m");
  const m = text.match(re);
  return m ? Number(m[1]) : 0;
}
async function refreshMetrics() {
  const text = await api("/metrics");
  const counts = STATUSES.map((s) => [s, metric(text, "orderflow_orders", 'status="' + s + '"')]);
  $("counts").replaceChildren(...counts.map(([s, n]) =>
    el("div", { class: "card", "data-status": s }, el("span", { class: "status " + s }, s), el("b", {}, String(n)))));
  $("pipeline").replaceChildren(
    el("tr", {}, el("th", {}, "messages queued"), el("td", { id: "queued" }, String(metric(text, "orderflow_queued_messages")))),
    el("tr", {}, el("th", {}, "dead letters"), el("td", { id: "dead" }, String(metric(text, "orderflow_dead_letters")))));
  samples.push([Date.now(), counts.reduce((sum, [, n]) => sum + n, 0)]);
  while (samples.length && samples[0][0] < Date.now() - 300000) samples.shift();
  drawRate();
}
function drawRate() {
  const canvas = $("rate"), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const [t0, n0] = samples[i - 1], [t1, n1] = samples[i];
    rates.push([t1, Math.max(0, (n1 - n0) / ((t1 - t0) / 1000))]);
  }
  const max = Math.max(1, ...rates.map(([, r]) => r));
  ctx.strokeStyle = "#dde1e6"; ctx.fillStyle = "#6a7380"; ctx.font = "11px system-ui";
  for (const f of [0, 0.5, 1]) {
    const y = h - pad + (pad * 2 - h) * f;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((max * f).toFixed(max < 10 ? 1 : 0), 2, y + 4);
  }
  if (!rates.length) return;
  const now = Date.now(), x = (t) => pad + (w - pad) * (1 - (now - t) / 300000);
  ctx.strokeStyle = "#2160c4"; ctx.lineWidth = 2; ctx.beginPath();
  rates.forEach(([t, r], i) => { const y = h - pad - (h - pad * 2) * r / max; i ? ctx.lineTo(x(t), y) : ctx.moveTo(x(t), y); });
  ctx.stroke();
  ctx.fillText(rates[rates.length - 1][1].toFixed(1) + " orders/s now", w - 120, 12);
}

// The newest orders: a page of /orders, then every change from /events.
function renderOrders() {
  const newest = [...orders.values()].sort((a, b) => (a.order_id < b.order_id ? 1 : -1)).slice(0, SHOWN);
  $("orders").replaceChildren(...newest.map((o) => el("tr", { "data-order": o.order_id },
    el("td", {}, orderLink(o.order_id)), el("td", {}, o.customer_id || ""),
    el("td", {}, statusCell(o.status)), el("td", {}, time(o.updated_at)))));
}
async function loadOrders() {
  const page = await api("/orders?limit=" + SHOWN);
  for (const o of page.orders) orders.set(o.order_id, o);
  renderOrders();
}
const RANK = { placed: 0, reserved: 1, completed: 2, rejected: 1, cancelled: 3, shipped: 3 };
let unfollow = () => {};
// The live stream: EventSource without a token, as it always was; with one,
// sse.js, which sends it.
function follow() {
  unfollow();
  const on = {
    open: () => { $("live").textContent = "live"; $("live").className = "badge on"; },
    error: (err) => {
      const refused = err && (err.status === 401 || err.status === 403);
      $("live").textContent = refused ? "token refused" : "reconnecting…"; $("live").className = "badge";
      if (refused) fail(token() ? err.message : NEEDS_TOKEN);
    },
    status: onChange,
    reset: () => { orders.clear(); loadOrders().catch((e) => fail(e.message)); },
  };
  if (token()) { unfollow = openStream("/events", authorization, on); return; }
  const source = new EventSource("/events");
  source.onopen = on.open;
  source.onerror = () => on.error(null);
  source.addEventListener("status", on.status);
  source.addEventListener("reset", on.reset);
  unfollow = () => source.close();
}
function onChange(e) {
  const change = JSON.parse(e.data);
  const known = orders.get(change.order_id);
  if (known && RANK[known.status] >= RANK[change.status]) return;
  orders.set(change.order_id, Object.assign({}, known, { order_id: change.order_id, status: change.status, updated_at: change.at }));
  renderOrders();
  // A change names the order only: its customer comes from one read.
  if (!known) api("/orders/" + change.order_id).then((o) => {
    const now = orders.get(o.order_id);
    if (now) { now.customer_id = o.customer_id; renderOrders(); }
  }).catch(() => {});
  if (location.hash === "#/orders/" + change.order_id) showOrder(change.order_id);
}

$("order-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target.elements;
  try {
    // A customer's token names the customer; the body then leaves it out.
    const order = { items: [{ sku: f.sku.value, quantity: Number(f.quantity.value) }] };
    if (!customer()) order.customer_id = f.customer.value;
    const body = JSON.stringify(order);
    const accepted = await api("/orders", { method: "POST", body });
    $("order-result").replaceChildren("accepted ", orderLink(accepted.order_id));
    $("order-result").dataset.order = accepted.order_id;
  } catch (err) { fail(err.message); }
});

// Who the token says the user is; the operator's parts need the operator token.
function showWho() {
  const me = customer();
  $("who").textContent = me ? "customer " + me : token() ? "operator" : "";
  const field = $("order-form").elements.customer;
  field.disabled = !!me;
  if (me) field.value = me;
}
async function refreshOperator() {
  const on = !!token() && !customer();
  document.querySelectorAll(".operator").forEach((n) => { n.hidden = !on; });
  if (!on) return;
  try {
    const [stock, letters] = await Promise.all([api("/admin/stock"), api("/admin/dead-letters?limit=50")]);
    $("stock").replaceChildren(...stock.stock.map((s) => el("tr", { "data-sku": s.sku }, el("td", {}, s.sku), el("td", {}, String(s.available)), el("td", {}, String(s.reserved)), el("td", {}, String(s.shipped)))));
    $("letters").replaceChildren(...letters.dead_letters.map(letterRow));
  } catch (err) { fail(err.message); }
}
function orderOf(letter) { try { return JSON.parse(letter.body).order_id; } catch { return null; } }
function letterRow(l) {
  const button = el("button", { type: "button", "data-replay": l.id }, "Replay");
  button.addEventListener("click", () => replay({ ids: [l.id] }));
  const order = orderOf(l);
  return el("tr", {}, el("td", {}, l.id), el("td", {}, l.queue), el("td", {}, String(l.attempts)),
    el("td", { class: "wrap" }, l.error), el("td", {}, l.failed_at ? time(l.failed_at) : ""),
    el("td", {}, order ? orderLink(order) : "—"), el("td", {}, button));
}
async function replay(request) {
  try {
    const r = await api("/admin/dead-letters/replay", { method: "POST", body: JSON.stringify(request) });
    $("replay-result").textContent = r.dry_run ? r.matched + " would be replayed" : r.replayed + " replayed of " + r.matched + " matching";
    refreshOperator();
  } catch (err) { fail(err.message); }
}
$("replay-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target.elements, request = { dry_run: e.submitter?.name === "dry" };
  if (f.queue.value) request.queue = f.queue.value;
  if (f.error_contains.value) request.error_contains = f.error_contains.value;
  if (f.older_than_secs.value) request.older_than_secs = Number(f.older_than_secs.value);
  replay(request);
});
$("stock-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target.elements;
  try {
    await api("/admin/stock/" + encodeURIComponent(f.sku.value), { method: "PUT", body: JSON.stringify({ available: Number(f.available.value) }) });
    refreshOperator();
  } catch (err) { fail(err.message); }
});
// A new token may see other orders: everything is read again with it.
function tokenChanged() {
  showWho();
  refreshOperator();
  orders.clear();
  renderOrders();
  follow();
  loadOrders().catch((e) => fail(e.message));
  route();
}
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("orderflow-token", $("token").value.trim());
  $("token").value = "";
  tokenChanged();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem("orderflow-token"); tokenChanged(); });

// An order's page (#/orders/ID): its timeline and what is known about it.
async function showOrder(id) {
  try {
    const o = await api("/orders/" + encodeURIComponent(id));
    $("order-title").replaceChildren("Order ", el("code", {}, o.order_id), " ", statusCell(o.status));
    showMoves(o.status);
    const facts = [["customer", o.customer_id], ["items", o.items.map((i) => i.quantity + " × " + i.sku).join(", ")],
      ["created", o.created_at], ["updated", o.updated_at]];
    if (o.reason) facts.push(["reason", o.reason]);
    if (o.trace_id) facts.push(["trace id", o.trace_id]);
    $("order-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("timeline").replaceChildren(...o.history.map((t) => el("li", { "data-status": t.status },
      statusCell(t.status), " at " + t.at + (t.reason ? " — " + t.reason : ""))));
    // What happened besides the statuses: notifications, and messages still waiting.
    const trail = await api("/orders/" + encodeURIComponent(id) + "/trail");
    const none = () => [el("tr", {}, el("td", { colspan: "4" }, "none"))];
    $("order-notifications").replaceChildren(...(trail.notifications.length ? trail.notifications.map((n) =>
      el("tr", { "data-kind": n.kind }, el("td", {}, n.kind), el("td", { class: "wrap" }, n.message),
        el("td", {}, time(n.sent_at)), el("td", {}, el("code", {}, n.event_id)))) : none()));
    $("order-waiting").replaceChildren(...(trail.waiting.length ? trail.waiting.map((m) =>
      el("tr", {}, el("td", {}, String(m.id)), el("td", {}, m.queue), el("td", {}, String(m.attempts)),
        el("td", { class: "wrap" }, m.last_error || ""))) : none()));
    if (token() && !customer()) {
      const letters = (await api("/admin/dead-letters?limit=1000")).dead_letters.filter((l) => orderOf(l) === id);
      $("order-letters").replaceChildren(...(letters.length ? letters.map(letterRow) : [el("tr", {}, el("td", {}, "none"))]));
    }
  } catch (err) { fail(err.message); }
}
// The moves on the order shown, offered only where the lifecycle allows
// them (docs/operations.md#cancelling-and-shipping-orders): Cancel until the
// order ships, to anyone the server lets read it (the server checks who
// may); Ship for a completed order, to the operator. A move the server
// still refuses (409: the page was behind, the order moved meanwhile) is
// said beside the buttons, and the order is read again as it now stands.
const CANCELLABLE = ["placed", "reserved", "completed"];
function showMoves(status) {
  $("cancel-order").hidden = !CANCELLABLE.includes(status);
  $("ship-order").hidden = !(token() && !customer() && status === "completed");
}
async function move(verb, path) {
  const id = location.hash.slice("#/orders/".length);
  const buttons = [$("cancel-order"), $("ship-order")];
  $("move-result").textContent = ""; $("move-result").className = "";
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await api(path.replace("ID", encodeURIComponent(id)), { method: "POST" });
  } catch (err) {
    const outcome = err.status === 409 ? " refused: " : " failed: ";
    $("move-result").textContent = verb + outcome + err.message + (err.code ? " (" + err.code + ")" : "");
    $("move-result").className = "refused";
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  await showOrder(id);
}
$("cancel-order").addEventListener("click", () => move("Cancel", "/orders/ID/cancel"));
$("ship-order").addEventListener("click", () => move("Ship", "/admin/orders/ID/ship"));

function route() {
  const m = location.hash.match(/^#\/orders\/([0-9a-f-]{36})$/);
  $("home").hidden = !!m; $("order").hidden = !m;
  // Nothing is offered until the order is read; nothing said about another.
  showMoves(null);
  $("move-result").textContent = ""; $("move-result").className = "";
  if (m) showOrder(m[1]);
}
// Back on the list, the stock and dead letters are read at once, not at the
// next poll: a move just made on an order's page shows there.
window.addEventListener("hashchange", () => { route(); if ($("order").hidden) refreshOperator(); });

showWho();
route();
follow();
loadOrders().catch((e) => fail(e.message));
refreshMetrics().catch((e) => fail(e.message));
setInterval(() => refreshMetrics().catch(() => {}), 2000);
refreshOperator();
setInterval(refreshOperator, 5000);
