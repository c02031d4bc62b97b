#!/usr/bin/env bash
# HL7 over MLLP: ORU^R01 messages per second, each waited for until its AA, for one radsight
# build or two side by side (interleaved rounds, so the shared machine's noise hits both alike).
#
#   bench/mllp.sh                                  # builds release, measures it
#   RADSIGHT_A=/tmp/radsight-old RADSIGHT_B=target/release/radsight bench/mllp.sh
#
# For each database (SQLite file, PostgreSQL database on $BENCH_PG), each build and each
# connection count in $CONNECTIONS: a fresh database, `radsight migrate`, `radsight serve` with no
# job workers (only ingestion is measured), then bench/mllp.py with $MESSAGES per connection.
# Every message names a new study: before its AA radsight commits the order, the study, the job,
# the control id and two audit entries. Prints one line per run and a summary of medians.
#
# Knobs: MESSAGES (300), CONNECTIONS ("1 4 8"), ROUNDS (2), DATABASES ("sqlite postgres"),
# BENCH_PG (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_BUILD=1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MESSAGES="${MESSAGES:-300}"
CONNECTIONS="${CONNECTIONS:-1 4 8}"
ROUNDS="${ROUNDS:-2}"
DATABASES="${DATABASES:-sqlite postgres}"
PG="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
HTTP_PORT=18083
HL7_PORT=18575

# shellcheck source=bench/common.sh
. "$REPO/bench/common.sh"
resolve_builds

WORK="$(mktemp -d /tmp/radsight-mllp-bench.XXXXXX)"
PID=""
# An `if`, not `[ -n "$PID" ] && …`: with nothing to stop, that list returns 1, and under `set -e`
# the exit trap that calls this then ended a successful run with status 1.
stop() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
cleanup() { local rc=$?; stop; rm -rf "$WORK"; exit "$rc"; }
trap cleanup EXIT
trap 'exit 130' INT TERM


# run BUILD DATABASE CONNECTIONS ROUND -> prints "BUILD DATABASE CONNS msg/s p50 p99"
run() {
    local build="$1" database="$2" conns="$3" round="$4" bin_var="RADSIGHT_$1" url dir
    dir="$WORK/$build-$database-$conns-$round"
    mkdir -p "$dir"
    case "$database" in
        sqlite) url="sqlite://$dir/radsight.db?mode=rwc" ;;
        postgres)
            local name="radsight_mllp_bench_${build,,}_${conns}_${round}"
            PGOPTIONS="-c client_min_messages=warning" psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
            url="$PG/$name" ;;
    esac
    local env_run=("${clean_env[@]}" DATABASE_URL="$url" RADSIGHT_SERVER__PORT="$HTTP_PORT"
        RADSIGHT_HL7__BIND="127.0.0.1:$HL7_PORT" RADSIGHT_JOBS__WORKERS=0 RADSIGHT_ANALYSIS__MODELS_DIR="$REPO/models")
    (cd "$dir" && "${env_run[@]}" "${!bin_var}" migrate) >/dev/null 2>&1 || die "migrate failed ($build, $database)"
    (cd "$dir" && exec "${env_run[@]}" "${!bin_var}" serve) >"$dir/serve.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" && break
        kill -0 "$PID" 2>/dev/null || { tail -5 "$dir/serve.log" >&2; die "radsight exited"; }
        sleep 0.2
    done
    local out
    out="$(python3 "$REPO/bench/mllp.py" --port "$HL7_PORT" --connections "$conns" --messages "$MESSAGES")" ||
        { echo "$out" >&2; die "a message was not acknowledged AA ($build, $database, $conns)"; }
    stop
    [ "$database" = postgres ] && PGOPTIONS="-c client_min_messages=warning" psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS radsight_mllp_bench_${build,,}_${conns}_${round}" >/dev/null
    local rate p50 p99
    rate="$(sed -n 's/.*: \([0-9]*\) msg\/s/\1/p' <<<"$out")"
    p50="$(sed -n 's/.*p50 \([0-9.]*\).*/\1/p' <<<"$out")"
    p99="$(sed -n 's/.*p99 \([0-9.]*\).*/\1/p' <<<"$out")"
    echo "$build $database $conns $rate $p50 $p99"
}

results="$WORK/results.txt"
for database in $DATABASES; do
    for conns in $CONNECTIONS; do
        for round in $(seq 1 "$ROUNDS"); do
            for build in "${builds[@]}"; do
                line="$(run "$build" "$database" "$conns" "$round")"
                log "$line"
                echo "$line" >>"$results"
            done
        done
    done
done

echo "build database connections msg/s(median) ack_p50_ms ack_p99_ms (runs)"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
keys = []
for r in rows:
    if tuple(r[:3]) not in keys:
        keys.append(tuple(r[:3]))
medians = {}
for k in keys:
    runs = [r for r in rows if tuple(r[:3]) == k]
    rate = statistics.median(float(r[3]) for r in runs)
    medians[k] = rate
    print(f"{k[0]} {k[1]} {k[2]} {rate:.0f} {statistics.median(float(r[4]) for r in runs):.1f} "
          f"{statistics.median(float(r[5]) for r in runs):.1f} ({', '.join(r[3] for r in runs)})")
for (b, d, c), rate in medians.items():
    if b == "B" and ("A", d, c) in medians:
        print(f"B/A {d} {c} connections: {rate / medians[('A', d, c)]:.2f}x")
PY
