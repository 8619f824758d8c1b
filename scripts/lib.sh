#!/usr/bin/env bash
# Shared helpers for demo.sh, test.sh and bench: dependencies, build, local clusters.
set -euo pipefail

TS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
PGBIN="$(dirname "$PG_CONFIG")"
PGRX_VERSION=0.18.1

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Run a PostgreSQL server binary as a user it accepts (root is refused).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing system packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# What building and running needs, installed where missing (Debian 12): PostgreSQL 15 with its
# headers, clang for bindgen, sudo, cargo-pgrx, and `cargo pgrx init` against the system server.
ensure_deps() {
    local need=()
    [ -x "$PG_CONFIG" ] || need+=(postgresql-15)
    [ -f /usr/include/postgresql/15/server/postgres.h ] || need+=(postgresql-server-dev-15)
    command -v clang >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
    command -v sudo >/dev/null || need+=(sudo)
    command -v psql >/dev/null || need+=(postgresql-client-15)
    apt_install "${need[@]}"
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        log "installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    if ! grep -q "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
        log "cargo pgrx init against the system PostgreSQL 15"
        cargo pgrx init --pg15 "$PG_CONFIG"
    fi
    id postgres >/dev/null 2>&1 || as_root useradd --system --home /var/lib/postgresql postgres
}

# What the tests need on top: Python venv, pgbench (contrib), pgbouncer (docs/pgbouncer.md),
# Node.js and npm (examples/node), cargo-fuzz.
ensure_test_deps() {
    ensure_deps
    local need=()
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    [ -x "$PGBIN/pgbench" ] || need+=(postgresql-contrib)
    [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
    command -v node >/dev/null || need+=(nodejs)
    command -v npm >/dev/null || need+=(npm)
    apt_install "${need[@]}"
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz (once)"
        cargo install cargo-fuzz --locked
    fi
}

# Build and install the extension into the system PostgreSQL ($1: --debug for a quicker build).
# Files are replaced with install(1), which writes a new inode: a running server that has the
# old library mapped (it is preloaded) keeps working instead of crashing on a rewritten file.
install_extension() {
    local mode="${1:---debug}" out="$TS_ROOT/target/ts-package"
    log "building and installing token_store ($mode)"
    rm -rf "$out"
    (cd "$TS_ROOT" && cargo pgrx package --pg-config "$PG_CONFIG" $( [ "$mode" = --release ] || echo --debug ) --out-dir "$out" >/dev/null)
    local libdir sharedir
    libdir="$("$PG_CONFIG" --pkglibdir)"
    sharedir="$("$PG_CONFIG" --sharedir)/extension"
    as_root install -m 755 "$out$libdir"/token_store.so "$libdir/"
    as_root install -m 644 "$out$sharedir"/token_store* "$sharedir/"
}

# A Python virtualenv with the client-test packages.
ensure_venv() {
    local venv="$TS_ROOT/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating Python venv"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c 'import jwt, psycopg, pytest, cryptography, jwcrypto' 2>/dev/null; then
        log "installing Python test packages"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$TS_ROOT/tests/client/requirements.txt"
    fi
}

# A fresh random 32-byte key, hex.
new_key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# postgres must reach a data directory the project keeps under its own folder (a clone may sit in a
# 0700 directory): give traverse-only permission (o+x) to the ancestors of $1 that lack it.
let_postgres_reach() {
    [ "$(id -u)" = 0 ] || return 0
    local d
    d="$(cd "$1" && pwd)"
    while [ "$d" != / ]; do
        runuser -u postgres -- test -x "$d" 2>/dev/null || chmod o+x "$d"
        d="$(dirname "$d")"
    done
}

# cluster_init DIR PORT: initdb a cluster owned by postgres with token_store preloaded.
# The encryption key goes into DIR/token_store_key.conf, included from postgresql.conf.
cluster_init() {
    local dir="$1" port="$2"
    mkdir -p "$dir"
    let_postgres_reach "$(dirname "$dir")"
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
