#!/usr/bin/env bash
# First command of the README: install what is missing, build token_store and install it into the
# system PostgreSQL (PG_CONFIG, default Debian's PostgreSQL 15), bring up a local cluster in .cluster/
# (port TS_DEMO_PORT, default 54329, extension preloaded, a fresh encryption key kept out of git), and
# run a short demo. Run again, it reuses what is there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"
ensure_deps
ensure_pgrx_init
install_extension

PORT="${TS_DEMO_PORT:-54329}"
LINK="$TS_ROOT/.cluster"
if [ ! -f "$LINK/data/PG_VERSION" ]; then
    rm -rf "$LINK"
    if postgres_reaches "$TS_ROOT"; then
        log "creating a local cluster in .cluster/ with a fresh encryption key"
        cluster_init "$LINK" "$PORT"
    else
        # The checkout sits where the postgres user cannot go (under /root, say), and no permission
        # of a directory above it is changed: the cluster lives in postgres' home, .cluster links to it.
        home="$(getent passwd postgres | cut -d: -f6)"
        real="$home/token_store-demo/$(printf '%s' "$TS_ROOT" | sha256sum | cut -c1-12)"
        log "creating a local cluster with a fresh encryption key in $real (.cluster/ links to it:" \
            "the postgres user cannot reach $TS_ROOT)"
        as_root install -d -o postgres -g postgres -m 755 "$home/token_store-demo"
        as_root rm -rf "$real"
        cluster_init "$real" "$PORT"
        ln -sfn "$real" "$LINK"
    fi
fi
CLUSTER="$(readlink -f "$LINK")"   # the server's own commands get the path postgres can follow
# a cluster made by an earlier run keeps the port it was made with
PORT="$(as_pg sed -n 's/^port = \([0-9]*\)$/\1/p' "$CLUSTER/data/postgresql.conf" | tail -1)"
if ! as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" status >/dev/null 2>&1; then
    log "starting it"
    cluster_start "$CLUSTER"
else
    # a running server keeps the library it loaded at start: restart it onto the new build
    log "restarting it onto the new build"
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -m fast -w restart >/dev/null
fi

log "demo"
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -f "$TS_ROOT/scripts/demo.sql"
echo
log "the cluster is up; connect with:  $PGBIN/psql -h 127.0.0.1 -p $PORT -U postgres"
log "stop it with:  $( [ "$(id -u)" = 0 ] && echo 'runuser -u postgres -- ')$PGBIN/pg_ctl -D $CLUSTER/data stop"
