#!/usr/bin/env bash
# The benchmark suite (bench/): token_store against a PL/pgSQL + pgcrypto baseline and against the
# floor of its own crate calls, on a private cluster this script starts and stops. Prints a table
# and writes bench/results.json and bench/results.svg. About 5 minutes on 2 cores, plus the
# release build (fat LTO, a few minutes) when the sources changed.
#
#   scripts/bench.sh                 the whole suite
#   scripts/bench.sh --profile       also perf-record the HS256 verify path (bench/profile.txt)
#   scripts/bench.sh --n 20000 ...   any option of bench/run.py (see bench/run.py --help)
#
# Environment: TS_BENCH_PORT (default 54350); TS_BENCH_NO_BUILD=1 reuses the release build already
# in target/ts-package-release instead of building it.
#
# Like scripts/test.sh, it installs nothing into the system PostgreSQL: the build goes into a private
# copy of it in a per-run temporary directory (/tmp/token_store-run.*), which also holds the cluster
# and is removed at the end (TS_KEEP_TMP=1 keeps it).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"

PORT="${TS_BENCH_PORT:-54350}"

ensure_test_deps
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/pgcrypto.control" ]; then
    log "installing postgresql-contrib (pgcrypto, for the baseline)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib >/dev/null
fi
if [[ " $* " == *" --profile "* ]] && ! command -v perf >/dev/null; then
    log "installing linux-perf (for --profile)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    log "installing redis-server and redis-tools (the per-request comparison with Redis EXISTS)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
ensure_venv
if ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
    log "installing the benchmark's Python packages (bench/requirements.txt)"
    .venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
fi

private_run_dir     # PG_CONFIG, PGBIN and PGRX_HOME now name a private copy in $TS_TMP
if [ "${TS_BENCH_NO_BUILD:-0}" != 1 ]; then
    install_extension --release
else
    install_extension --release --no-build
fi
[ -f target/release/libtoken_store.so ] || { echo "no release build in target/release" >&2; exit 1; }

log "building the floor (bench/floor, release)"
cargo build -q --release --manifest-path bench/floor/Cargo.toml --target-dir target/bench-floor

CLUSTER="$TS_TMP/bench-cluster"
log "starting a fresh benchmark cluster in $CLUSTER (port $PORT)"
cluster_init "$CLUSTER" "$PORT"
# The cluster loads its own copy of this build (dynamic_library_path), so another install of
# token_store.so during the run (a debug build, say) cannot change what is measured.
mkdir -p "$CLUSTER/lib"
install -m 755 target/release/libtoken_store.so "$CLUSTER/lib/token_store.so"
as_pg sh -c "cat >> '$CLUSTER/data/postgresql.conf'" <<CONF
# benchmark settings (scripts/bench.sh)
dynamic_library_path = '$CLUSTER/lib:\$libdir'
token_store.purge_interval = 0
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
jit = off
max_parallel_workers_per_gather = 0
autovacuum = off
CONF
cluster_start "$CLUSTER"   # stopped by the EXIT trap of private_run_dir

log "running the suite"
.venv/bin/python bench/run.py --host 127.0.0.1 --port "$PORT" --pgbin "$PGBIN" \
    --floor-bin target/bench-floor/release/token_store_floor \
    --lib "$CLUSTER/lib/token_store.so" "$@"
