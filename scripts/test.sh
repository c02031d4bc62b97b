#!/usr/bin/env bash
# Runs radsight's whole test suite on a fresh machine: installs and starts what the tests need
# (idempotently): PostgreSQL, and Orthanc with DICOMweb as the test PACS; then runs every test
# on SQLite and PostgreSQL.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # cargo test filter (the production-build check then is skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${RADSIGHT_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export RADSIGHT_TEST_PG_URL="$PG_URL"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  if ! psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1; then
    # A stock Debian cluster asks for passwords on TCP; the tests use local trust auth.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
  fi
  psql "$PG_URL" -Atqc 'select 1' >/dev/null
  # Each PostgreSQL test creates its own database; drop those left by earlier runs.
  psql "$PG_URL" -Atqc "select datname from pg_database where datname like 'radsight\_test\_%'" |
    while read -r db; do psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done
}

ensure_python() {
  # The independent audit-proof verifier, the FHIR validator and the DICOM reference (pydicom)
  # run in their own venv.
  local venv=.venv-test
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import cryptography, fhir.resources, pydicom, numpy, PIL, hl7apy' 2>/dev/null ||
    "$venv/bin/pip" install -q -r tests/python/requirements.txt
  export RADSIGHT_TEST_PYTHON="$PWD/$venv/bin/python"
}

ensure_torch() {
  # radsight-vision's PyTorch parity tests (crates/vision/tests/vision/parity.rs): torch,
  # torchvision, grad-cam 1.5.7 (pytorch-grad-cam), MONAI and safetensors in the test venv.
  # PyPI's torch is the CUDA build (~5 GB installed, runs on CPU); pip caches it after the
  # first install (about 3.5 min here on a cold venv).
  local venv=.venv-test
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import torch, torchvision, pytorch_grad_cam, monai, safetensors' 2>/dev/null ||
    "$venv/bin/pip" install -q -r tests/python/requirements-torch.txt
  export RADSIGHT_TEST_TORCH_PYTHON="$PWD/$venv/bin/python"
}

ensure_browser() {
  # The auditors' console is tested in headless Chromium driven by playwright-core.
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
}

ensure_smart_app() {
  # The SMART app: fhirclient from npm, then dist/ rebuilt (radsight serves it at /smart/).
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -d smart-app/node_modules/fhirclient ]; then
    (cd smart-app && npm ci --silent --no-audit --no-fund)
  fi
  (cd smart-app && npm run --silent build >/dev/null)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A real PACS for the DICOMweb tests: Orthanc with its DICOMweb plugin and HTTP basic auth, on
# free ports with a temporary storage folder, stopped when this script exits. An already running
# one can be reused by setting RADSIGHT_TEST_ORTHANC_URL, _USER and _PASSWORD (its DICOMweb
# root is $URL/dicom-web).
ensure_orthanc() {
  if [ -n "${RADSIGHT_TEST_ORTHANC_URL:-}" ] &&
     curl -fsS -u "${RADSIGHT_TEST_ORTHANC_USER:-}:${RADSIGHT_TEST_ORTHANC_PASSWORD:-}" "$RADSIGHT_TEST_ORTHANC_URL/system" >/dev/null 2>&1; then
    return
  fi
  command -v Orthanc >/dev/null 2>&1 && dpkg -s orthanc-dicomweb >/dev/null 2>&1 || apt_install orthanc orthanc-dicomweb
  local plugin; plugin=$(dpkg -L orthanc-dicomweb | grep -m1 'libOrthancDicomWeb\.so')
  ORTHANC_DIR=$(mktemp -d)
  local http_port dicom_port; http_port=$(free_port); dicom_port=$(free_port)
  export RADSIGHT_TEST_ORTHANC_USER=radsight
  RADSIGHT_TEST_ORTHANC_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  export RADSIGHT_TEST_ORTHANC_PASSWORD
  cat > "$ORTHANC_DIR/config.json" <<JSON
{
  "Name": "radsight-test-pacs",
  "StorageDirectory": "$ORTHANC_DIR/storage",
  "IndexDirectory": "$ORTHANC_DIR/storage",
  "HttpPort": $http_port,
  "DicomPort": $dicom_port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": {"$RADSIGHT_TEST_ORTHANC_USER": "$RADSIGHT_TEST_ORTHANC_PASSWORD"},
  "Plugins": ["$plugin"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
}
JSON
  Orthanc "$ORTHANC_DIR/config.json" >"$ORTHANC_DIR/orthanc.log" 2>&1 &
  ORTHANC_PID=$!
  trap 'kill "$ORTHANC_PID" 2>/dev/null || true; rm -rf "$ORTHANC_DIR"' EXIT
  export RADSIGHT_TEST_ORTHANC_URL="http://127.0.0.1:$http_port"
  for _ in $(seq 1 60); do
    curl -fsS -u "$RADSIGHT_TEST_ORTHANC_USER:$RADSIGHT_TEST_ORTHANC_PASSWORD" "$RADSIGHT_TEST_ORTHANC_URL/dicom-web/studies" >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "Orthanc did not start:" >&2; cat "$ORTHANC_DIR/orthanc.log" >&2; exit 1
}

ensure_dicom_tools() {
  # radsight-dicom's generated corpus (tests/python/dicom_corpus.py): DCMTK's dcmcjpeg/dcmcjpls/
  # dcmcrle and GDCM's gdcmconv; and pydicom's reference codecs (pylibjpeg) in the test venv,
  # also in a venv made before they were in tests/python/requirements.txt.
  # radsight-dicom-report's objects are checked by dicom3tools' dciodvfy, DCMTK's dsrdump and
  # highdicom (tests/python/read_sr.py).
  command -v dcmcjpeg >/dev/null 2>&1 && command -v gdcmconv >/dev/null 2>&1 || apt_install dcmtk libgdcm-tools
  command -v dciodvfy >/dev/null 2>&1 || apt_install dicom3tools
  "$RADSIGHT_TEST_PYTHON" -c 'import pylibjpeg, libjpeg, openjpeg, highdicom' 2>/dev/null ||
    "$(dirname "$RADSIGHT_TEST_PYTHON")/pip" install -q -r tests/python/requirements.txt
}

command -v psql >/dev/null 2>&1 || apt_install postgresql-client
command -v curl >/dev/null 2>&1 || apt_install curl
command -v python3 >/dev/null 2>&1 || apt_install python3
ensure_postgres
ensure_python
ensure_torch
ensure_dicom_tools
ensure_browser
ensure_smart_app
ensure_orthanc

# Style is mechanical: formatting and lints fail the run (the module layering is a unit test).
# RADSIGHT_TEST_SKIP_STYLE=1 skips them while iterating locally; CI never sets it.
if [ "${RADSIGHT_TEST_SKIP_STYLE:-0}" != 1 ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --locked --features radsight/demo -- -D warnings
fi

# Every suite, with the demo EHR compiled in (its tests need it), then the production build
# (without `demo`), which must not serve it. The last line sums every suite's counts.
log=$(mktemp)
status=0
cargo test --workspace --locked --features radsight/demo "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ]; then
  cargo test -p radsight --locked --test production_build 2>&1 | tee -a "$log" || status=$?
fi
passed=$(grep -oE '^test result: .* ([0-9]+) passed' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -oE '^test result: .* ([0-9]+) failed' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a build failure runs no test
echo "all suites: $passed passed, $failed failed"
exit "$status"
