#!/usr/bin/env bash
# Runs every test tier: Rust #[test]s and #[pg_test]s (cargo pgrx test), the pg_regress contract suite,
# the client-level tests (pytest) against a cluster this script starts and stops, and a bounded
# fuzzing run of each cargo-fuzz target (TS_FUZZ_SECONDS each, default 30).
#
#   scripts/test.sh                      everything (what CI runs)
#   scripts/test.sh --fast               Rust #[test]s, #[pg_test]s and pg_regress only
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
cd "$TS_ROOT"

fast=0
pytest_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --fast) fast=1 ;;
        --pg-config) [ "$#" -ge 2 ] || die "--pg-config needs a path"; PG_CONFIG="$2"; PGBIN="$(dirname "$2")"; shift ;;
        --pg-config=*) PG_CONFIG="${1#*=}"; PGBIN="$(dirname "$PG_CONFIG")" ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see $0 --help)" ;;
    esac
    shift
done
[ "$fast" = 0 ] || [ "${#pytest_args[@]}" = 0 ] || die "--fast runs no pytest: drop the arguments after --"

stage "dependencies"
if [ "$fast" = 1 ]; then
    ensure_deps
else
    ensure_test_deps
    ensure_venv
fi

stage "private PostgreSQL $PG_MAJOR"
private_run_dir     # PG_CONFIG, PGBIN and PGRX_HOME now name the private copy in $TS_TMP

stage "tier 1+2: Rust unit tests and #[pg_test]s"
PGRX_DATA="$TS_TMP/pgrx-data"   # pgrx makes its cluster in a new directory under it
mkdir -p "$PGRX_DATA"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PGRX_DATA"
    cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$PGRX_DATA"
else
    cargo pgrx test "pg$PG_MAJOR" --pgdata "$PGRX_DATA"
fi

stage "build and install into the private copy"
install_extension

stage "start the test cluster"
CLUSTER="$TS_TMP/cluster"
PORT="${TS_TEST_PORT:-54339}"
TS_WORKER_DBS="ts_client,ts_client2" cluster_init "$CLUSTER" "$PORT"
cluster_start "$CLUSTER"

stage "tier 3: pg_regress contract suite"
PG_REGRESS="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress"
REGRESS_OUT="$TS_TMP/regress"
mkdir -p "$REGRESS_OUT"
tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
if ! PGUSER=postgres "$PG_REGRESS" --bindir="$PGBIN" --host=127.0.0.1 --port="$PORT" \
        --inputdir=tests/pg_regress --outputdir="$REGRESS_OUT" --dbname=ts_regress $tests; then
    cat "$REGRESS_OUT/regression.diffs" >&2 || true
    exit 1
fi

if [ "$fast" = 1 ]; then
    cluster_stop "$CLUSTER"
    log "fast run passed (no client tests, no fuzzing)"
    exit 0
fi

stage "tier 4: client-level tests against the cluster"
mkdir -p "$TS_TMP/throwaway" "$TS_TMP/pytest"
export TS_PGHOST=127.0.0.1 TS_PGPORT="$PORT" TS_CLUSTER_DIR="$CLUSTER" TS_PGBIN="$PGBIN" \
    TS_THROWAWAY_DIR="$TS_TMP/throwaway"
targets=(tests/client)   # unless the arguments name test files or directories themselves
for a in "${pytest_args[@]}"; do
    [[ "$a" != -* && -e "${a%%::*}" ]] && targets=()
done
"$TS_ROOT/.venv/bin/python" -m pytest -q --basetemp="$TS_TMP/pytest" "${targets[@]}" "${pytest_args[@]}"
cluster_stop "$CLUSTER"

stage "fuzzing"
log "fuzzing: each target for ${TS_FUZZ_SECONDS:-30}s (seeds in fuzz/corpus, found crashes kept in fuzz/regressions)"
# The fuzz targets are plain binaries (nothing is installed): they build against the original
# installation's headers through a PGRX_HOME of their own that stays put, so that the release build
# in fuzz/target is not redone on every run.
FUZZ_PGRX_HOME="$TS_ROOT/target/pgrx-fuzz-home"
mkdir -p "$FUZZ_PGRX_HOME"
fuzz_conf="$(printf '[configs]\npg%s = "%s"\n' "$PG_MAJOR" "$TS_ORIGINAL_PG_CONFIG")"
[ "$(cat "$FUZZ_PGRX_HOME/config.toml" 2>/dev/null)" = "$fuzz_conf" ] || echo "$fuzz_conf" > "$FUZZ_PGRX_HOME/config.toml"
fuzz_target() {   # fuzz_target TARGET LOG
    PGRX_HOME="$FUZZ_PGRX_HOME" RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$1" "target/fuzz-corpus/$1" "fuzz/corpus/$1" "fuzz/regressions/$1" \
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
