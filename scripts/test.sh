#!/usr/bin/env bash
# Runs every test tier: Rust #[test]s and #[pg_test]s (cargo pgrx test), the pg_regress contract suite,
# the client-level tests (pytest) against a cluster this script starts and stops, and a bounded
# fuzzing run of each cargo-fuzz target (TS_FUZZ_SECONDS each, default 30).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"
ensure_test_deps
ensure_venv

log "tier 1+2: Rust unit tests and #[pg_test]s"
PGRX_DATA=/tmp/token_store-pgrx-test-data
rm -rf "$PGRX_DATA"   # pgrx issue #1671: it must not exist
if [ "$(id -u)" = 0 ]; then
    cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA"
else
    cargo pgrx test pg15
fi

install_extension

CLUSTER="$TS_ROOT/target/test-cluster"
PORT="${TS_TEST_PORT:-54339}"
cluster_stop "$CLUSTER" 2>/dev/null || true
rm -rf "$CLUSTER"
TS_WORKER_DBS="ts_client,ts_client2" cluster_init "$CLUSTER" "$PORT"
cluster_start "$CLUSTER"
trap 'cluster_stop "$CLUSTER"' EXIT

log "tier 3: pg_regress contract suite"
PG_REGRESS="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress"
rm -rf target/regress && mkdir -p target/regress
tests=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
if ! PGUSER=postgres "$PG_REGRESS" --host=127.0.0.1 --port="$PORT" \
        --inputdir=tests/pg_regress --outputdir=target/regress --dbname=ts_regress $tests; then
    cat target/regress/regression.diffs >&2 || true
    exit 1
fi

log "tier 4: client-level tests against the cluster"
export TS_PGHOST=127.0.0.1 TS_PGPORT="$PORT" TS_CLUSTER_DIR="$CLUSTER" TS_PGBIN="$PGBIN"
"$TS_ROOT/.venv/bin/python" -m pytest -q tests/client "$@"
cluster_stop "$CLUSTER"

log "fuzzing: each target for ${TS_FUZZ_SECONDS:-30}s (seeds in fuzz/corpus, found crashes kept in fuzz/regressions)"
for target in $(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//'); do
    mkdir -p "target/fuzz-corpus/$target"
    flog="target/fuzz-$target.log"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "target/fuzz-corpus/$target" "fuzz/corpus/$target" \
            "fuzz/regressions/$target" -- -max_total_time="${TS_FUZZ_SECONDS:-30}" -rss_limit_mb=2048 \
            -print_final_stats=1 >"$flog" 2>&1; then
        tail -60 "$flog" >&2
        echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$flog" | awk '{print $2}') executions, no crash"
done
echo "fuzz: all targets passed"
