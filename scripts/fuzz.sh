#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while: radsight's (fuzz/) and radsight-dicom's
# `decode` (crates/dicom/fuzz/). Each target starts from its committed corpus (and its
# regression inputs), read-only: new inputs go to a temporary directory that is removed at the
# end, so the tree is left as it was. A crash is saved under the crate's artifacts/<target>/
# (git-ignored) and makes the script exit non-zero after the other targets have run.
#
#   scripts/fuzz.sh            # 30 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#   scripts/fuzz.sh 30 mllp    # only these targets
#
# Needs the nightly toolchain and cargo-fuzz; installs them when missing. Honours
# CARGO_TARGET_DIR. On a shared machine run it as `nice -n 19 scripts/fuzz.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds="${1:-30}"
shift || true
only=("$@")

command -v rustup >/dev/null || { echo "rustup is needed" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

work=$(mktemp -d "${TMPDIR:-/tmp}/radsight-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# crate directory, then its targets
crates=(
  "fuzz:hl7_message mllp multipart cds_hooks_request fhir client_jwt"
  "crates/dicom/fuzz:decode"
)

failed=()
for entry in "${crates[@]}"; do
  dir="${entry%%:*}"
  targets=()
  for t in ${entry#*:}; do
    if [ "${#only[@]}" -eq 0 ] || [[ " ${only[*]} " == *" $t "* ]]; then targets+=("$t"); fi
  done
  [ "${#targets[@]}" -gt 0 ] || continue
  (cd "$dir" && cargo +nightly fuzz build)
  for t in "${targets[@]}"; do
    seeds=("$root/$dir/corpus/$t")
    # Regression inputs seed the run too: fuzz/regressions/<target>/, crates/dicom/fuzz/regressions/.
    if [ -d "$root/$dir/regressions/$t" ]; then
      seeds+=("$root/$dir/regressions/$t")
    elif [ "$dir" = crates/dicom/fuzz ]; then
      seeds+=("$root/$dir/regressions")
    fi
    mkdir -p "$work/$t" "$root/$dir/artifacts/$t"
    echo "== $t ($dir): ${seconds}s"
    rc=0
    (cd "$dir" && cargo +nightly fuzz run "$t" "$work/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$root/$dir/artifacts/$t/") \
      >"$work/$t.log" 2>&1 || rc=$?
    # libFuzzer's last status line (runs, cov, ft, corpus), or what went wrong.
    grep -E '^#[0-9]+[[:space:]]' "$work/$t.log" | tail -n1 || true
    if [ "$rc" -ne 0 ]; then
      grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "$work/$t.log" | head -n 20 || true
      failed+=("$t")
    fi
  done
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed (crash, leak, timeout or build error): ${failed[*]}; inputs are in the artifacts/ directories" >&2
  exit 1
fi
echo "no crashes"
