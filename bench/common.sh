# Shared by the side-by-side bench scripts (sourced, not run): logging, the builds to compare,
# and an environment without the caller's RADSIGHT_* and DATABASE_URL.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Sets `builds` to (A) or (A B) and RADSIGHT_A / RADSIGHT_B to absolute paths of the binaries:
# RADSIGHT_A defaults to a release build of this checkout (built unless BENCH_SKIP_BUILD=1).
resolve_builds() {
    if [ -z "${RADSIGHT_A:-}" ]; then
        if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
            log "building radsight (release)"
            (cd "$REPO" && cargo build --release --bin radsight) >&2
        fi
        RADSIGHT_A="${CARGO_TARGET_DIR:-$REPO/target}/release/radsight"
    fi
    builds=(A)
    [ -n "${RADSIGHT_B:-}" ] && builds=(A B)
    local b bin_var
    for b in "${builds[@]}"; do
        bin_var="RADSIGHT_$b"
        [ -x "${!bin_var}" ] || die "${!bin_var} is not an executable"
        printf -v "$bin_var" '%s' "$(realpath "${!bin_var}")"
    done
}

# radsight reads RADSIGHT_* and DATABASE_URL from the environment: `"${clean_env[@]}" cmd` runs
# cmd without any of them.
clean_env=(env -u DATABASE_URL)
while IFS='=' read -r name _; do
    case "$name" in RADSIGHT_*) clean_env+=(-u "$name") ;; esac
done < <(env)
