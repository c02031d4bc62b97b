#!/usr/bin/env bash
# radsight on its embedded defaults (SQLite in ./data, port 8080, HL7 on 2575), with the SMART
# app built and the demo EHR on, so that everything can be tried without a real EHR:
#
#   scripts/run.sh            serve: CDS Hooks, HL7/MLLP, the SMART app, the demo EHR at
#                             http://127.0.0.1:8080/demo-ehr/ (its patient's phantom study is
#                             analysed by the shipped model on start)
#   RADSIGHT_PACS=URL scripts/run.sh
#                             the same, reading studies announced by HL7 from the DICOMweb root
#                             URL (an Orthanc: http://127.0.0.1:8042/dicom-web) and storing each
#                             result back into its study as an SR and an overlay (docs/outputs.md)
#   scripts/run.sh analyze    the analysis pipeline on local files: writes phantom radiographs
#                             to ./phantoms, analyses them, pictures and report.json in
#                             ./radsight-analysis
#
# Idempotent: installs Node.js if missing and builds the app only when its inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."

build_app() {
  if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  [ -d smart-app/node_modules/fhirclient ] || (cd smart-app && npm ci --silent --no-audit --no-fund)
  (cd smart-app && npm run --silent build >/dev/null)
}

case "${1:-serve}" in
  serve)
    build_app
    cargo build --release --locked --features demo   # the demo EHR at /demo-ehr/
    if [ -n "${RADSIGHT_PACS:-}" ]; then
      export RADSIGHT_DICOMWEB__ENDPOINTS="[\"$RADSIGHT_PACS\"]" RADSIGHT_DICOMWEB__DEFAULT_ENDPOINT="$RADSIGHT_PACS"
      export RADSIGHT_OUTPUTS__PACS="[\"$RADSIGHT_PACS\"]"
    fi
    exec env RADSIGHT_SMART__DEMO_EHR__ENABLED=true target/release/radsight serve
    ;;
  analyze)
    cargo build --release --locked
    [ -f phantoms/truth.json ] || target/release/radsight models phantoms --out phantoms --count 8
    exec target/release/radsight analyze phantoms --out radsight-analysis
    ;;
  *)
    echo "usage: scripts/run.sh [serve|analyze]" >&2
    exit 2
    ;;
esac
