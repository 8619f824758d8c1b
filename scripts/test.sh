#!/usr/bin/env bash
# Runs every test tier on every PostgreSQL we support: for PostgreSQL 15 (Debian's), 17 and 18 (built
# once from the upstream sources by scripts/build-pg.sh, cached in /var/cache/token_store), the Rust
# #[pg_test]s (cargo pgrx test), the pg_regress contract suite and the client-level tests (pytest)
# against a cluster of that version that this script starts and stops. Once, against the first
# version: the core crate's Rust tests and a bounded fuzzing run of each cargo-fuzz target
# (TS_FUZZ_SECONDS each, default 30). 17 and 18 build in the background, at low priority, while 15
# is tested.
#
#   scripts/test.sh                      everything on 15, 17 and 18 (what CI runs)
#   scripts/test.sh --pg 17              one version (repeat for more: --pg 15 --pg 18)
#   scripts/test.sh --fast               the core crate's tests, #[pg_test]s and pg_regress only
#   scripts/test.sh --no-fuzz            every tier but fuzzing (for development)
#   scripts/test.sh --pg-config PATH     against another PostgreSQL installation (or set PG_CONFIG)
#   scripts/test.sh -- ARGS...           ARGS go to pytest (e.g. -- tests/client/test_worker.py -x)
#
# --fast, --pg-config and pytest arguments run PostgreSQL 15 (or PG_CONFIG's) alone unless --pg names
# versions. A version whose source cannot be had (no ../shared/pg-src, no apt source) is reported as
# SKIPPED in the summary; with CI=true (set by CI services) or TS_MATRIX_STRICT=1 it fails the run.
#
# Nothing is installed into, or started from, a PostgreSQL installation itself: each version runs
# from a private copy of it (and a PGRX_HOME for it) in a temporary directory /tmp/token_store-run.*,
# built and installed there, with every cluster's data there, removed at the end (TS_KEEP_TMP=1
# keeps it). Environment: TS_TEST_PORT (the client-test cluster, default 54339),
# TS_PGRX_BASE_TESTING_PORT (pgrx's #[pg_test] cluster listens on it plus the major version;
# default 32200), TS_FUZZ_SECONDS.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fast=0
fuzz=1
custom=0
versions=()
pytest_args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --fast) fast=1 ;;
        --no-fuzz) fuzz=0 ;;
        --pg) [ "$#" -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || die "--pg needs a major version (15, 17, 18)"
              versions+=("$2"); shift ;;
        --pg=*) [[ "${1#*=}" =~ ^[0-9]+$ ]] || die "--pg needs a major version"; versions+=("${1#*=}") ;;
        --pg-config) [ "$#" -ge 2 ] || die "--pg-config needs a path"; PG_CONFIG="$2"; custom=1; shift ;;
        --pg-config=*) PG_CONFIG="${1#*=}"; custom=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,/^source/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see $0 --help)" ;;
    esac
    shift
done
[ "$fast" = 0 ] || [ "${#pytest_args[@]}" = 0 ] || die "--fast runs no pytest: drop the arguments after --"
[ "$custom" = 0 ] || [ "${#versions[@]}" = 0 ] || die "--pg-config and --pg exclude each other"
[ "$PG_CONFIG" = /usr/lib/postgresql/15/bin/pg_config ] || custom=1   # PG_CONFIG set by the caller
[[ "$PG_CONFIG" = /* ]] || PG_CONFIG="$PWD/$PG_CONFIG"   # relative to where the script was started
SYSTEM_PG_CONFIG="$PG_CONFIG"
if [ "${#versions[@]}" = 0 ]; then
    if [ "$custom" = 1 ] || [ "$fast" = 1 ] || [ "${#pytest_args[@]}" -gt 0 ]; then
        versions=(own)
    else
        versions=(15 17 18)
    fi
fi
cd "$TS_ROOT"

stage "dependencies"
if [ "$fast" = 1 ]; then
    ensure_deps
else
    ensure_test_deps
    ensure_venv
fi

# The versions built from source start building now, one after the other, niced, so that the
# first version's tests run meanwhile. Each writes BUILDS/<major>: "ok <pg_config>", "skip" or
# "fail" (the log in BUILDS/<major>.log).
BUILDS="$(mktemp -d /tmp/token_store-builds.XXXXXXXX)"
from_source=()
for v in "${versions[@]}"; do
    [ "$v" = own ] || [ "$v" = 15 ] || from_source+=("$v")
done
builder=
if [ "${#from_source[@]}" -gt 0 ]; then
    log "PostgreSQL ${from_source[*]}: building (or finding in the cache) in the background; logs in $BUILDS"
    (
        renice -n 10 -p "$BASHPID" >/dev/null 2>&1 || true   # the builds yield to the tests
        source "$TS_ROOT/scripts/build-pg.sh"
        for v in "${from_source[@]}"; do
            rc=0
            cfg="$(pg_from_source "$v" 2>"$BUILDS/$v.log")" || rc=$?
            case "$rc" in
                0) echo "ok $cfg" >"$BUILDS/$v" ;;
                3) echo skip >"$BUILDS/$v" ;;
                *) echo fail >"$BUILDS/$v" ;;
            esac
        done
    ) </dev/null >"$BUILDS/builder.out" 2>&1 &
    builder=$!
fi
kill_tree() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
    kill "$1" 2>/dev/null || true
}
# A run that ends early leaves no build running behind it.
stop_builder() {
    [ -z "$builder" ] || kill_tree "$builder"
    rm -rf "$BUILDS"
}
trap stop_builder EXIT

# pg_config_of MAJOR: the pg_config to test MAJOR with, waiting for its background build; status 3
# when it has no source.
pg_config_of() {
    local v="$1" state t=$SECONDS
    case "$v" in
        own) echo "$SYSTEM_PG_CONFIG"; return 0 ;;
        15) echo /usr/lib/postgresql/15/bin/pg_config; return 0 ;;
    esac
    while [ ! -s "$BUILDS/$v" ]; do
        if ! kill -0 "$builder" 2>/dev/null; then
            [ -s "$BUILDS/$v" ] && break
            echo "the background build of PostgreSQL $v ended without a result" >&2
            return 1
        fi
        sleep 5
        [ $(((SECONDS - t) % 120)) -lt 5 ] && log "    ... still waiting for the build of PostgreSQL $v ($(elapsed $((SECONDS - t))) so far)"
    done
    read -r state cfg_out <"$BUILDS/$v"
    sed 's/^/    /' "$BUILDS/$v.log" >&2
    case "$state" in
        ok) echo "$cfg_out" ;;
        skip) return 3 ;;
        *) return 1 ;;
    esac
}

# run_version MAJOR FIRST: the tiers against one version, in a subshell (private_run_dir's EXIT
# trap stops its clusters and removes its copy). FIRST=1 adds the core crate's tests.
run_version() (
    # errexit counts only where the caller did not test the status (no `||`, `if`): see the loop
    set -e
    local v="$1" first="$2" cfg
    trap - EXIT
    TS_STAGES=()
    stage "PostgreSQL $v: its build (waited for, or from the cache)"
    cfg="$(pg_config_of "$v")" || exit $?
    PG_CONFIG="$cfg"
    PGBIN="$(dirname "$PG_CONFIG")"
    ensure_deps
    [ "$v" = own ] || [ "$PG_MAJOR" = "$v" ] || die "$PG_CONFIG is PostgreSQL $PG_MAJOR, not $v"

    stage "pg$PG_MAJOR: private PostgreSQL"
    private_run_dir     # PG_CONFIG, PGBIN and PGRX_HOME now name the private copy in $TS_TMP

    if [ "$first" = 1 ]; then
        stage "tier 1: the core crate's Rust tests (no PostgreSQL; the same on every version)"
        cargo test -p token_store_core
    fi

    stage "pg$PG_MAJOR tier 2: #[pg_test]s"
    run_pg_tests

    stage "pg$PG_MAJOR: build and install into the private copy"
    install_extension

    stage "pg$PG_MAJOR: start the test cluster"
    start_test_cluster

    stage "pg$PG_MAJOR tier 3: pg_regress contract suite"
    run_regress

    if [ "$fast" = 0 ]; then
        stage "pg$PG_MAJOR tier 4: client-level tests against the cluster"
        run_client_tests "${pytest_args[@]}"
    fi
    cluster_stop "$CLUSTER"
    log "PostgreSQL $PG_MAJOR: every tier passed"
)

fuzz_all() {
    log "fuzzing: each target for ${TS_FUZZ_SECONDS:-30}s (seeds in fuzz/corpus, found crashes kept in fuzz/regressions)"
    # The fuzz targets depend on the core crate only (no pgrx, no PostgreSQL).
    fuzz_target() {   # fuzz_target TARGET LOG
        RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$1" "target/fuzz-corpus/$1" "fuzz/corpus/$1" "fuzz/regressions/$1" \
            -- -max_total_time="${TS_FUZZ_SECONDS:-30}" -rss_limit_mb=2048 -print_final_stats=1 >"$2" 2>&1
    }
    local target flog
    for target in $(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//'); do
        mkdir -p "target/fuzz-corpus/$target"
        flog="target/fuzz-$target.log"
        log "fuzz $target: build (the first one takes about 5-10 min on 2 cores), then ${TS_FUZZ_SECONDS:-30}s of fuzzing; output in $flog"
        if ! heartbeat "building or running fuzz target $target" fuzz_target "$target" "$flog"; then
            tail -60 "$flog" >&2
            echo "fuzz target $target failed; the crashing input is under fuzz/artifacts/$target" >&2
            return 1
        fi
        echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$flog" | awk '{print $2}') executions, no crash"
    done
    echo "fuzz: all targets passed"
}

stage_end
status=0
results=()
first=1
for v in "${versions[@]}"; do
    name="PostgreSQL $v"
    [ "$v" = own ] && name="PostgreSQL at $SYSTEM_PG_CONFIG"
    t=$SECONDS
    # not `run_version || rc=$?`: inside a tested command bash ignores errexit, and a failing tier
    # would pass unnoticed
    set +e
    run_version "$v" "$first"
    rc=$?
    set -e
    case "$rc" in
        0) results+=("$name: passed ($((SECONDS - t)) s)") ;;
        3) if [ "${CI:-}" = true ] || [ "${TS_MATRIX_STRICT:-0}" = 1 ]; then
               # CI's matrix may not shrink unnoticed: a version it cannot build fails the run
               results+=("$name: FAILED, no source (the reason is above; CI=true or TS_MATRIX_STRICT=1 allows no skip)")
               status=1
           else
               results+=("$name: SKIPPED, no source (the reason is above): this run did not test it")
           fi ;;
        *) results+=("$name: FAILED after $((SECONDS - t)) s (status $rc)"); status=1 ;;
    esac
    TS_STAGES+=("$name: $((SECONDS - t)) s")
    if [ "$first" = 1 ] && [ "$status" = 0 ] && [ "$fast" = 0 ] && [ "$fuzz" = 1 ]; then
        t=$SECONDS
        stage "fuzzing"
        fuzz_all || { results+=("fuzzing: FAILED"); status=1; }
        stage_end
    fi
    first=0
    # a failure stops the run: the next versions would only repeat it, later
    [ "$status" = 0 ] || break
done
printf '\033[1m==> results\033[0m\n' >&2
printf '  %s\n' "${results[@]}" >&2
stage_report
[ "$status" = 0 ] && log "passed"
exit "$status"
