// The EHR launch (SMART App Launch 2.2): discover the EHR's endpoints, then authorise with PKCE
// S256, a 256-bit random state and aud = iss, through fhirclient. radsight has already checked
// that `iss` is a registered EHR before serving this page.
import { b64url, errorPage, LAUNCH_KEY } from "./common.js";

const cfg = JSON.parse(document.getElementById("launch-config").textContent);

async function discover(iss) {
  const url = iss.replace(/\/*$/, "/") + ".well-known/smart-configuration";
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 10000);
  try {
    const res = await fetch(url, { headers: { accept: "application/json" }, signal: ctrl.signal });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return await res.json();
  } finally {
    clearTimeout(timer);
  }
}

try {
  if (!cfg.launch) errorPage("missing-launch");
  let meta;
  try {
    meta = await discover(cfg.iss);
  } catch {
    errorPage("unreachable-iss");
  }
  if (meta) {
    if (!(meta.code_challenge_methods_supported || []).includes("S256")) errorPage("unreachable-iss");
    // fhirclient's own state key has ~95 bits; SMART asks for at least 122.
    const state = b64url(crypto.getRandomValues(new Uint8Array(32)));
    sessionStorage.setItem(LAUNCH_KEY, JSON.stringify({ state, startedAt: Date.now() }));
    await FHIR.oauth2.authorize({
      iss: cfg.iss,
      launch: cfg.launch,
      clientId: cfg.clientId,
      scope: cfg.scope,
      redirectUri: cfg.redirectUri,
      pkceMode: "required",
      stateKey: state,
      completeInTarget: true,
    });
  }
} catch (e) {
  if (!String(e.message).startsWith("launch stopped")) {
    try { errorPage("unreachable-iss"); } catch {}
  }
}
