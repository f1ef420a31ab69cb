// The dashboard in a real browser (Debian's chromium, headless, driven by
// playwright-core): place an order through the form and see it reach
// `completed` without a reload; enter the operator token and replay a dead
// letter; ship one of scripts/browser-check's completed orders and cancel
// another from their pages, and see their status and the stock table follow;
// on a page left behind (its live stream cut) try a cancel the lifecycle no
// longer allows, and see it refused with nothing changed. Each move is
// checked against the API too. And check that the page asked no other host
// for anything. Saves target/browser/dashboard.png (and, with
// ORDERFLOW_SCREENSHOT=PATH, a copy there). Run by scripts/browser-check,
// which starts the server and places orders for customers c1…c5, c_N with N
// burgers.
import { chromium } from "playwright-core";
import { copyFileSync, mkdirSync } from "node:fs";

const url = process.env.ORDERFLOW_URL;
const token = process.env.ORDERFLOW_OPERATOR_TOKEN;
const origin = new URL(url).origin;
const shot = "target/browser/dashboard.png";
mkdirSync("target/browser", { recursive: true });

// The API as the operator, to check what the page shows against the store.
async function get(path) {
  const response = await fetch(url + path, { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) throw new Error(`GET ${path}: ${response.status}`);
  return response.json();
}
const burger = async () => (await get("/admin/stock")).stock.find((s) => s.sku === "burger");
async function until(what, check, ms = 15000) {
  for (const end = Date.now() + ms; ; await new Promise((r) => setTimeout(r, 200))) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
  }
}
const same = (a, b) => a.available === b.available && a.reserved === b.reserved && a.shipped === b.shipped;
const show = (s) => `available ${s.available}, reserved ${s.reserved}, shipped ${s.shipped}`;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const elsewhere = [];
page.on("request", (r) => { if (new URL(r.url()).origin !== origin) elsewhere.push(r.url()); });
let problems = [];
page.on("pageerror", (e) => problems.push(e.message));
// Failed loads are judged by their response below (a browser asks for /favicon.ico on its own).
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text()); });
page.on("response", (r) => { if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) problems.push(r.status() + " " + r.url()); });
try {
  await page.goto(url + "/", { waitUntil: "load" });
  await page.waitForSelector("#live.on", { timeout: 10000 });

  // An order through the form, followed live.
  await page.click("#order-form button[type=submit]");
  // Selectors, not waitForFunction: the page's CSP forbids the eval that needs.
  const id = await (await page.waitForSelector("#order-result[data-order]")).getAttribute("data-order");
  await page.waitForSelector(`tr[data-order="${id}"] .status.completed`, { timeout: 20000 });
  console.log(`order ${id} reached completed on the page`);

  // Its page: the whole timeline.
  await page.click(`tr[data-order="${id}"] a`);
  await page.waitForSelector("#timeline li[data-status=completed]", { timeout: 10000 });
  const steps = await page.$$eval("#timeline li", (lis) => lis.map((li) => li.dataset.status));
  if (steps.join() !== "placed,reserved,completed") throw new Error("timeline: " + steps);
  // And what happened besides: the notification the notifier recorded.
  await page.waitForSelector("#order-notifications tr[data-kind=confirmed]", { timeout: 10000 });
  await page.goto(url + "/#/", { waitUntil: "load" });

  // The operator's parts, with the token: replay the dead letter.
  await page.fill("#token", token);
  await page.click("#token-form button[type=submit]");
  const button = await page.waitForSelector("#letters button[data-replay]", { timeout: 10000 });
  const letter = await button.getAttribute("data-replay");
  await button.click();
  await page.waitForSelector("#replay-result >> text=/^1 replayed/", { timeout: 10000 });
  console.log(`dead letter ${letter} replayed`);

  // The operator's moves, on orders that have all completed: their
  // reservations are done, so the stock moves only with the moves below.
  const mine = {};
  for (const c of ["c3", "c4", "c5"]) {
    const [o] = (await get(`/orders?customer_id=${c}&limit=1`)).orders;
    mine[c] = await until(`${c}'s order to complete`, async () => {
      const order = await get("/orders/" + o.order_id);
      return order.status === "completed" && order;
    });
  }
  // The stock table as the page shows it, once it shows `want`.
  const stockRow = (s) => `#stock tr[data-sku=burger]:has(td:nth-child(2):text-is("${s.available}"))` +
    `:has(td:nth-child(3):text-is("${s.reserved}")):has(td:nth-child(4):text-is("${s.shipped}"))`;
  async function seeStock(want) {
    await page.click("text=← all orders");
    await page.waitForSelector(stockRow(want), { timeout: 15000 }).catch(async () => {
      const row = await page.$$eval("#stock tr[data-sku=burger] td", (tds) => tds.map((td) => td.textContent));
      throw new Error(`the stock table shows ${row} rather than ${show(want)}`);
    });
    await until("the API's stock to agree", async () => same(await burger(), want));
  }
  // An order's page, from its row in the list; what it offers.
  async function open(order) {
    await page.click(`#orders tr[data-order="${order.order_id}"] a`);
    await page.waitForSelector(`#order-title:has(code:text-is("${order.order_id}"))`, { timeout: 10000 });
  }
  async function offers(cancel, ship) {
    const seen = [await page.isVisible("#cancel-order"), await page.isVisible("#ship-order")];
    if (seen[0] !== cancel || seen[1] !== ship) throw new Error(`the page offers cancel ${seen[0]}, ship ${seen[1]}`);
  }
  const qty = (o) => o.items.reduce((n, i) => n + i.quantity, 0);
  let stock = await burger();
  await page.waitForSelector(stockRow(stock), { timeout: 10000 });

  // Ship c3's order: shipped on its page, in its timeline and in the list;
  // its units leave `reserved` for `shipped`.
  const shipped = mine.c3;
  await open(shipped);
  await page.waitForSelector("#order-title .status.completed", { timeout: 10000 });
  await offers(true, true);
  await page.click("#ship-order");
  await page.waitForSelector("#order-title .status.shipped", { timeout: 10000 });
  await page.waitForSelector("#timeline li[data-status=shipped]", { timeout: 10000 });
  await page.waitForSelector(`#orders tr[data-order="${shipped.order_id}"] .status.shipped`, { state: "attached", timeout: 10000 });
  await offers(false, false);
  const afterShip = await get("/orders/" + shipped.order_id);
  if (afterShip.status !== "shipped" || afterShip.history.at(-1).status !== "shipped") throw new Error("the API says " + afterShip.status);
  stock = { available: stock.available, reserved: stock.reserved - qty(shipped), shipped: stock.shipped + qty(shipped) };
  await seeStock(stock);
  console.log(`order ${shipped.order_id} shipped from its page; stock now ${show(stock)}`);

  // Cancel c4's order: cancelled, and its units go back to `available`.
  const cancelled = mine.c4;
  await open(cancelled);
  await page.waitForSelector("#order-title .status.completed", { timeout: 10000 });
  await offers(true, true);
  await page.click("#cancel-order");
  await page.waitForSelector("#order-title .status.cancelled", { timeout: 10000 });
  await page.waitForSelector("#timeline li[data-status=cancelled]", { timeout: 10000 });
  await offers(false, false);
  if ((await get("/orders/" + cancelled.order_id)).status !== "cancelled") throw new Error("the API did not cancel it");
  stock = { available: stock.available + qty(cancelled), reserved: stock.reserved - qty(cancelled), shipped: stock.shipped };
  await seeStock(stock);
  console.log(`order ${cancelled.order_id} cancelled from its page; stock now ${show(stock)}`);

  // A page left behind: c5's order shown completed, its live stream cut,
  // while it ships elsewhere. Cancel is refused, said so, and nothing moves.
  const late = mine.c5;
  await open(late);
  await page.route(url + "/events", (r) => r.abort());
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector("#order-title .status.completed", { timeout: 10000 });
  await page.waitForSelector("#live:not(.on)", { timeout: 10000 });
  const ship = await fetch(`${url}/admin/orders/${late.order_id}/ship`, { method: "POST", headers: { Authorization: "Bearer " + token } });
  if (ship.status !== 200) throw new Error("shipping through the API: " + ship.status);
  await page.waitForTimeout(500);
  if (!(await page.isVisible("#order-title .status.completed"))) throw new Error("the page was not left behind");
  await offers(true, true);
  await page.click("#cancel-order");
  const said = await (await page.waitForSelector("#move-result.refused", { timeout: 10000 })).textContent();
  if (!said.includes("invalid_transition") || !said.includes("cannot be cancelled")) throw new Error("the page says: " + said);
  // Read again, the page shows the order as it stands, and offers nothing.
  await page.waitForSelector("#order-title .status.shipped", { timeout: 10000 });
  if (await page.$("#timeline li[data-status=cancelled]")) throw new Error("the timeline shows a cancel");
  await offers(false, false);
  const afterRefusal = await get("/orders/" + late.order_id);
  if (afterRefusal.status !== "shipped" || afterRefusal.history.some((t) => t.status === "cancelled")) {
    throw new Error("the refused cancel moved the order: " + JSON.stringify(afterRefusal.history));
  }
  // The expected refusal, not a fault of the page.
  problems = problems.filter((p) => p !== `409 ${url}/orders/${late.order_id}/cancel`);
  await page.unroute(url + "/events");
  stock = { available: stock.available, reserved: stock.reserved - qty(late), shipped: stock.shipped + qty(late) };
  await seeStock(stock);
  console.log(`a cancel of shipped order ${late.order_id} was refused on the page: "${said}"`);
  // A fresh load for the picture (the token stays in sessionStorage), with
  // a few metrics samples for the chart.
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector("#letters tr", { timeout: 10000 });
  await page.waitForTimeout(4500);
  await page.screenshot({ path: shot });
  if (process.env.ORDERFLOW_SCREENSHOT) copyFileSync(shot, process.env.ORDERFLOW_SCREENSHOT);
} catch (e) {
  await page.screenshot({ path: shot }).catch(() => {});
  console.error(`failed (screenshot: ${shot}):`, e.message, problems);
  await browser.close();
  process.exit(1);
}
await browser.close();
if (elsewhere.length) { console.error("requests to other hosts:", elsewhere); process.exit(1); }
if (problems.length) { console.error("page errors:", problems); process.exit(1); }
console.log("no request left this server; screenshot:", shot);
