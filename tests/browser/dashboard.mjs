// The dashboard in a real browser (Debian's chromium, headless, driven by
// playwright-core): place an order through the form and see it reach
// `completed` without a reload; enter the operator token and replay a dead
// letter; and check that the page asked no other host for anything. Saves
// target/browser/dashboard.png (and, with ORDERFLOW_SCREENSHOT=PATH, a copy
// there). Run by scripts/browser-check, which starts the server.
import { chromium } from "playwright-core";
import { copyFileSync, mkdirSync } from "node:fs";

const url = process.env.ORDERFLOW_URL;
const token = process.env.ORDERFLOW_OPERATOR_TOKEN;
const origin = new URL(url).origin;
const shot = "target/browser/dashboard.png";
mkdirSync("target/browser", { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const elsewhere = [];
page.on("request", (r) => { if (new URL(r.url()).origin !== origin) elsewhere.push(r.url()); });
const problems = [];
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
