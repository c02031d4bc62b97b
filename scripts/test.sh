#!/usr/bin/env bash
# Runs radsight's whole test suite on a fresh machine: installs and starts what the tests need
# (idempotently), then runs every test on SQLite and PostgreSQL.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # cargo test filter
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
  # The independent audit-proof verifier and the FHIR validator run in their own venv.
  local venv=.venv-test
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import cryptography, fhir.resources' 2>/dev/null ||
    "$venv/bin/pip" install -q -r tests/python/requirements.txt
  export RADSIGHT_TEST_PYTHON="$PWD/$venv/bin/python"
}

ensure_browser() {
  # The auditors' console is tested in headless Chromium driven by playwright-core.
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
}

command -v psql >/dev/null 2>&1 || apt_install postgresql-client
ensure_postgres
ensure_python
ensure_browser

cargo test --workspace --locked "$@"
