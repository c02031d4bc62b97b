// radsight's SMART app: completes the EHR launch (code → token with PKCE, via fhirclient), then
// shows the patient in context's studies, a result's image with its saliency overlay, findings,
// model card, feedback form and audit trail. Every call to radsight's API carries the EHR's
// access token and names the EHR (X-SMART-Iss); radsight checks both.
import { errorPage, LAUNCH_KEY, LAUNCH_MAX_AGE_MS } from "./common.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; $("status").hidden = !text; };

function reasonOf(err) {
  const m = String(err && err.message || err);
  if (/access_denied/.test(m)) return "access-denied";
  if (/state/i.test(m)) return "invalid-state";
  if (/invalid_grant|access token/i.test(m)) return "token-failed";
  if (/fetch|network|Failed to/i.test(m)) return "unreachable-iss";
  return "internal";
}

/** Checks the redirect belongs to the launch this window started, and is recent. */
function checkLaunchState() {
  const params = new URLSearchParams(location.search);
  if (params.get("error") === "access_denied") errorPage("access-denied");
  const returned = params.get("state");
  if (!returned) return; // a reload after the launch completed
  const launch = JSON.parse(sessionStorage.getItem(LAUNCH_KEY) || "null");
  if (!launch || launch.state !== returned || Date.now() - launch.startedAt > LAUNCH_MAX_AGE_MS) errorPage("invalid-state");
}

async function connect() {
  checkLaunchState();
  let client;
  try {
    client = await FHIR.oauth2.ready();
  } catch (e) {
    errorPage(reasonOf(e));
  }
  const token = client.state.tokenResponse || {};
  if (!token.access_token) errorPage("token-failed");
  if (!token.patient) errorPage("missing-patient");
  sessionStorage.removeItem(LAUNCH_KEY);
  return { client, token };
}

/** What the launch asked to open: CDS Hooks appContext (a JSON string), or SMART fhirContext. */
function launchTarget(token) {
  let ctx = {};
  if (typeof token.appContext === "string") {
    try { ctx = JSON.parse(token.appContext); } catch { ctx = {}; }
  } else if (token.appContext && typeof token.appContext === "object") {
    ctx = token.appContext;
  }
  let studyUid = ctx.studyInstanceUid;
  for (const item of token.fhirContext || []) {
    const v = item && item.identifier && item.identifier.value;
    if (!studyUid && item.type === "ImagingStudy" && typeof v === "string") studyUid = v.replace(/^urn:oid:/, "");
  }
  return { studyUid, resultId: ctx.resultId, cardUuid: ctx.cardUuid };
}

class Api {
  constructor(client) { this.client = client; }
  headers() {
    return { authorization: `Bearer ${this.client.state.tokenResponse.access_token}`, "x-smart-iss": this.client.state.serverUrl };
  }
  async fetch(path, init = {}) {
    const res = await fetch(path, { ...init, headers: { ...this.headers(), ...(init.headers || {}) }, cache: "no-store" });
    if (res.status === 401) errorPage("session-ended");
    if (!res.ok) {
      let text = `radsight answered ${res.status}`;
      try { text = (await res.json()).issue[0].diagnostics || text; } catch {}
      throw new Error(text);
    }
    return res;
  }
  async json(path, init) { return (await this.fetch(path, init)).json(); }
  async bitmap(path) { return createImageBitmap(await (await this.fetch(path)).blob()); }
}

/** The identifier system of the DiagnosticReports radsight writes into the EHR record. */
const RESULT_SYSTEM = "urn:radsight:result";
const fmtDate = (unix) => unix ? new Date(unix * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }) : "—";
const fmtTime = (iso) => new Date(iso).toLocaleString();
const pct = (p) => `${(p * 100).toFixed(0)}%`;
const STATE_TEXT = { done: "Done", pending: "Pending", failed: "Failed" };
const studyLabel = (s) => [s.modality, s.bodySite && s.bodySite.toLowerCase(), s.description && `— ${s.description}`].filter(Boolean).join(" ");

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

const ACTIONS = {
  "hl7.message": "Study announced by an HL7 message",
  "fhir.notification": "Study announced by a FHIR notification",
  "job.queued": "Analysis queued",
  "job.started": "Analysis step started",
  "job.succeeded": "Analysis job finished",
  "job.failed": "Analysis job step failed",
  "job.retried": "Analysis retried",
  "dicomweb.fetch": "Images fetched from the PACS",
  "dicom.decode": "Images decoded",
  "model.inference": "Analysed by the model",
  "analyze.run": "Analysed from local files",
  "cds.hook": "Shown on a CDS Hooks card",
  "cds.feedback": "Feedback on a card",
  "result.feedback": "Feedback given in radsight",
  "patient.read": "Viewed",
};

function describe(e) {
  const d = e.detail || {};
  const parts = [ACTIONS[e.action] || e.action];
  if (e.action === "result.feedback" && d.verdict) parts.push(`: ${d.verdict}${d.reason_code ? ` (${d.reason_code})` : ""}`);
  if (e.action === "cds.feedback" && d.outcome) parts.push(`: ${d.outcome}`);
  if (d.stage) parts.push(` (${d.stage})`);
  if (d.model) parts.push(` — model ${d.model}${d.model_version ? ` ${d.model_version}` : ""}`);
  if (d.service) parts.push(` — ${d.service}`);
  const who = e.actorUser || e.actorIss;
  if (who) parts.push(` — by ${who}`);
  if (e.outcome !== "success") parts.push(` [${e.outcome}]`);
  return parts.join("");
}

class App {
  constructor(api, patientId, target) {
    this.api = api;
    this.patientId = patientId;
    this.target = target;
    this.viewer = new Viewer($("view"), $("canvas-wrap"));
    this.bindViewerControls();
    $("back").addEventListener("click", () => this.showList());
    $("feedback-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.sendFeedback(); });
    window.addEventListener("popstate", () => this.route());
  }

  bindViewerControls() {
    const v = this.viewer;
    for (const p of Viewer.PRESETS) $("preset").append(el("option", { value: p.id }, p.label));
    $("overlay").addEventListener("change", (e) => v.set({ overlay: e.target.checked }));
    $("bbox").addEventListener("change", (e) => v.set({ bbox: e.target.checked }));
    $("opacity").addEventListener("input", (e) => { $("opacity-value").textContent = `${e.target.value}%`; v.set({ opacity: e.target.value / 100 }); });
    $("preset").addEventListener("change", (e) => v.set({ preset: e.target.value }));
    const zoom = (z) => { v.setZoom(z); $("zoom-value").textContent = `${Math.round(v.zoom * 100)}%`; };
    $("zoom-in").addEventListener("click", () => zoom(v.zoom * 1.25));
    $("zoom-out").addEventListener("click", () => zoom(v.zoom / 1.25));
    $("zoom-fit").addEventListener("click", () => zoom(v.fitZoom()));
    $("canvas-wrap").addEventListener("keydown", (e) => {
      if (e.key === "+" || e.key === "=") { zoom(v.zoom * 1.25); e.preventDefault(); }
      if (e.key === "-") { zoom(v.zoom / 1.25); e.preventDefault(); }
      if (e.key === "o") { $("overlay").click(); e.preventDefault(); }
    });
  }

  async start() {
    // SMART: need_patient_banner false means the EHR already shows who the patient is.
    if (this.api.client.state.tokenResponse.need_patient_banner === false) $("patient-banner").hidden = true;
    try {
      const patient = await this.api.client.patient.read();
      const name = (patient.name && patient.name[0] && (patient.name[0].text || [patient.name[0].given, patient.name[0].family].flat().join(" "))) || patient.id;
      $("patient-banner").textContent = `Patient: ${name}${patient.birthDate ? `, born ${patient.birthDate}` : ""}`;
    } catch {
      $("patient-banner").textContent = `Patient: ${this.patientId}`;
    }
    this.studies = (await this.api.json(`/api/patients/${encodeURIComponent(this.patientId)}/studies`)).studies;
    this.renderList();
    if (this.target.resultId || this.target.studyUid) {
      const s = this.studies.find((s) => s.studyInstanceUid === this.target.studyUid ||
        (s.analyses || [s.analysis]).some((a) => a.resultId === this.target.resultId));
      const resultId = this.target.resultId || (s && s.analysis.resultId);
      if (resultId) return this.openResult(resultId, { replace: true });
      if (s) { status(`The study you opened (${studyLabel(s)}) has no AI result yet: analysis ${STATE_TEXT[s.analysis.state].toLowerCase()}.`); }
    }
    this.showList({ replace: true, keepStatus: Boolean(this.target.studyUid) });
  }

  route() {
    const m = location.hash.match(/^#result\/([\w-]+)$/);
    if (m) this.openResult(m[1], { fromHistory: true }); else this.showList({ fromHistory: true });
  }

  renderList() {
    const rows = $("study-rows");
    rows.replaceChildren();
    $("no-studies").hidden = this.studies.length > 0;
    for (const s of this.studies) {
      // One row per model that ran on the study (a classifier and a segmenter, say).
      const analyses = s.analyses || [s.analysis];
      for (const a of analyses) {
        const state = el("span", { class: `state state-${a.state}` }, STATE_TEXT[a.state] || a.state);
        const top = (a.findings || []).filter((f) => f.probability >= f.threshold).map((f) => f.display).join(", ");
        const by = analyses.length > 1 && a.modelId ? ` (${a.modelId})` : "";
        const action = a.resultId && a.state !== "pending"
          ? el("button", { type: "button", "data-result": a.resultId }, `Open ${s.modality} of ${fmtDate(s.startedAt)}${by}`)
          : el("span", { class: "hint" }, "Not analysed yet");
        if (action.tagName === "BUTTON") action.addEventListener("click", () => this.openResult(a.resultId));
        rows.append(el("tr", { "data-study": s.studyInstanceUid, "data-state": a.state, "data-model": a.modelId || "" },
          el("td", {}, fmtDate(s.startedAt)),
          el("td", {}, studyLabel(s) + by),
          el("td", {}, state, top ? ` — ${top}` : ""),
          el("td", {}, action)));
      }
    }
  }

  showList({ replace = false, fromHistory = false, keepStatus = false } = {}) {
    if (!keepStatus) status("");
    $("study").hidden = true;
    $("studies").hidden = false;
    if (!fromHistory) history[replace ? "replaceState" : "pushState"]({}, "", location.pathname);
    $("studies-title").focus();
  }

  async openResult(id, { replace = false, fromHistory = false } = {}) {
    status("Loading the result…");
    let r;
    try {
      r = await this.api.json(`/api/results/${encodeURIComponent(id)}`);
    } catch (e) {
      status(`The result could not be opened: ${e.message}`);
      return;
    }
    this.result = r;
    if (!fromHistory) history[replace ? "replaceState" : "pushState"]({}, "", `#result/${id}`);
    $("studies").hidden = true;
    $("study").hidden = false;
    $("study").dataset.study = r.study.studyInstanceUid;
    $("study").dataset.result = r.id;
    $("study-title").textContent = `${studyLabel(r.study)}, ${fmtDate(r.study.startedAt)}`;
    $("study-meta").textContent = `Accession ${r.study.accession || "—"} · Study UID ${r.study.studyInstanceUid} · analysis ${STATE_TEXT[r.state].toLowerCase()}`;
    const done = r.state === "done";
    $("result-body").hidden = !done;
    $("result-error").hidden = done;
    if (!done) {
      $("result-error").textContent = r.state === "failed"
        ? `The AI analysis of this study could not be completed (${r.error || "unknown reason"}). The images are unaffected; review them as usual.`
        : "The AI analysis of this study is not finished yet.";
    } else {
      this.renderFindings(r);
      this.renderRecord(r);
      this.renderModelCard(r.model);
      this.renderFeedbackForm(r);
      await this.loadImages(r);
    }
    await this.loadTrail(r.id);
    status("");
    $("study-title").focus();
  }

  async loadImages(r) {
    const [image, heatmap, mask] = await Promise.all([
      this.api.bitmap(`/api/results/${r.id}/image.png`),
      r.artefacts.some((a) => a.kind === "heatmap-png") ? this.api.bitmap(`/api/results/${r.id}/heatmap.png`) : null,
      r.artefacts.some((a) => a.kind === "mask-png") ? this.api.bitmap(`/api/results/${r.id}/mask.png`) : null,
    ]);
    // The box is in source pixels; the stored pictures may be the source shrunk for display.
    const source = r.explanation && r.explanation.letterbox;
    const f = source && source.source_width ? image.width / source.source_width : 1;
    const raw = r.explanation && r.explanation.bbox;
    const box = raw && { x: raw.x * f, y: raw.y * f, width: raw.width * f, height: raw.height * f };
    this.viewer.load(image, heatmap, box, mask);
    $("overlay").disabled = !heatmap;
    $("bbox").disabled = !box;
    this.viewer.set({ overlay: $("overlay").checked && !!heatmap, opacity: $("opacity").value / 100, bbox: $("bbox").checked, preset: $("preset").value });
    $("zoom-value").textContent = `${Math.round(this.viewer.zoom * 100)}%`;
    const top = r.findings.filter((f) => f.probability >= f.threshold).map((f) => f.display).join(", ") || "no finding above threshold";
    $("view").setAttribute("aria-label", `${studyLabel(r.study)} image with ${r.saliencyMethod || "saliency"} overlay; AI: ${top}`);
  }

  renderFindings(r) {
    const regions = r.findings.some((f) => f.area);
    $("finding-col").textContent = regions ? "Region" : "Finding";
    $("measure-col").textContent = regions ? "Area" : "Probability";
    $("findings").replaceChildren(...r.findings.map((f) => {
      const above = f.probability >= f.threshold;
      if (f.area) {
        // A segmented region: its area instead of a probability (the outline is on the image).
        const area = f.area.mm2 == null ? `${f.area.model_pixels} model pixels (no pixel spacing)`
          : `${Math.round(f.area.mm2)} mm²${f.area.spacing_source === "ImagerPixelSpacing" ? " at the detector" : ""}`;
        return el("tr", { "data-area": f.area.mm2 == null ? "" : String(Math.round(f.area.mm2)) }, el("td", {}, f.display), el("td", {}, area), el("td", {}, "—"),
          el("td", { class: above ? "above" : "" }, above ? "Outlined" : "None outlined"));
      }
      return el("tr", {}, el("td", {}, f.display), el("td", {}, pct(f.probability)), el("td", {}, pct(f.threshold)),
        el("td", { class: above ? "above" : "" }, above ? "Above threshold" : "Below threshold"));
    }));
    const fa = r.faithfulness || {};
    const line = $("faithfulness");
    line.dataset.verdict = fa.verdict || "not-measured";
    if (r.findings.some((f) => f.area)) {
      line.dataset.verdict = "segmentation";
      line.textContent = "The magenta outline is the model's own mask; the heat map is Grad-CAM of the mask score, showing what drove the outline.";
      return;
    }
    const deletion = fa.deletionAuc == null ? "" :
      ` Deletion AUC ${fa.deletionAuc.toFixed(2)} against ${fa.randomDeletionAuc == null ? "—" : fa.randomDeletionAuc.toFixed(2)} for a random map (lower is better).`;
    const signed = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(3)}`;
    if (fa.road) {
      // ROAD was fixed in advance, so it is the measure the wording follows.
      line.textContent = fa.road.beatsRandom
        ? `ROAD ${signed(fa.road.combined)} against ${signed(fa.road.randomCombined)} for a random map (${r.saliencyMethod || "saliency"}; higher is better). ` +
          "Removing the highlighted pixels changes the model's score more than removing random ones: the map reflects what the model used." + deletion
        : `⚠ ROAD ${signed(fa.road.combined)}, not better than ${signed(fa.road.randomCombined)} for a random map (${r.saliencyMethod || "saliency"}). ` +
          "The highlighted region may not be what drove the finding: do not rely on the map's location." + deletion;
    } else {
      line.textContent = fa.deletionAuc == null
        ? "No faithfulness score was recorded for this saliency map."
        : `Deletion AUC ${fa.deletionAuc.toFixed(2)} against ${fa.randomDeletionAuc == null ? "—" : fa.randomDeletionAuc.toFixed(2)} for a random map (${r.saliencyMethod || "saliency"}). ` +
          "Lower than random means that removing the highlighted pixels first lowers the model's score faster: the map reflects what the model used.";
    }
  }

  /** Whether radsight's write-back filed this result in the EHR's own record: the EHR is asked
   *  directly, with the clinician's token, for the DiagnosticReport carrying the result's id. */
  async renderRecord(r) {
    const line = $("ehr-record");
    line.dataset.record = "searching";
    line.textContent = "Looking for this result in the EHR record…";
    try {
      const found = await this.api.client.request(`DiagnosticReport?identifier=${encodeURIComponent(`${RESULT_SYSTEM}|${r.id}`)}`);
      const report = ((found && found.entry) || []).map((e) => e.resource).find((x) => x && x.resourceType === "DiagnosticReport");
      if (this.result !== r) return; // another result was opened meanwhile
      line.dataset.record = report ? "filed" : "absent";
      const ai = report && (report.meta && report.meta.security || []).some((s) => s.code === "AIAST");
      line.textContent = report
        ? `Filed in the EHR record as DiagnosticReport/${report.id}${report.issued ? `, issued ${fmtTime(report.issued)}` : ""}${ai ? ", labelled as asserted by AI" : ""}.`
        : "Not in the EHR record: radsight files results there only where the EHR is configured as an output, and this one has not arrived (yet).";
    } catch (e) {
      if (this.result !== r) return;
      line.dataset.record = "unknown";
      line.textContent = `The EHR record could not be searched (${e.message}).`;
    }
  }

  renderModelCard(model) {
    const card = model.card || {};
    const dl = $("model-card");
    dl.replaceChildren();
    const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
    row("Model", `${model.id || "unknown"} version ${model.version || "unknown"}`);
    row("Weights (SHA-256)", model.weightsSha256 ? `${model.weightsSha256.slice(0, 16)}…` : "unknown");
    row("Intended use", card.intended_use || "not stated");
    const lim = Array.isArray(card.limitations) ? card.limitations : card.limitations ? [card.limitations] : [];
    row("Limitations", lim.length ? el("ul", {}, ...lim.map((l) => el("li", {}, l))) : "not stated");
    const metrics = card.metrics && typeof card.metrics === "object" ? Object.entries(card.metrics) : [];
    row("Validation metrics", metrics.length ? el("ul", {}, ...metrics.map(([k, v]) => el("li", {}, `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`))) : "not stated");
    if (card.training_data) row("Training data", typeof card.training_data === "object" ? JSON.stringify(card.training_data) : card.training_data);
  }

  renderFeedbackForm(r) {
    const sel = $("reason");
    sel.replaceChildren(el("option", { value: "" }, "(none)"), ...r.feedbackReasons.map((x) => el("option", { value: x.code }, x.display)));
    $("feedback-form").reset();
    const last = r.feedback && r.feedback[0];
    $("feedback-status").textContent = last ? `You already gave feedback on this result: ${last.verdict}. You can send more.` : "";
  }

  async sendFeedback() {
    const form = $("feedback-form");
    const verdict = form.verdict.value;
    if (!verdict) { $("feedback-status").textContent = "Choose agree or disagree first."; return; }
    const body = { verdict, reasonCode: $("reason").value || null, comment: $("comment").value || null, cardUuid: this.target.cardUuid || null };
    $("send-feedback").disabled = true;
    try {
      const res = await this.api.json(`/api/results/${this.result.id}/feedback`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      $("feedback-status").textContent = `Thank you: your feedback (${res.verdict}) was recorded in the audit log (entry ${res.auditSeq}).`;
      form.reset();
      await this.loadTrail(this.result.id);
    } catch (e) {
      $("feedback-status").textContent = `Your feedback could not be recorded: ${e.message}`;
    } finally {
      $("send-feedback").disabled = false;
    }
  }

  async loadTrail(id) {
    const { events } = await this.api.json(`/api/results/${id}/audit`);
    $("trail").replaceChildren(...(events.length ? events : [null]).map((e) => e
      ? el("li", { "data-action": e.action }, el("time", { dateTime: e.recordedAt }, fmtTime(e.recordedAt)), ` — ${describe(e)}`, el("span", { class: "hint" }, ` (entry ${e.seq})`))
      : el("li", {}, "No audit entries yet.")));
  }
}

try {
  const { client, token } = await connect();
  const app = new App(new Api(client), token.patient, launchTarget(token));
  window.radsight = app; // for the end-to-end tests
  await app.start();
  document.body.dataset.ready = "true";
} catch (e) {
  if (!String(e.message).startsWith("launch stopped")) {
    status(`radsight could not load this patient's results: ${e.message}`);
    document.body.dataset.ready = "error";
  }
}
