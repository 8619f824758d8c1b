#!/usr/bin/env bash
# Runs every test tier: Rust #[test]s and #[pg_test]s (cargo pgrx test), the pg_regress contract suite,
# the client-level tests (pytest) against a cluster this script starts and stops, and a bounded
# fuzzing run of each cargo-fuzz target (TS_FUZZ_SECONDS each, default 30).
#
#   scripts/test.sh                      everything (what CI runs)
#   scripts/test.sh --fast               the core crate's tests, #[pg_test]s and pg_regress only
#   scripts/test.sh --no-fuzz            every tier but fuzzing (for development)
#   scripts/test.sh --pg-config PATH     against another PostgreSQL installation (or set PG_CONFIG)
#   scripts/test.sh -- ARGS...           ARGS go to pytest (e.g. -- tests/client/test_worker.py -x)
#
# Nothing is installed into, or started from, the PostgreSQL installation itself: each run makes a
# private copy of it (and a PGRX_HOME for it) in a temporary directory /tmp/token_store-run.*,
# builds and installs there, keeps every cluster's data there, and removes it at the end
# (TS_KEEP_TMP=1 keeps it). Environment: TS_TEST_PORT (the client-test cluster, default 54339),
# TS_PGRX_BASE_TESTING_PORT (pgrx's #[pg_test] cluster listens on it plus the major version;
# default 32200), TS_FUZZ_SECONDS.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fast=0
fuzz=1
pytest_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --fast) fast=1 ;;
        --no-fuzz) fuzz=0 ;;
        --pg-config) [ "$#" -ge 2 ] || die "--pg-config needs a path"; PG_CONFIG="$2"; shift ;;
        --pg-config=*) PG_CONFIG="${1#*=}" ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see $0 --help)" ;;
    esac
    shift
done
[ "$fast" = 0 ] || [ "${#pytest_args[@]}" = 0 ] || die "--fast runs no pytest: drop the arguments after --"
[[ "$PG_CONFIG" = /* ]] || PG_CONFIG="$PWD/$PG_CONFIG"   # relative to where the script was started
PGBIN="$(dirname "$PG_CONFIG")"
cd "$TS_ROOT"

stage "dependencies"
if [ "$fast" = 1 ]; then
    ensure_deps
else
    ensure_test_deps
    ensure_venv
fi

stage "private PostgreSQL $PG_MAJOR"
private_run_dir     # PG_CONFIG, PGBIN and PGRX_HOME now name the private copy in $TS_TMP

stage "tier 1: the core crate's Rust tests (no PostgreSQL)"
cargo test -p token_store_core

stage "tier 2: #[pg_test]s"
run_pg_tests

stage "build and install into the private copy"
install_extension

stage "start the test cluster"
start_test_cluster

stage "tier 3: pg_regress contract suite"
run_regress

if [ "$fast" = 1 ]; then
    cluster_stop "$CLUSTER"
    log "fast run passed (no client tests, no fuzzing)"
    exit 0
fi

stage "tier 4: client-level tests against the cluster"
run_client_tests "${pytest_args[@]}"
cluster_stop "$CLUSTER"

if [ "$fuzz" = 0 ]; then
    log "passed (no fuzzing: --no-fuzz)"
    exit 0
fi

stage "fuzzing"
log "fuzzing: each target for ${TS_FUZZ_SECONDS:-30}s (seeds in fuzz/corpus, found crashes kept in fuzz/regressions)"
# The fuzz targets depend on the core crate only (no pgrx, no PostgreSQL).
fuzz_target() {   # fuzz_target TARGET LOG
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$1" "target/fuzz-corpus/$1" "fuzz/corpus/$1" "fuzz/regressions/$1" \
        -- -max_total_time="${TS_FUZZ_SECONDS:-30}" -rss_limit_mb=2048 -print_final_stats=1 >"$2" 2>&1
}
for target in $(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//'); do
    mkdir -p "target/fuzz-corpus/$target"
    flog="target/fuzz-$target.log"
    log "fuzz $target: build (the first one takes about 5-10 min on 2 cores), then ${TS_FUZZ_SECONDS:-30}s of fuzzing; output in $flog"
    if ! heartbeat "building or running fuzz target $target" fuzz_target "$target" "$flog"; then
        tail -60 "$flog" >&2
        echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$flog" | awk '{print $2}') executions, no crash"
done
echo "fuzz: all targets passed"
