// Builds the app into dist/: the plain HTML/CSS/JS modules from src/ and the browser bundle of
// the reference SMART client (fhirclient). Idempotent: dist/ is rebuilt from scratch each time.
// Usage: npm ci && npm run build
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const client = join(here, "node_modules", "fhirclient", "build");
if (!existsSync(join(client, "fhir-client.min.js"))) {
  console.error("fhirclient is not installed: run `npm ci` in smart-app/ first");
  process.exit(1);
}
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "vendor"), { recursive: true });
cpSync(join(here, "src"), dist, { recursive: true });
cpSync(join(client, "fhir-client.min.js"), join(dist, "vendor", "fhir-client.min.js"));
cpSync(join(client, "fhir-client.min.js.LICENSE.txt"), join(dist, "vendor", "fhir-client.min.js.LICENSE.txt"));
cpSync(join(here, "node_modules", "fhirclient", "LICENSE"), join(dist, "vendor", "fhirclient-LICENSE.txt"));
console.log(`built ${dist}`);
