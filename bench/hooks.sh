#!/usr/bin/env bash
# Load benchmark of the order-select hook against a bare actix-web JSON echo (the ceiling).
#
#   bench/hooks.sh            # from anywhere; builds release, runs everything, prints a summary
#
# What it does, all on 127.0.0.1:
#   1. installs wrk (apt) and Python's `cryptography` (bench/.venv) if missing; builds
#      `radsight` and the `json_echo` example in release mode;
#   2. in a temp dir: generates a client key pair, writes radsight.toml (2 workers, SQLite),
#      migrates, stores 3 prior chest studies for Patient/example-patient (2 with finished AI
#      results), starts `radsight serve` and `json_echo` (2 workers);
#   3. checks one real hook call returns 200 with the AI cards, and the echo echoes;
#   4. for each server, a short paced warm-up, then
#        (a) max throughput: wrk -t2 -c$MAX_CONNS -d$MAX_DURATION, as fast as it goes;
#        (b) paced: wrk -t2 -c$PACED_CONNS -d$PACED_DURATION at $RATE req/s (bench/hook.lua);
#      every request carries a never-used ES384 JWT (minted by bench/mint_tokens.py just before
#      each run; tokens live 5 minutes). The echo gets the same body and same-size tokens;
#   5. prints p50/p99/throughput per run, the radsight/echo ratios and the issue's targets
#      (p99 <= 5 ms at 1,000 req/s; throughput >= half the echo's), and cross-checks the
#      server's own log for the number of 200s. A run with any non-2xx, socket error, timeout
#      or exhausted token list is invalid and makes the script exit 1.
#
# Knobs (environment): BENCH_PORT (18080), BENCH_ECHO_PORT (18081), MAX_DURATION (20),
# MAX_CONNS (16), MAX_TOKENS (60000), PACED_DURATION (30), PACED_CONNS (16), RATE (1000),
# THREADS (2), BENCH_DB_DIR (where radsight's SQLite file goes; default the temp dir under /tmp;
# /dev/shm takes fsync out of the picture, for diagnosis only), BENCH_KEEP_WORK=1 keeps the temp
# dir, BENCH_ENFORCE=1 exits 2 if a target is missed, BENCH_SKIP_BUILD=1 uses the binaries as built,
# LIMITS=on (default) checks every request against per-source and per-client rate limits set too
# high to refuse anything (the limiter's cost), LIMITS=off turns them off.
# Raw wrk output and a summary go to bench/out/<timestamp>/ (gitignored).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
PORT="${BENCH_PORT:-18080}"
ECHO_PORT="${BENCH_ECHO_PORT:-18081}"
MAX_DURATION="${MAX_DURATION:-20}"
MAX_CONNS="${MAX_CONNS:-16}"
MAX_TOKENS="${MAX_TOKENS:-60000}"
PACED_DURATION="${PACED_DURATION:-30}"
PACED_CONNS="${PACED_CONNS:-16}"
RATE="${RATE:-1000}"
THREADS="${THREADS:-2}"
case "${LIMITS:-on}" in
    on) LIMIT_RATE=1000000 ;;
    off) LIMIT_RATE=0 ;;
    *) echo "LIMITS must be on or off" >&2; exit 1 ;;
esac
WARMUP_DURATION=3
WARMUP_RATE=500
ISS="https://ehr.example.org"
SERVICE="radsight-imaging-order-select"
BODY="$REPO/cds-hooks/examples/order-select.json"
HOOK_URL="http://127.0.0.1:$PORT/cds-services/$SERVICE"
ECHO_URL="http://127.0.0.1:$ECHO_PORT/cds-services/$SERVICE"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$BENCH/out/$STAMP"
mkdir -p "$OUT"

# shellcheck source=bench/common.sh
. "$REPO/bench/common.sh"

# ---------------------------------------------------------------- tools
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >&2
fi
PY=python3
if [ -x "$BENCH/.venv/bin/python" ] && "$BENCH/.venv/bin/python" -c 'import cryptography' 2>/dev/null; then
    PY="$BENCH/.venv/bin/python"
elif ! python3 -c 'import cryptography' 2>/dev/null; then
    log "installing cryptography into bench/.venv"
    python3 -m venv "$BENCH/.venv"
    "$BENCH/.venv/bin/pip" install -q cryptography >&2
    PY="$BENCH/.venv/bin/python"
fi

# ---------------------------------------------------------------- build
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
    log "BENCH_SKIP_BUILD=1: using the release binaries already built"
else
    log "building release binaries"
    (cd "$REPO" && cargo build --release --example json_echo --bin radsight) >&2
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
RADSIGHT="$TARGET_DIR/release/radsight"
ECHO_BIN="$TARGET_DIR/release/examples/json_echo"
[ -x "$RADSIGHT" ] && [ -x "$ECHO_BIN" ] || die "release binaries not found under $TARGET_DIR"

for p in "$PORT" "$ECHO_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
        die "port $p is already in use on 127.0.0.1"
    fi
done

# ---------------------------------------------------------------- setup
WORK="$(mktemp -d /tmp/radsight-bench.XXXXXX)"
if [ -n "${BENCH_DB_DIR:-}" ]; then
    DB_DIR="$(mktemp -d "$BENCH_DB_DIR/radsight-bench-db.XXXXXX")"
else
    DB_DIR="$WORK"
fi
RADSIGHT_PID=""
ECHO_PID=""
cleanup() {
    local rc=$?
    for pid in $RADSIGHT_PID $ECHO_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $RADSIGHT_PID $ECHO_PID; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP_WORK:-0}" = 1 ]; then
        log "kept $WORK and $DB_DIR"
    else
        rm -rf "$WORK" "$DB_DIR"
    fi
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
url = "sqlite://$DB_DIR/radsight.db?mode=rwc"

[analysis]
models_dir = "$REPO/models"

[limits]
per_source_per_second = $LIMIT_RATE
per_source_burst = $LIMIT_RATE
per_client_per_second = $LIMIT_RATE
per_client_burst = $LIMIT_RATE

[[clients]]
iss = "$ISS"
jwks_file = "$WORK/keys/client.jwks.json"
fhir_servers = ["https://ehr.example.org/fhir"]
TOML
"${clean_env[@]}" "$RADSIGHT" --config "$WORK/radsight.toml" migrate >&2
"$PY" "$BENCH/seed.py" "$DB_DIR/radsight.db"

log "starting radsight on :$PORT and json_echo on :$ECHO_PORT"
(cd "$WORK" && exec "${clean_env[@]}" RUST_LOG=info "$RADSIGHT" --config "$WORK/radsight.toml" serve) \
    >"$WORK/radsight.log" 2>&1 &
RADSIGHT_PID=$!
"$ECHO_BIN" "$ECHO_PORT" >"$WORK/echo.log" 2>&1 &
ECHO_PID=$!

for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" &&
        curl -sf -o /dev/null -H 'content-type: application/json' -d '{}' "$ECHO_URL"; then
        break
    fi
    kill -0 "$RADSIGHT_PID" 2>/dev/null || { cat "$WORK/radsight.log" >&2; die "radsight exited"; }
    kill -0 "$ECHO_PID" 2>/dev/null || { cat "$WORK/echo.log" >&2; die "json_echo exited"; }
    sleep 0.2
done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" || die "radsight did not become ready"

mint() { # mint COUNT FILE
    "$PY" "$BENCH/mint_tokens.py" --key "$WORK/keys/client.key.pem" --jwks "$WORK/keys/client.jwks.json" \
        --iss "$ISS" --aud "$HOOK_URL" --count "$1" --out "$2"
}

# ---------------------------------------------------------------- sanity check
log "checking one hook call returns the AI cards"
mint 1 "$WORK/one.txt"
code="$(curl -s -o "$WORK/one.json" -w '%{http_code}' -H 'content-type: application/json' \
    -H "authorization: Bearer $(cat "$WORK/one.txt")" --data-binary "@$BODY" "$HOOK_URL")"
[ "$code" = 200 ] || { cat "$WORK/one.json" >&2; tail -20 "$WORK/radsight.log" >&2; die "hook call returned $code"; }
"$PY" - "$WORK/one.json" <<'PYCHECK' >&2 || die "hook response lacks the expected AI cards"
import json, sys
cards = json.load(open(sys.argv[1]))["cards"]
model = [c for c in cards if c["summary"].startswith("AI:") and (c.get("source") or {}).get("topic")]
pending = [c for c in cards if "pending" in c["summary"]]
for c in cards:
    print(f"  card: [{c['indicator']}] {c['summary']}")
if len(model) < 2 or len(pending) < 1:
    sys.exit(f"expected >= 2 model cards and 1 pending card, got {len(model)} and {len(pending)}")
print(f"  ok: {len(cards)} cards, {len(model)} from stored model results, {len(pending)} pending")
PYCHECK
cp "$WORK/one.json" "$OUT/sample-response.json"
curl -sf -H 'content-type: application/json' --data-binary "@$BODY" "$ECHO_URL" >"$WORK/echo.json" ||
    die "echo call failed"
"$PY" -c 'import json,sys; assert json.load(open(sys.argv[1])) == json.load(open(sys.argv[2]))' \
    "$WORK/echo.json" "$BODY" || die "echo did not echo the body"

# ---------------------------------------------------------------- load
# CPU accounting, to tell the server's cost from wrk's and from whatever else runs on the box.
CLK_TCK="$(getconf CLK_TCK)"
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }                      # utime + stime
# /proc/stat "cpu" line: user nice system idle iowait irq softirq steal (guest is inside user).
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6, $7 + $8}' /proc/stat; }

# run_wrk LABEL URL CONNS DURATION RATE TOKENS -> prints the RESULT line (plus CPU fields),
# keeps wrk's full output in $OUT/LABEL.txt
run_wrk() {
    local label="$1" url="$2" conns="$3" duration="$4" rate="$5" tokens="$6" reuse=0 server_pid
    case "$label" in echo-*|warmup-echo) reuse=1; server_pid="$ECHO_PID" ;; *) server_pid="$RADSIGHT_PID" ;; esac
    log "wrk $label: -t$THREADS -c$conns -d${duration}s rate=${rate:-max} $url"
    local load_before s0 m0 s1 m1 wrk_cpu
    load_before="$(cut -d' ' -f1 /proc/loadavg)"
    s0="$(proc_ticks "$server_pid")"
    m0="$(machine_ticks)"
    local TIMEFORMAT='%U %S'
    if ! { time BENCH_LABEL="$label" BENCH_BODY="$BODY" BENCH_TOKENS="$tokens" BENCH_THREADS="$THREADS" \
        BENCH_RATE="$rate" BENCH_REUSE="$reuse" \
        wrk -t"$THREADS" -c"$conns" -d"${duration}s" --timeout 10s --latency -s "$BENCH/hook.lua" "$url" \
        >"$OUT/$label.txt" 2>&1; } 2>"$WORK/time.txt"; then
        cat "$OUT/$label.txt" >&2
        die "wrk failed"
    fi
    s1="$(proc_ticks "$server_pid")"
    m1="$(machine_ticks)"
    wrk_cpu="$(awk '{print $1 + $2}' "$WORK/time.txt")"
    local result
    result="$(grep '^RESULT ' "$OUT/$label.txt")" || die "no RESULT line from wrk ($OUT/$label.txt)"
    # Percentages are of ONE core (200% = the whole 2-core machine).
    awk -v r="$result" -v s0="$s0" -v s1="$s1" -v m0="$m0" -v m1="$m1" -v w="$wrk_cpu" -v hz="$CLK_TCK" \
        -v ncpu="$(nproc)" -v la="$load_before" -v la1="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
        split(m0, a, " "); split(m1, b, " ");
        wall = (b[1] - a[1]) / hz / ncpu; busy = ((b[1] - a[1]) - (b[2] - a[2])) / hz;
        srv = (s1 - s0) / hz; n = r; sub(/.*requests=/, "", n); sub(/ .*/, "", n);
        irq = (b[3] - a[3]) / hz;
        other = busy - srv - w - irq; if (other < 0) other = 0;
        printf "%s server_cpu_pct=%.0f server_cpu_ms_per_req=%.3f wrk_cpu_pct=%.0f irq_cpu_pct=%.0f other_cpu_pct=%.0f loadavg_before=%s loadavg_after=%s\n",
            r, 100 * srv / wall, (n > 0 ? 1000 * srv / n : 0), 100 * w / wall, 100 * irq / wall, 100 * other / wall, la, la1 }' |
        tee -a "$OUT/$label.txt"
}

RESULTS="$OUT/results.txt"
: >"$RESULTS"

log "warm-up (${WARMUP_DURATION}s at $WARMUP_RATE req/s each, not reported)"
mint $((WARMUP_DURATION * WARMUP_RATE + 1000)) "$WORK/warmup.txt"
run_wrk warmup-radsight "$HOOK_URL" 4 "$WARMUP_DURATION" "$WARMUP_RATE" "$WORK/warmup.txt" >/dev/null
run_wrk warmup-echo "$ECHO_URL" 4 "$WARMUP_DURATION" "$WARMUP_RATE" "$WORK/warmup.txt" >/dev/null

log "minting $MAX_TOKENS tokens for the max-throughput runs"
mint "$MAX_TOKENS" "$WORK/max.txt"
run_wrk radsight-max "$HOOK_URL" "$MAX_CONNS" "$MAX_DURATION" 0 "$WORK/max.txt" >>"$RESULTS"
run_wrk echo-max "$ECHO_URL" "$MAX_CONNS" "$MAX_DURATION" 0 "$WORK/max.txt" >>"$RESULTS"

PACED_TOKENS=$((RATE * PACED_DURATION * 115 / 100 + 2000))
log "minting $PACED_TOKENS tokens for the paced runs"
mint "$PACED_TOKENS" "$WORK/paced.txt"
run_wrk radsight-paced "$HOOK_URL" "$PACED_CONNS" "$PACED_DURATION" "$RATE" "$WORK/paced.txt" >>"$RESULTS"
run_wrk echo-paced "$ECHO_URL" "$PACED_CONNS" "$PACED_DURATION" "$RATE" "$WORK/paced.txt" >>"$RESULTS"

# The server's own count of answered hook calls, from its request log (actix Logger lines).
LOG_200="$(grep -Ec "POST /cds-services/$SERVICE( HTTP/1\.1)? 200 " "$WORK/radsight.log" || true)"
LOG_NON200="$(grep -E "POST /cds-services/$SERVICE( HTTP/1\.1)? [0-9]{3} " "$WORK/radsight.log" |
    grep -Evc "POST /cds-services/$SERVICE( HTTP/1\.1)? 200 " || true)"
cp "$WORK/radsight.log" "$OUT/radsight.log"

# ---------------------------------------------------------------- report
set +e
"$PY" - "$RESULTS" "$LOG_200" "$LOG_NON200" "$RATE" <<'PYREPORT' | tee "$OUT/summary.txt"
import sys
path, log200, lognon200, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
runs = {}
for line in open(path):
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    runs[fields["label"]] = fields
def f(label, key):
    return float(runs[label][key])
print()
print(f"{'run':<16}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'non2xx':>8}{'sockerr':>9}")
invalid = []
for label in ["radsight-max", "echo-max", "radsight-paced", "echo-paced"]:
    r = runs[label]
    sockerr = sum(int(r[k]) for k in ("connect_err", "read_err", "write_err", "timeouts"))
    print(f"{label:<16}{r['requests']:>10}{float(r['rps']):>10.1f}{float(r['p50_ms']):>9.2f}{float(r['p90_ms']):>9.2f}"
          f"{float(r['p99_ms']):>9.2f}{float(r['max_ms']):>9.2f}{r['non2xx']:>8}{sockerr:>9}")
    if int(r["non2xx"]) or sockerr or int(r["exhausted"]):
        invalid.append(f"{label}: non2xx={r['non2xx']} socket_errors={sockerr} exhausted={r['exhausted']}")
print()
print("CPU during each run, % of one core (the machine has 200%): server process, wrk, irq+softirq,")
print("everything else (kernel threads such as the ext4 flusher, and any other load on the box)")
print(f"{'run':<16}{'server%':>9}{'ms/req':>9}{'wrk%':>7}{'irq%':>6}{'other%':>8}{'load before/after':>19}")
for label in ["radsight-max", "echo-max", "radsight-paced", "echo-paced"]:
    r = runs[label]
    print(f"{label:<16}{r['server_cpu_pct']:>9}{float(r['server_cpu_ms_per_req']):>9.3f}{r['wrk_cpu_pct']:>7}"
          f"{r['irq_cpu_pct']:>6}{r['other_cpu_pct']:>8}{r['loadavg_before'] + ' / ' + r['loadavg_after']:>19}")
print()
tp = f("radsight-max", "rps") / f("echo-max", "rps")
print(f"throughput radsight/echo (max):  {tp:.3f}")
print(f"p50 radsight/echo (max):         {f('radsight-max', 'p50_ms') / f('echo-max', 'p50_ms'):.2f}x")
print(f"p99 radsight/echo (max):         {f('radsight-max', 'p99_ms') / f('echo-max', 'p99_ms'):.2f}x")
print(f"p50 radsight/echo (paced):       {f('radsight-paced', 'p50_ms') / f('echo-paced', 'p50_ms'):.2f}x")
print(f"p99 radsight/echo (paced):       {f('radsight-paced', 'p99_ms') / f('echo-paced', 'p99_ms'):.2f}x")
hook_requests = sum(int(runs[l]["requests"]) for l in ("radsight-max", "radsight-paced"))
print(f"radsight log: {log200} hook calls answered 200, {lognon200} not 200 "
      f"(incl. 1 sanity call and the warm-up; wrk counted {hook_requests} in the reported runs)")
print()
achieved = f("radsight-paced", "rps")
p99 = f("radsight-paced", "p99_ms")
t1 = p99 <= 5.0 and achieved >= 0.95 * rate
t2 = tp >= 0.5
print(f"target p99 <= 5 ms at {rate:.0f} req/s: {'MET' if t1 else 'MISSED'} (p99 {p99:.2f} ms at {achieved:.0f} req/s achieved)")
print(f"target >= 0.5 x echo throughput:   {'MET' if t2 else 'MISSED'} ({tp:.3f})")
if lognon200:
    invalid.append(f"radsight logged {lognon200} hook calls that were not 200")
if invalid:
    print("\nINVALID RUN:\n  " + "\n  ".join(invalid))
    sys.exit(1)
sys.exit(0 if (t1 and t2) else 3)
PYREPORT
rc=${PIPESTATUS[0]}
set -e
{
    echo
    echo "date: $(date)"
    echo "git: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src migrations Cargo.toml Cargo.lock || echo ' (+ uncommitted changes in src/)')"
    echo "nproc: $(nproc)"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "rustc: $(rustc --version)"
    echo "out: $OUT"
} | tee -a "$OUT/summary.txt"
case "$rc" in
    0) ;;
    3) log "valid run; a target was missed"; [ "${BENCH_ENFORCE:-0}" = 1 ] && exit 2 ;;
    *) die "the run is invalid (see above)" ;;
esac
exit 0
