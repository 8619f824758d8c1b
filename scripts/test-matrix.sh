#!/usr/bin/env bash
# The version matrix: for each PostgreSQL major (default 15 17 18), the Rust tests and #[pg_test]s
# (cargo pgrx test pgNN), the pg_regress suite and the client tests (pytest) against a cluster of
# that version; no fuzzing (scripts/test.sh fuzzes once, against the default version):
#
#   scripts/test-matrix.sh                      15, 17 and 18
#   scripts/test-matrix.sh 17 18 -- -k "not test_package" tests/client/test_x.py
#                                               the versions before `--`; pytest arguments after it
#
# 15 is Debian's /usr/lib/postgresql/15; 17 and 18 are built from source once by
# scripts/build-pg.sh (cached in /var/cache/token_store). As in scripts/test.sh, each version runs
# from a private copy in a temporary directory of its own (scripts/lib.sh's private_run_dir), which
# is removed at the end: neither the system's PostgreSQL nor the cache is ever written to.
# A version with no source is reported as skipped and fails the run only with TS_MATRIX_STRICT=1.
# Environment as scripts/test.sh: TS_TEST_PORT, TS_PGRX_BASE_TESTING_PORT, TS_KEEP_TMP.
# Prints each version's stage times at its end, and the results of all at the very end.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

versions=()
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *[!0-9]*) echo "not a PostgreSQL major version: $1 (see $0 --help)" >&2; exit 2 ;;
    esac
    versions+=("$1")
    shift
done
[ "${1:-}" = -- ] && shift
[ "${#versions[@]}" -gt 0 ] || versions=(15 17 18)

# run_version MAJOR PYTEST_ARGS...: every tier but fuzzing against one version. A subshell, since
# scripts/lib.sh reads PG_CONFIG when sourced and private_run_dir's EXIT trap cleans up per version.
# Exits 3 when the version has no source.
run_version() (
    major="$1"
    shift
    start=$SECONDS
    if [ "$major" = 15 ]; then
        cfg=/usr/lib/postgresql/15/bin/pg_config   # ensure_deps installs it where missing
    else
        source "$ROOT/scripts/build-pg.sh"
        rc=0
        cfg="$(pg_from_source "$major")" || rc=$?
        [ "$rc" = 0 ] || exit "$rc"
    fi
    export PG_CONFIG="$cfg"
    source "$ROOT/scripts/lib.sh"
    TS_STAGES=("stage PostgreSQL $major (build, or the cache): $((SECONDS - start)) s")
    stage "dependencies"
    ensure_test_deps
    ensure_venv
    [ "$PG_MAJOR" = "$major" ] || die "$PG_CONFIG is PostgreSQL $PG_MAJOR, not $major"

    stage "private PostgreSQL $PG_MAJOR"
    private_run_dir

    stage "pg$major tier 2: #[pg_test]s (the core crate's tests do not depend on the version: scripts/test.sh runs them)"
    run_pg_tests

    stage "pg$major: build and install into the private copy"
    install_extension

    stage "pg$major tier 3: pg_regress contract suite"
    start_test_cluster
    run_regress

    stage "pg$major tier 4: client-level tests"
    run_client_tests "$@"
    cluster_stop "$CLUSTER"
    log "PostgreSQL $major: every tier passed; its stage times:"
)

status=0
results=()
for v in "${versions[@]}"; do
    printf '\033[1m==> [matrix] PostgreSQL %s\033[0m\n' "$v" >&2
    rc=0
    t=$SECONDS
    run_version "$v" "$@" || rc=$?
    case "$rc" in
        0) results+=("PostgreSQL $v: passed ($((SECONDS - t)) s)") ;;
        3) results+=("PostgreSQL $v: SKIPPED, no source (see its SKIP line above)")
           [ "${TS_MATRIX_STRICT:-0}" = 1 ] && status=1 ;;
        *) results+=("PostgreSQL $v: FAILED after $((SECONDS - t)) s (status $rc)"); status=1 ;;
    esac
done
printf '\033[1m==> [matrix] results\033[0m\n' >&2
printf '  %s\n' "${results[@]}" >&2
exit "$status"
