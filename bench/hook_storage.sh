#!/usr/bin/env bash
# What one CDS hook call leaves in the database: bytes per call, per table and index.
#
#   bench/hook_storage.sh            # builds release, makes $CALLS calls, prints the figures
#
# The order-select example for one patient with two stored results and one pending study (the
# hooks.sh set-up), $CALLS times (default 2000) over one keep-alive connection, each with its own
# ES384 token. The figure is the growth of every table and index (SQLite's dbstat, pages in use)
# between the first 100 calls and the last $CALLS - 100, divided by those calls: what each call
# adds once the patient's cards have been seen before, which is a hospital's steady state. It is
# also split into what is kept and the replay guard's rows, which go once their token expires.
#
# Knobs: BENCH_PORT (18082), CALLS (2000), BENCH_PROFILE (release; the bytes stored do not depend
# on it, so `debug` gives the same figure faster on a machine without a release build),
# BENCH_SKIP_BUILD=1 uses the binary as built, BENCH_KEEP_WORK=1 keeps the temp dir.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
PORT="${BENCH_PORT:-18082}"
CALLS="${CALLS:-2000}"
WARM=100
PROFILE="${BENCH_PROFILE:-release}"
ISS="https://ehr.example.org"
SERVICE="radsight-imaging-order-select"
BODY="$REPO/cds-hooks/examples/order-select.json"
HOOK_URL="http://127.0.0.1:$PORT/cds-services/$SERVICE"

# shellcheck source=bench/common.sh
. "$REPO/bench/common.sh"
[ "$CALLS" -gt "$WARM" ] || die "CALLS must be above $WARM"

PY=python3
if [ -x "$BENCH/.venv/bin/python" ] && "$BENCH/.venv/bin/python" -c 'import cryptography' 2>/dev/null; then
    PY="$BENCH/.venv/bin/python"
elif ! python3 -c 'import cryptography' 2>/dev/null; then
    log "installing cryptography into bench/.venv"
    python3 -m venv "$BENCH/.venv"
    "$BENCH/.venv/bin/pip" install -q cryptography >&2
    PY="$BENCH/.venv/bin/python"
fi

profile_flag=(--release)
[ "$PROFILE" = debug ] && profile_flag=()
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building radsight ($PROFILE)"
    (cd "$REPO" && cargo build "${profile_flag[@]}" --bin radsight) >&2
fi
RADSIGHT="${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE/radsight"
[ -x "$RADSIGHT" ] || die "$RADSIGHT not found"
if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then die "port $PORT is already in use"; fi

WORK="$(mktemp -d /tmp/radsight-hook-storage.XXXXXX)"
RADSIGHT_PID=""
cleanup() {
    local rc=$?
    [ -n "$RADSIGHT_PID" ] && { kill "$RADSIGHT_PID" 2>/dev/null || true; wait "$RADSIGHT_PID" 2>/dev/null || true; }
    if [ "${BENCH_KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


"${clean_env[@]}" "$RADSIGHT" keys generate --out "$WORK/keys" >/dev/null
cat >"$WORK/radsight.toml" <<TOML
[server]
port = $PORT
workers = 2

[database]
url = "sqlite://$WORK/radsight.db?mode=rwc"

[analysis]
models_dir = "$REPO/models"

# One client on one address as fast as it goes: the rate limits (200 a second by default) would
# refuse it, and what is measured here is bytes, not refusals.
[limits]
per_source_per_second = 1000000
per_source_burst = 1000000
per_client_per_second = 1000000
per_client_burst = 1000000

[[clients]]
iss = "$ISS"
jwks_file = "$WORK/keys/client.jwks.json"
fhir_servers = ["https://ehr.example.org/fhir"]
TOML
"${clean_env[@]}" "$RADSIGHT" --config "$WORK/radsight.toml" migrate >&2
"$PY" "$BENCH/seed.py" "$WORK/radsight.db"
(cd "$WORK" && exec "${clean_env[@]}" "$RADSIGHT" --config "$WORK/radsight.toml" serve) >"$WORK/radsight.log" 2>&1 &
RADSIGHT_PID=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
    kill -0 "$RADSIGHT_PID" 2>/dev/null || { cat "$WORK/radsight.log" >&2; die "radsight exited"; }
    sleep 0.2
done

log "minting $CALLS tokens"
"$PY" "$BENCH/mint_tokens.py" --key "$WORK/keys/client.key.pem" --jwks "$WORK/keys/client.jwks.json" \
    --iss "$ISS" --aud "$HOOK_URL" --count "$CALLS" --out "$WORK/tokens.txt"

log "making $CALLS calls"
"$PY" - "$WORK/radsight.db" "$WORK/tokens.txt" "$BODY" "$PORT" "$SERVICE" "$WARM" <<'PY'
import http.client, json, sqlite3, sys

db_path, tokens_path, body_path, port, service, warm = sys.argv[1:7]
warm = int(warm)
tokens = open(tokens_path).read().split()
body = open(body_path, "rb").read()
conn = http.client.HTTPConnection("127.0.0.1", int(port))


def call(token):
    conn.request("POST", f"/cds-services/{service}", body,
                 {"content-type": "application/json", "authorization": f"Bearer {token}"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"hook call answered {r.status}: {data[:300]!r}")
    return json.loads(data)["cards"]


def sizes():
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT name, SUM(pgsize - unused) FROM dbstat GROUP BY name").fetchall()
    db.close()
    return dict(rows)


cards = 0
for t in tokens[:warm]:
    cards = len(call(t))
before = sizes()
for t in tokens[warm:]:
    call(t)
after = sizes()
n = len(tokens) - warm
grew = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after}
print(f"cards per call: {cards}; calls measured: {n} (after {warm} warm-up calls)")
for name, b in sorted(grew.items(), key=lambda kv: -kv[1]):
    if abs(b) >= 1:
        print(f"  {name:40s} {b:9.1f} B/call")
# The replay guard's rows are deleted once their token has expired (a few minutes): they are
# part of the growth while a token lives, not of what a month of calls leaves behind.
transient = sum(b for name, b in grew.items() if "client_jti" in name)
print(f"RESULT bytes_per_call={sum(grew.values()):.0f} kept={sum(grew.values()) - transient:.0f} "
      f"replay_guard_until_expiry={transient:.0f}")
PY
