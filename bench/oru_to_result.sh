#!/usr/bin/env bash
# From ORU to stored result for large radiographs, and the service's peak memory after them:
# one radsight build, or two side by side (interleaved per study).
#
#   bench/oru_to_result.sh                                   # builds release, measures it
#   RADSIGHT_A=/tmp/radsight-old RADSIGHT_B=target/release/radsight bench/oru_to_result.sh
#
# Starts its own Orthanc with DICOMweb (Debian's `orthanc orthanc-dicomweb`, installed if
# missing) on a temp directory, writes $STUDIES phantom chest radiographs of $SIZE² pixels with
# `radsight models phantoms` and stores them in Orthanc. For each build: a fresh SQLite database,
# `radsight serve` with one job worker reading that Orthanc, then one study at a time: send its
# ORU^R01 over MLLP, wait for the AA, and poll the database every 5 ms until its result is
# stored. Prints the ORU-to-stored time per study (AA received to result row visible), its
# median, and the serve process's peak RSS (VmHWM) after all studies.
#
# Knobs: SIZE (2048), STUDIES (6), BENCH_SKIP_BUILD=1, MODELS_DIR (the model registry, default
# the repository's models/; every model whose card applies to a chest DX runs on each study).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE="${SIZE:-2048}"
STUDIES="${STUDIES:-6}"
ORTHANC_PORT=18044
HTTP_PORT=18084
HL7_PORT=18576

# shellcheck source=bench/common.sh
. "$REPO/bench/common.sh"
resolve_builds
for p in orthanc orthanc-dicomweb; do
    dpkg -s "$p" >/dev/null 2>&1 || {
        log "installing $p"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p") >&2
    }
done

WORK="$(mktemp -d /tmp/radsight-oru-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the PACS
PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
mkdir -p "$WORK/orthanc"
cat >"$WORK/orthanc/config.json" <<JSON
{ "Name": "radsight-bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "HttpPort": $ORTHANC_PORT, "DicomServerEnabled": false, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true, "RegisteredUsers": {"radsight": "$PASSWORD"},
  "Plugins": ["$(dpkg -L orthanc-dicomweb | grep 'libOrthancDicomWeb.so$' | head -1)"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"} }
JSON
Orthanc "$WORK/orthanc/config.json" >"$WORK/orthanc.log" 2>&1 &
PIDS+=($!)
ORTHANC="http://127.0.0.1:$ORTHANC_PORT"
for _ in $(seq 1 100); do
    curl -sf -u "radsight:$PASSWORD" -o /dev/null "$ORTHANC/system" && break
    sleep 0.2
done
curl -sf -u "radsight:$PASSWORD" -o /dev/null "$ORTHANC/system" || { tail "$WORK/orthanc.log" >&2; die "Orthanc did not start"; }
echo -n "$PASSWORD" >"$WORK/pacs-password"

log "writing $STUDIES phantoms of ${SIZE}x${SIZE} into Orthanc"
"$RADSIGHT_A" models phantoms --out "$WORK/phantoms" --count "$STUDIES" --size "$SIZE" >/dev/null
: >"$WORK/studies.txt"
for f in "$WORK"/phantoms/*.dcm; do
    study_id="$(curl -sf -u "radsight:$PASSWORD" --data-binary "@$f" "$ORTHANC/instances" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ParentStudy"])')"
    curl -sf -u "radsight:$PASSWORD" "$ORTHANC/studies/$study_id" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["MainDicomTags"]["StudyInstanceUID"], s["PatientMainDicomTags"]["PatientID"])' >>"$WORK/studies.txt"
done
[ "$(wc -l <"$WORK/studies.txt")" -eq "$STUDIES" ] || die "expected $STUDIES studies in Orthanc"


# ---------------------------------------------------------------- the services
declare -A SERVE_PID
n=0
for b in "${builds[@]}"; do
    bin_var="RADSIGHT_$b"
    dir="$WORK/$b"
    mkdir -p "$dir"
    port_http=$((HTTP_PORT + n))
    port_hl7=$((HL7_PORT + n))
    n=$((n + 1))
    cat >"$dir/radsight.toml" <<TOML
[server]
port = $port_http

[database]
url = "sqlite://$dir/radsight.db?mode=rwc"

[hl7]
bind = "127.0.0.1:$port_hl7"

[jobs]
workers = 1
poll_interval_ms = 50

[analysis]
models_dir = "${MODELS_DIR:-$REPO/models}"

[dicomweb]
endpoints = ["$ORTHANC/dicom-web"]
default_endpoint = "$ORTHANC/dicom-web"

[[dicomweb.credentials]]
url = "$ORTHANC/dicom-web"
auth = "basic"
username = "radsight"
secret_file = "$WORK/pacs-password"
TOML
    (cd "$dir" && "${clean_env[@]}" "${!bin_var}" --config radsight.toml migrate) >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; die "migrate failed ($b)"; }
    (cd "$dir" && exec "${clean_env[@]}" "${!bin_var}" --config radsight.toml serve) >"$dir/serve.log" 2>&1 &
    SERVE_PID[$b]=$!
    PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port_http/readyz" && break
        kill -0 "${SERVE_PID[$b]}" 2>/dev/null || { tail -5 "$dir/serve.log" >&2; die "radsight ($b) exited"; }
        sleep 0.2
    done
    echo "$port_hl7" >"$dir/hl7_port"
done

# ---------------------------------------------------------------- the measurement
i=0
while read -r study patient; do
    i=$((i + 1))
    for b in "${builds[@]}"; do
        python3 - "$WORK/$b/radsight.db" "$(cat "$WORK/$b/hl7_port")" "$study" "$patient" "B$i$b" <<'PY' | sed "s/^/$b /" >>"$WORK/times.txt"
import socket, sqlite3, sys, time

db_path, port, study, patient, control = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
oru = "\r".join([
    f"MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261203120000||ORU^R01|{control}|P|2.5",
    f"PID|1||{patient}||Roe^Richard",
    f"OBR|1|PLC-{control}|FIL-{control}|36643-5^XR Chest 2V^LN||||||||||||||ACC-{control}||||||DX|F",
    f"OBX|1|ST|110180^Study Instance UID^DCM||{study}||||||F",
]) + "\r"
with socket.create_connection(("127.0.0.1", port)) as s:
    s.sendall(b"\x0b" + oru.encode() + b"\x1c\x0d")
    ack = b""
    while b"\x1c\x0d" not in ack:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed before the ACK")
        ack += chunk
t0 = time.perf_counter()
if b"MSA|AA|" not in ack:
    sys.exit(f"not AA: {ack!r}")
db = sqlite3.connect(db_path)
deadline = t0 + 120
while True:
    row = db.execute("SELECT status FROM analysis_results WHERE study_uid = ?", (study,)).fetchone()
    if row is not None:
        break
    if time.perf_counter() > deadline:
        sys.exit("no result within 120 s")
    time.sleep(0.005)
elapsed = (time.perf_counter() - t0) * 1000
# Where the time went, from the audit entries' timestamps: each step after the message's entry.
from datetime import datetime
steps = db.execute(
    "SELECT action, recorded_at FROM audit_entries WHERE entities LIKE ? ORDER BY seq", (f"%{study}%",)).fetchall()
def at(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")[:26] + "+00:00" if "." in ts else ts.replace("Z", "+00:00"))
start = at(steps[0][1])
breakdown = ",".join(f"{a}@{(at(t) - start).total_seconds() * 1000:.0f}" for a, t in steps[1:])
print(f"{study} {row[0]} {elapsed:.0f} {breakdown}")
PY
    done
done <"$WORK/studies.txt"

echo "build study status oru_to_stored_ms audit_steps(ms after the message entry)"
cat "$WORK/times.txt"
for b in "${builds[@]}"; do
    hwm="$(awk '/VmHWM/ {print $2}' "/proc/${SERVE_PID[$b]}/status")"
    median="$(awk -v b="$b" '$1 == b {print $4}' "$WORK/times.txt" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')"
    echo "RESULT build=$b studies=$STUDIES size=$SIZE median_oru_to_stored_ms=$median peak_rss_mib=$((hwm / 1024))"
done
