// Shared by the launch page and the app.

/** sessionStorage key of the launch this window started: its state and when. */
export const LAUNCH_KEY = "radsight-launch";
/** A launch older than this is refused as expired (the EHR's code lives shorter anyway). */
export const LAUNCH_MAX_AGE_MS = 10 * 60 * 1000;

export function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Replaces the page with radsight's clear error page for `reason`. */
export function errorPage(reason) {
  location.replace(`/smart/error?reason=${encodeURIComponent(reason)}`);
  throw new Error(`launch stopped: ${reason}`);
}
