// Drives the auditors' console in headless Chromium: sign in with an auditor JWT, filter,
// open an event and read its proof status, then show a card's whole story.
// Usage: node audit_console.mjs BASE_URL AUDITOR_JWT VERIFIER_KEY CARD_UUID SCREENSHOT
import { chromium } from "playwright-core";

const [base, jwt, vkey, card, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const fail = async (msg) => { console.error(msg); await browser.close(); process.exit(1); };
try {
  const page = await browser.newPage();
  await page.goto(`${base}/audit/console`);
  await page.fill("#jwt", jwt);
  await page.fill("#vkey", vkey);
  await page.click("#signin");
  await page.waitForSelector("#app:not([hidden])", { timeout: 10000 });
  await page.waitForFunction(() => document.querySelector("#checkpoint").textContent.includes("signature"), null, { timeout: 10000 });
  console.log(`checkpoint: ${await page.textContent("#checkpoint")}`);

  // Filter to hook calls only, open the first one.
  await page.selectOption("select[name=action]", "cds.hook");
  await page.click("#filters button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#count").textContent === "1 events", null, { timeout: 10000 });
  await page.click("#rows tr:first-child");
  await page.waitForFunction(() => !document.querySelector("#detail").textContent.includes("checking"), null, { timeout: 10000 });
  const detail = await page.textContent("#detail");
  console.log(`proof: ${detail.split("Proof status: ")[1]}`);

  // The story of one card: the hook that served it and the feedback on it.
  const story = await page.textContent("#story");
  if (!story.includes(card)) await fail(`the hook event does not offer the story of card ${card}: ${story}`);
  await page.click("#story");
  await page.waitForFunction(() => document.querySelector("#count").textContent === "2 events", null, { timeout: 10000 });
  const actions = await page.$$eval("#rows tr td:nth-child(3)", (tds) => tds.map((t) => t.textContent));
  console.log(`story: ${actions.join(",")}`);
  const csv = await page.getAttribute("#export-csv", "href");
  console.log(`export: ${csv}`);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  await fail(`console test failed: ${e.message}`);
}
await browser.close();
