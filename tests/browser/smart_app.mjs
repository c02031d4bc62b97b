// Drives radsight's SMART app in headless Chromium through the fixture EHR's launcher page.
// Usage: node smart_app.mjs RADSIGHT_URL EHR_URL RESULT_ID DEEP_STUDY_UID DEEP_RESULT_ID UNREACHABLE_ISS SHOTS_DIR
// Prints one line per scenario; the Rust test checks them and the database.
import { chromium } from "playwright-core";

const [base, ehr, resultId, deepStudy, deepResult, unreachableIss, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const fail = async (msg) => { console.error(msg); await browser.close(); process.exit(1); };
const T = { timeout: 30000 }; // generous: CI shares 2 cores with builds

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.log(`console error: ${m.text()}`); });
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  return page;
}

/** Launches from the EHR's launcher page, as a clinician clicking "Launch radsight" would. */
async function launch(page, { appContext, deny, patient } = {}) {
  await page.goto(`${ehr}/`);
  if (patient !== undefined) await page.selectOption("select[name=patient]", patient);
  if (appContext) await page.fill("input[name=app_context]", appContext);
  if (deny) await page.check("input[name=deny]");
  await page.click("button[type=submit]");
}

const pixelAt = (page, x, y) => page.evaluate(([x, y]) => Array.from(document.getElementById("view").getContext("2d").getImageData(x, y, 1, 1).data), [x, y]);
const errorTitle = async (page) => { await page.waitForSelector("#error-title", T); return (await page.textContent("#error-title")).trim(); };

try {
  // 1. A launch shows the patient's study list.
  const page = await newPage();
  await launch(page);
  await page.waitForSelector("body[data-ready=true]", T);
  const states = await page.$$eval("#study-rows tr", (rows) => rows.map((r) => r.dataset.state));
  console.log(`studies: ${states.sort().join(",")}`);
  console.log(`banner: ${await page.textContent("#patient-banner")}`);
  await page.screenshot({ path: `${shots}/study-list.png`, fullPage: true });

  // 2. Opening a result draws the image with its overlay; toggling the overlay changes pixels.
  await page.click(`button[data-result="${resultId}"]`);
  await page.waitForSelector("#view[data-drawn^=overlay]", T);
  // The view is complete when the app moves focus to its heading (after the trail has loaded);
  // interacting before that would have focus taken away mid-test on a slow machine.
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "study-title", null, T);
  const focused = await page.evaluate(() => document.activeElement.id);
  console.log(`focus after opening: ${focused}`);
  const box = await page.evaluate(() => window.radsight.result.explanation.bbox);
  const [px, py] = [box.x + Math.floor(box.width / 2), box.y + Math.floor(box.height / 2)];
  const withOverlay = await pixelAt(page, px, py);
  await page.focus("#overlay");
  await page.keyboard.press("Space"); // keyboard-usable toggle
  await page.waitForSelector("#view[data-drawn^=original]", T);
  const without = await pixelAt(page, px, py);
  const changed = withOverlay.some((v, i) => v !== without[i]);
  console.log(`overlay toggled: ${changed ? "pixels changed" : "pixels unchanged"} (${withOverlay} -> ${without})`);
  if (!changed) await fail("toggling the overlay did not change the canvas");
  await page.keyboard.press("Space");
  await page.waitForSelector("#view[data-drawn^=overlay]", T);
  await page.$eval("#opacity", (el) => { el.value = "70"; el.dispatchEvent(new Event("input", { bubbles: true })); });
  await page.selectOption("#preset", "contrast");
  await page.click("#zoom-in");
  console.log(`findings: ${(await page.$$eval("#findings tr", (r) => r.map((x) => x.textContent))).join(" | ")}`);
  console.log(`model card: ${(await page.textContent("#model-card")).slice(0, 120)}`);
  console.log(`faithfulness: ${await page.getAttribute("#faithfulness", "data-verdict")}: ${await page.textContent("#faithfulness")}`);
  await page.waitForSelector("#ehr-record:not([data-record=searching])", T);
  console.log(`ehr record: ${await page.getAttribute("#ehr-record", "data-record")}: ${await page.textContent("#ehr-record")}`);
  console.log(`disclaimer: ${await page.textContent("#disclaimer")}`);

  // 3. Feedback creates a stored, audited record (the Rust test checks the database).
  await page.check("input[name=verdict][value=disagree]");
  await page.selectOption("#reason", "false-positive");
  await page.fill("#comment", "Overlay on the scapula.");
  await page.click("#send-feedback");
  await page.waitForFunction(() => /recorded|could not/.test(document.getElementById("feedback-status").textContent), null, T);
  const fb = await page.textContent("#feedback-status");
  console.log(`feedback: ${/recorded in the audit log/.test(fb) ? "recorded" : fb}`);
  await page.waitForSelector("#trail li[data-action='result.feedback']", T);
  console.log(`trail: ${(await page.$$eval("#trail li", (l) => l.map((x) => x.dataset.action))).join(",")}`);
  await page.screenshot({ path: `${shots}/study-view.png`, fullPage: true });

  // 200% zoom: the same page in half the CSS width must not need horizontal scrolling.
  await page.setViewportSize({ width: 640, height: 900 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  console.log(`200% zoom: ${overflow <= 1 ? "no horizontal scrolling" : `overflows by ${overflow}px`}`);
  await page.screenshot({ path: `${shots}/study-view-200pct.png`, fullPage: true });

  // 4. A deep link (a card's appContext) opens the named study directly.
  const deep = await newPage();
  await launch(deep, { appContext: JSON.stringify({ studyInstanceUid: deepStudy, resultId: deepResult }) });
  await deep.waitForSelector("body[data-ready=true]", T);
  await deep.waitForSelector("#study:not([hidden])", T);
  console.log(`deep link: opened ${await deep.getAttribute("#study", "data-study")}`);
  await deep.waitForSelector("#ehr-record:not([data-record=searching])", T);
  console.log(`deep link ehr record: ${await deep.getAttribute("#ehr-record", "data-record")}: ${await deep.textContent("#ehr-record")}`);

  // 5. Clear pages: unknown iss, denied consent, forged state, unreachable EHR.
  const err = await newPage();
  await err.goto(`${base}/smart/launch?iss=${encodeURIComponent("https://unknown.example.org/fhir")}&launch=x`);
  console.log(`unknown iss: ${await errorTitle(err)}`);
  await launch(err, { deny: true });
  await err.waitForURL(/reason=access-denied/, T);
  console.log(`denied: ${await errorTitle(err)}`);
  await err.goto(`${base}/smart/?code=forged&state=forged-state`);
  await err.waitForURL(/reason=invalid-state/, T);
  console.log(`forged state: ${await errorTitle(err)}`);
  await launch(err, { patient: "" });
  await err.waitForURL(/reason=missing-patient/, T);
  console.log(`no patient: ${await errorTitle(err)}`);
  await err.goto(`${base}/smart/launch?iss=${encodeURIComponent(unreachableIss)}&launch=x`);
  await err.waitForURL(/reason=unreachable-iss/, T);
  console.log(`unreachable: ${await errorTitle(err)}`);
  await err.screenshot({ path: `${shots}/error-unreachable.png`, fullPage: true });
  console.log(`screenshots: ${shots}`);
} catch (e) {
  await fail(`SMART app test failed: ${e.message}`);
}
await browser.close();
