// A segmentation result in radsight's SMART app, in headless Chromium: launched from the
// fixture EHR's launcher page, the result opened from the study list; prints the outline the
// viewer drew over the image (pixels on the mask's edge) and the findings row, and saves a
// screenshot.
// Usage: node segmentation.mjs EHR_URL RESULT_ID SHOTS_DIR
import { chromium } from "playwright-core";

const [ehr, resultId, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const T = { timeout: 30000 }; // generous: CI shares 2 cores with builds
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  await page.goto(`${ehr}/`);
  await page.click("button[type=submit]");
  await page.waitForSelector("body[data-ready=true]", T);
  console.log(`rows: ${(await page.$$eval("#study-rows tr", (r) => r.map((x) => x.dataset.model))).sort().join(",")}`);
  await page.click(`button[data-result="${resultId}"]`);
  await page.waitForSelector("#view[data-drawn]", T);
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "study-title", null, T);
  console.log(`outline: ${await page.getAttribute("#view", "data-outline")} pixels`);
  console.log(`findings: ${(await page.$$eval("#findings tr", (r) => r.map((x) => x.textContent))).join(" | ")}`);
  console.log(`explanation: ${await page.getAttribute("#faithfulness", "data-verdict")}`);
  await page.screenshot({ path: `${shots}/segmentation.png`, fullPage: true });
  console.log(`screenshot: ${shots}/segmentation.png`);
} catch (e) {
  console.error(`segmentation view failed: ${e.message}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
