#!/usr/bin/env bash
# Audit-log benchmark in release mode: durable appends/s (single and group commit), verify time
# and inclusion-proof latency over a large log, on SQLite and on PostgreSQL.
#
#   bench/audit.sh [SQLITE_ENTRIES] [POSTGRES_ENTRIES]     (defaults: 1000000 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
SQLITE_N="${1:-1000000}"
PG_N="${2:-200000}"
PG_ADMIN="${RADSIGHT_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo build --release --example audit_bench
BIN=target/release/examples/audit_bench
WORK=$(mktemp -d)
DB="radsight_audit_bench_$$"
trap 'rm -rf "$WORK"; psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT

echo "date: $(date -u +%FT%TZ)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "--- SQLite, $SQLITE_N entries"
"$BIN" "sqlite://$WORK/audit.db?mode=rwc" "$SQLITE_N"
echo "--- PostgreSQL, $PG_N entries"
psql "$PG_ADMIN" -qc "CREATE DATABASE $DB" >/dev/null
"$BIN" "${PG_ADMIN%/*}/$DB" "$PG_N"
