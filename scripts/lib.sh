#!/usr/bin/env bash
# Shared helpers for demo.sh, test.sh, bench.sh and package.sh: dependencies, build, a private copy
# of PostgreSQL for the tests, local clusters.
set -euo pipefail

TS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The PostgreSQL to build for: Debian 12's PostgreSQL 15 unless PG_CONFIG names another installation.
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
[[ "$PG_CONFIG" = /* ]] || PG_CONFIG="$PWD/$PG_CONFIG"
PGBIN="$(dirname "$PG_CONFIG")"
PGRX_VERSION=0.18.1

log() { printf '\033[1m==> [%s] %s\033[0m\n' "$(elapsed $SECONDS)" "$*" >&2; }   # [min:sec since start]
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Run a PostgreSQL server binary as a user it accepts (root is refused). As postgres it runs from /:
# PostgreSQL's programs return to their working directory, which postgres may not be allowed into
# (a checkout under /root), and say so. Every path given to them is absolute.
as_pg() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# heartbeat WHAT CMD...: run CMD, printing a line every minute while it runs, so that a long silent
# step (apt, a first build) does not look hung.
heartbeat() {
    local what="$1" start=$SECONDS rc=0 hb
    shift
    (
        trap 'kill $s 2>/dev/null; exit 0' TERM
        while :; do
            sleep 60 & s=$!
            wait $s
            printf '    ... still %s (%s min so far)\n' "$what" "$(elapsed $((SECONDS - start)))" >&2
        done
    ) &
    hb=$!
    "$@" || rc=$?
    kill "$hb" 2>/dev/null || true
    wait "$hb" 2>/dev/null || true
    return $rc
}

# Stage timer: `stage NAME` closes the running stage and opens NAME; `stage_report` prints
# `stage NAME: N s` for each, and the total.
TS_STAGES=()
TS_STAGE=
TS_STAGE_START=0
stage() {
    stage_end
    TS_STAGE="$1"
    TS_STAGE_START=$SECONDS
    log "$1"
}
stage_end() {
    [ -n "$TS_STAGE" ] || return 0
    TS_STAGES+=("stage $TS_STAGE: $((SECONDS - TS_STAGE_START)) s")
    TS_STAGE=
}
stage_report() {
    stage_end
    [ "${#TS_STAGES[@]}" -gt 0 ] || return 0
    printf '%s\n' "${TS_STAGES[@]}" "total: $SECONDS s" >&2
}

apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing system packages: $* (apt; usually 1-5 min)"
    heartbeat "installing system packages" as_root apt-get update -qq
    heartbeat "installing system packages" \
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The major version of the PostgreSQL that pg_config $1 (default $PG_CONFIG) belongs to.
pg_major() {
    "${1:-$PG_CONFIG}" --version | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p'
}

# The major version in a Debian PostgreSQL path (/usr/lib/postgresql/N/bin/pg_config), or nothing:
# only then are PostgreSQL's Debian packages the way to install it.
debian_pg_major() {
    [[ "$PG_CONFIG" =~ ^/usr/lib/postgresql/([0-9]+)/bin/pg_config$ ]] && echo "${BASH_REMATCH[1]}" || true
}

# What building and running needs, installed where missing (Debian 12): PostgreSQL and its headers
# (when $PG_CONFIG is a Debian path), a C compiler, clang for bindgen, pkg-config and the OpenSSL
# headers (cargo-pgrx's openssl-sys), sudo, cargo-pgrx, and the postgres user. Sets PG_MAJOR.
ensure_deps() {
    local need=() dm
    dm="$(debian_pg_major)"
    if [ -n "$dm" ]; then
        [ -x "$PG_CONFIG" ] || need+=("postgresql-$dm")
        [ -f "/usr/include/postgresql/$dm/server/postgres.h" ] || need+=("postgresql-server-dev-$dm")
        [ -x "/usr/lib/postgresql/$dm/bin/psql" ] || need+=("postgresql-client-$dm")
    fi
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    command -v clang >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    { command -v pkg-config >/dev/null && pkg-config --exists openssl; } || need+=(libssl-dev)
    command -v sudo >/dev/null || need+=(sudo)
    apt_install "${need[@]}"
    [ -x "$PG_CONFIG" ] || die "no pg_config at $PG_CONFIG (set PG_CONFIG or --pg-config to your PostgreSQL's)"
    PG_MAJOR="$(pg_major)"
    [ -n "$PG_MAJOR" ] || die "cannot read the PostgreSQL version from $PG_CONFIG --version"
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        log "installing cargo-pgrx $PGRX_VERSION (once; compiling it takes 5-15 min on 2 cores, depending on their load)"
        heartbeat "compiling cargo-pgrx" cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    id postgres >/dev/null 2>&1 || as_root useradd --system --home /var/lib/postgresql postgres
}

# `cargo pgrx init` against $PG_CONFIG in the user's PGRX_HOME (~/.pgrx), where the demo and
# package.sh build. The tests use a PGRX_HOME of their own (use_private_pg).
ensure_pgrx_init() {
    if ! grep -q "^pg$PG_MAJOR *=" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
        log "cargo pgrx init against PostgreSQL $PG_MAJOR ($PG_CONFIG)"
        cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG"
    fi
}

# What the tests need on top: Python venv, pgbench (contrib), pgbouncer (docs/pgbouncer.md),
# Node.js and npm (examples/node), cargo-fuzz and a C++ compiler for its libFuzzer.
ensure_test_deps() {
    ensure_deps
    local need=()
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    command -v c++ >/dev/null || need+=(g++)
    [ -x "$PGBIN/pgbench" ] || need+=(postgresql-contrib)
    [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
    apt_install "${need[@]}"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz (once; about 2-4 min)"
        heartbeat "compiling cargo-fuzz" cargo install cargo-fuzz --locked
    fi
}

# The longest directory that contains every path given.
common_dir() {
    local c="$1" p
    shift
    for p in "$@"; do
        while [ "$c" != / ] && [ "$p" != "$c" ] && [ "${p#"$c"/}" = "$p" ]; do c="$(dirname "$c")"; done
    done
    echo "$c"
}

# use_private_pg DIR: a private, relocatable copy of the PostgreSQL installation that $PG_CONFIG
# belongs to, in DIR (which must exist, reachable by postgres), and a PGRX_HOME for it; everything
# the tests build, install and run then stays in DIR. PostgreSQL's programs compute their library
# and share directories relative to their own location, so the copy mirrors the original paths
# under DIR/pg: its bin, pkglib and share directories are copied, the headers are symlinked.
# Exports PG_CONFIG and PGBIN (the copy's), TS_ORIGINAL_PG_CONFIG, TS_PRIVATE_PG (DIR/pg), PGRX_HOME
# (DIR/pgrx-home: pg$PG_MAJOR is the copy, base_testing_port is $TS_PGRX_BASE_TESTING_PORT,
# default 32200).
use_private_pg() {
    local dir="$1" orig="$PG_CONFIG" root="$1/pg" bindir pkglibdir sharedir incdir incserver common d
    bindir="$("$orig" --bindir)"
    pkglibdir="$("$orig" --pkglibdir)"
    sharedir="$("$orig" --sharedir)"
    incdir="$("$orig" --includedir)"
    incserver="$("$orig" --includedir-server)"
    log "private copy of PostgreSQL $PG_MAJOR ($(dirname "$bindir")) in $root"
    for d in "$bindir" "$pkglibdir" "$sharedir"; do
        # bin and pkglib may be one directory, or one inside the other
        [ -e "$root$d" ] && continue
        mkdir -p "$root$(dirname "$d")"
        cp -a "$d" "$root$d"
    done
    # the headers, read only: a symlink (the server headers too, when they live elsewhere)
    for d in "$incdir" "$incserver"; do
        [ -d "$d" ] && [ ! -e "$root$d" ] || continue
        mkdir -p "$root$(dirname "$d")"
        ln -s "$d" "$root$d"
    done
    PG_CONFIG="$root$bindir/pg_config"
    PGBIN="$root$bindir"
    [ "$("$PG_CONFIG" --pkglibdir)" = "$root$pkglibdir" ] && [ "$("$PG_CONFIG" --sharedir)" = "$root$sharedir" ] ||
        die "the copy of $orig does not relocate (its --pkglibdir is $("$PG_CONFIG" --pkglibdir)); it cannot be tested in isolation"
    common="$(common_dir "$bindir" "$pkglibdir" "$sharedir")"
    [ "$common" != / ] || die "PostgreSQL's bin, lib and share directories share no prefix; it cannot be relocated"
    export PG_CONFIG PGBIN TS_ORIGINAL_PG_CONFIG="$orig" TS_PRIVATE_PG="$root"
    export PGRX_HOME="$dir/pgrx-home"
    mkdir -p "$PGRX_HOME"
    printf 'base_testing_port = %s\n[configs]\npg%s = "%s"\n' "${TS_PGRX_BASE_TESTING_PORT:-32200}" \
        "$PG_MAJOR" "$PG_CONFIG" > "$PGRX_HOME/config.toml"
}

# install_extension [--debug|--release] [--no-build]: build token_store (default --debug, quicker)
# with `cargo pgrx package` into target/ts-package-<mode>/ and install it into the PostgreSQL that
# $PG_CONFIG names: the system's for the demo, the private copy for tests and benchmarks.
# --no-build installs what the last build left there. Files are replaced with install(1), which
# writes a new inode: a running server that has the old library mapped (it is preloaded) keeps
# working instead of crashing on a rewritten file.
install_extension() {
    local mode=--debug build=1 out libdir sharedir so sudo=()
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --debug|--release) mode="$1" ;;
            --no-build) build=0 ;;
            *) die "install_extension: unknown argument $1" ;;
        esac
        shift
    done
    out="$TS_ROOT/target/ts-package-${mode#--}"
    libdir="$("$PG_CONFIG" --pkglibdir)"
    sharedir="$("$PG_CONFIG" --sharedir)/extension"
    if [ "$build" = 1 ]; then
        log "building token_store ($mode; the first build takes about 5-10 min)"
        rm -rf "$out"
        (cd "$TS_ROOT" && cargo pgrx package --pg-config "$PG_CONFIG" $( [ "$mode" = --release ] || echo --debug ) --out-dir "$out" >/dev/null)
    fi
    # the package mirrors the paths of the pg_config it was made for; a --no-build install may be
    # into another (private) copy, so the files are found by name
    so="$(find "$out" -name token_store.so 2>/dev/null | head -1)"
    [ -n "$so" ] || die "no token_store.so under $out: build first (without --no-build)"
    log "installing token_store into $libdir and $sharedir"
    [ -w "$libdir" ] && [ -w "$sharedir" ] || sudo=(sudo)   # only a non-root user lacks the right
    "${sudo[@]}" install -m 755 "$so" "$libdir/"
    find "$out" -path '*/extension/token_store*' -type f -exec "${sudo[@]}" install -m 644 -t "$sharedir/" {} +
}

# A Python virtualenv with the client-test packages.
ensure_venv() {
    local venv="$TS_ROOT/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating Python venv"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c 'import jwt, psycopg, pytest, cryptography, jwcrypto' 2>/dev/null; then
        log "installing Python test packages (pip; about 1 min)"
        heartbeat "installing Python packages" \
            "$venv/bin/pip" install -q --disable-pip-version-check -r "$TS_ROOT/tests/client/requirements.txt"
    fi
}

# A fresh random 32-byte key, hex.
new_key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# True when the server's user can reach (traverse to) directory $1.
postgres_reaches() {
    [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$1" 2>/dev/null
}

# cluster_init DIR PORT: initdb a cluster owned by postgres with token_store preloaded.
# The encryption key goes into DIR/token_store_key.conf, included from postgresql.conf.
# DIR's parent must be reachable by postgres: no permission of any directory above it is changed.
cluster_init() {
    local dir="$1" port="$2"
    mkdir -p "$dir"
    postgres_reaches "$(dirname "$dir")" ||
        die "the postgres user cannot reach $(dirname "$dir") (a parent directory is private); use a directory it can reach"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_pg sh -c "umask 077; printf \"token_store.encryption_key = '%s'\n\" $(new_key) > '$dir/data/token_store_key.conf'"
    as_pg sh -c "cat >> '$dir/data/postgresql.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'token_store'
token_store.databases = '${TS_WORKER_DBS:-postgres}'
log_line_prefix = '%m [%p] %q%a '
wal_level = replica
max_wal_senders = 5
hot_standby = on
include 'token_store_key.conf'
CONF
}

cluster_start() {
    local dir="$1"
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
    local dir="$1"
    [ -f "$dir/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
}

# private_run_dir: a per-run temporary directory TS_TMP (under /tmp, reachable by postgres) holding a
# private copy of PostgreSQL (use_private_pg), the clusters and everything else the run writes
# outside target/. An EXIT trap stops every server started from it and removes it, unless
# TS_KEEP_TMP=1.
private_run_dir() {
    TS_TMP="$(mktemp -d /tmp/token_store-run.XXXXXXXX)"
    export TS_TMP
    chmod 755 "$TS_TMP"
    trap 'private_run_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    use_private_pg "$TS_TMP"
}

private_run_cleanup() {
    local rc=$? pidfile
    set +e
    # every server whose data directory is in the run directory: the test cluster, throwaway
    # clusters, pgrx's test cluster (normally each stops its own)
    while IFS= read -r pidfile; do
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w -t 30 stop >/dev/null 2>&1
    done < <(find "$TS_TMP" -name postmaster.pid -not -path "$TS_TMP/pg/*" 2>/dev/null)
    if [ "${TS_KEEP_TMP:-0}" = 1 ]; then
        log "kept $TS_TMP (TS_KEEP_TMP=1)"
    else
        rm -rf "$TS_TMP"
    fi
    stage_report
    return $rc
}

# ---- the test tiers of scripts/test.sh ------------------------------------------------------------
# Each runs against the private copy private_run_dir made ($TS_TMP, PG_CONFIG, PGBIN, PGRX_HOME).

# The #[pg_test]s (and any Rust test of the extension crate), on pgrx's own cluster.
run_pg_tests() {
    local data="$TS_TMP/pgrx-data"   # pgrx makes its cluster in a new directory under it
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$data"
        cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$data"
    else
        cargo pgrx test "pg$PG_MAJOR" --pgdata "$data"
    fi
}

# Start the cluster the contract and client tiers share: sets CLUSTER and PORT.
start_test_cluster() {
    CLUSTER="$TS_TMP/cluster"
    PORT="${TS_TEST_PORT:-54339}"
    TS_WORKER_DBS="ts_client,ts_client2" cluster_init "$CLUSTER" "$PORT"
    cluster_start "$CLUSTER"
}

# The pg_regress contract suite against the cluster of start_test_cluster.
run_regress() {
    local pg_regress out tests
    pg_regress="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress"
    out="$TS_TMP/regress"
    mkdir -p "$out"
    tests=$(cd "$TS_ROOT/tests/pg_regress/sql" && ls *.sql | sed 's/\.sql$//' | sort)
    # shellcheck disable=SC2086
    if ! PGUSER=postgres "$pg_regress" --bindir="$PGBIN" --host=127.0.0.1 --port="$PORT" \
            --inputdir="$TS_ROOT/tests/pg_regress" --outputdir="$out" --dbname=ts_regress $tests; then
        cat "$out/regression.diffs" >&2 || true
        return 1
    fi
}

# The client tests (pytest ARGS...) against the cluster of start_test_cluster; all of
# tests/client unless the arguments name test files or directories themselves.
run_client_tests() {
    mkdir -p "$TS_TMP/throwaway" "$TS_TMP/pytest"
    export TS_PGHOST=127.0.0.1 TS_PGPORT="$PORT" TS_CLUSTER_DIR="$CLUSTER" TS_PGBIN="$PGBIN" \
        TS_THROWAWAY_DIR="$TS_TMP/throwaway"
    local targets=(tests/client) a
    for a in "$@"; do
        [[ "$a" != -* && -e "${a%%::*}" ]] && targets=()
    done
    "$TS_ROOT/.venv/bin/python" -m pytest -q --basetemp="$TS_TMP/pytest" "${targets[@]}" "$@"
}
