// The dashboard on a server that checks customers' tokens (--auth jwt), in
// headless chromium: without a token the page says one is needed; with a
// customer's token (HS256, signed here with ORDERFLOW_JWT_SECRET) it shows
// that customer only, none of another's orders, no operator parts, and an
// order placed through the form reaches `completed` on the page without a
// reload, which only the live stream read with fetch() can show. On that
// order's page the customer is offered Cancel, not Ship (the operator's),
// and cancels it: the page and the API both say `cancelled`. Run by
// scripts/browser-check, which starts the server and places the other
// customer's orders.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";

const url = process.env.ORDERFLOW_URL;
const origin = new URL(url).origin;
const shot = "target/browser/dashboard-auth.png";
mkdirSync("target/browser", { recursive: true });

const b64 = (text) => Buffer.from(text).toString("base64url");
function jwt(claims) {
  const body = b64(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64(JSON.stringify(claims));
  return body + "." + createHmac("sha256", process.env.ORDERFLOW_JWT_SECRET).update(body).digest("base64url");
}
const me = "browser-customer";
const token = jwt({ sub: me, exp: Math.floor(Date.now() / 1000) + 600 });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const elsewhere = [];
page.on("request", (r) => { if (new URL(r.url()).origin !== origin) elsewhere.push(r.url()); });
let problems = [];
page.on("pageerror", (e) => problems.push(e.message));
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text()); });
page.on("response", (r) => { if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) problems.push(r.status() + " " + r.url()); });
try {
  // No token yet: the server refuses the customer routes, and the page says why.
  await page.goto(url + "/", { waitUntil: "load" });
  await page.waitForSelector("#error >> text=/enter a customer's token/", { timeout: 10000 });
  if (!problems.some((p) => p.startsWith("401 "))) throw new Error("no 401 without a token: " + problems);
  // The refusals (and EventSource's complaint about the JSON one) are expected.
  await page.waitForTimeout(500);
  problems = [];

  await page.fill("#token", token);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector(`#who >> text="customer ${me}"`, { timeout: 10000 });
  await page.waitForSelector("#live.on", { timeout: 10000 });
  if (await page.isVisible(".operator")) throw new Error("a customer sees the operator's parts");

  // An order through the form: the body names no customer, the token does.
  await page.click("#order-form button[type=submit]");
  const id = await (await page.waitForSelector("#order-result[data-order]")).getAttribute("data-order");
  await page.waitForSelector(`tr[data-order="${id}"] .status.completed`, { timeout: 20000 });
  console.log(`order ${id} reached completed on the page, through the fetch() stream`);
  // A reload keeps the token (sessionStorage) and still shows only this customer's orders.
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector(`tr[data-order="${id}"]`, { timeout: 10000 });
  const customers = await page.$$eval("#orders tr td:nth-child(2)", (tds) => tds.map((td) => td.textContent));
  if (!customers.length || customers.some((c) => c !== me)) throw new Error("the list shows: " + customers);
  await page.click(`tr[data-order="${id}"] a`);
  await page.waitForSelector("#timeline li[data-status=completed]", { timeout: 10000 });

  // Their own order: Cancel is theirs to use, Ship is not.
  if (!(await page.isVisible("#cancel-order"))) throw new Error("a customer is not offered Cancel on their order");
  if (await page.isVisible("#ship-order")) throw new Error("a customer is offered Ship");
  await page.click("#cancel-order");
  await page.waitForSelector("#order-title .status.cancelled", { timeout: 10000 });
  await page.waitForSelector("#timeline li[data-status=cancelled]", { timeout: 10000 });
  if (await page.isVisible("#cancel-order")) throw new Error("a cancelled order is still offered Cancel");
  const said = await page.textContent("#move-result");
  if (said) throw new Error("the page says: " + said);
  const response = await fetch(`${url}/orders/${id}`, { headers: { Authorization: "Bearer " + token } });
  const order = await response.json();
  if (order.status !== "cancelled") throw new Error("the API says the order is " + order.status);
  // Ship is the operator's: the server refuses the customer's token too.
  const ship = await fetch(`${url}/admin/orders/${id}/ship`, { method: "POST", headers: { Authorization: "Bearer " + token } });
  if (ship.status !== 401 && ship.status !== 403) throw new Error("a customer's ship answered " + ship.status);
  console.log(`the customer cancelled order ${id} from its page, offered no Ship`);
  await page.screenshot({ path: shot });
} catch (e) {
  await page.screenshot({ path: shot }).catch(() => {});
  console.error(`failed (screenshot: ${shot}):`, e.message, problems);
  await browser.close();
  process.exit(1);
}
await browser.close();
if (elsewhere.length) { console.error("requests to other hosts:", elsewhere); process.exit(1); }
if (problems.length) { console.error("page errors:", problems); process.exit(1); }
console.log("a customer's dashboard showed only their orders; screenshot:", shot);
