#!/usr/bin/env bash
# First command of the README: install what is missing, build and install token_store, bring up a
# local cluster in .cluster/ (port 54329, extension preloaded, a fresh encryption key kept out of
# git), and run a short demo. Run again, it reuses what is there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"
ensure_deps
install_extension

CLUSTER="$TS_ROOT/.cluster"
PORT="${TS_DEMO_PORT:-54329}"
if [ ! -f "$CLUSTER/data/PG_VERSION" ]; then
    log "creating a local cluster in .cluster/ with a fresh encryption key"
    rm -rf "$CLUSTER"
    cluster_init "$CLUSTER" "$PORT"
fi
if ! as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" status >/dev/null 2>&1; then
    log "starting it"
    cluster_start "$CLUSTER"
else
    # a running server keeps the library it loaded at start: restart it onto the new build
    log "restarting it onto the new build"
    as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -m fast -w restart >/dev/null
fi

log "demo"
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -f "$TS_ROOT/scripts/demo.sql"
echo
log "the cluster is up; connect with:  psql -h 127.0.0.1 -p $PORT -U postgres"
log "stop it with:  $( [ "$(id -u)" = 0 ] && echo 'runuser -u postgres -- ')$PGBIN/pg_ctl -D $CLUSTER/data stop"
