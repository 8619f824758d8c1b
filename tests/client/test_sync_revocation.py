"""token_store.synchronous_revocation: once a revocation's transaction commits, every synchronous
standby already refuses the token.

A primary with one synchronous standby (synchronous_standby_names names it). The standby's replay
is paused, so that "applied" and "received" differ: with the setting off a revocation returns at
once and the standby still accepts the token (the gap the setting closes); with it on, the revoking
call does not return until replay resumes and has applied it, and the standby refuses the token the
moment it does."""

import os
import threading
import time
from pathlib import Path

import pytest

from throwaway_cluster import clusters

pytestmark = pytest.mark.slow

PRIMARY_PORT, STANDBY_PORT = 54374, 54375
DB = "ts_syncrev"
KID = "k-syncrev"


@pytest.fixture(scope="module")
def pair(ts):
    with clusters("syncrev-", Path(os.environ["TS_PGBIN"])) as make:
        primary = make("primary", PRIMARY_PORT)
        primary.init(DB, {"token_store.purge_interval": "0"})
        primary.start()
        primary.connect().execute(f"CREATE DATABASE {DB}")
        conn = primary.connect(DB)
        conn.execute("CREATE EXTENSION token_store")
        ts.create_key(conn, KID, "HS256")
        standby = make("standby", STANDBY_PORT)
        standby.base_backup_of(primary)
        standby.append_conf({"cluster_name": "'ts_sync'"})
        standby.start()
        primary.configure({"synchronous_standby_names": "ts_sync"})
        ts.wait_for(lambda: primary.one(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'ts_sync'") == "sync",
            30, "the standby to be synchronous")
        yield primary, standby


def test_revocation_waits_for_the_standby_to_apply_it(ts, pair):
    primary, standby = pair
    p, s = primary.connect(DB), standby.connect(DB)
    before, after = (ts.issue(p, ts.claims(sub=f"sync-{n}"), kid=KID) for n in ("off", "on"))
    ts.wait_for(lambda: ts.valid(s, before) and ts.valid(s, after), 30, "the tokens on the standby")
    assert ts.one(p, "SHOW token_store.synchronous_revocation") == "off"

    standby.one("SELECT pg_wal_replay_pause()")
    try:
        # off: the commit waits for the standby's flush only; replay is paused, so it still accepts
        assert ts.revoke(p, before) is True
        assert ts.valid(s, before) is True

        # on: the commit waits until the standby has applied the revocation
        p.execute("SET token_store.synchronous_revocation = on")
        done = threading.Event()
        result = {}

        def revoke():
            result["revoked"] = ts.revoke(p, after)
            done.set()

        threading.Thread(target=revoke, daemon=True).start()
        assert not done.wait(3), "the revocation returned before the standby applied it"
        assert ts.valid(s, after) is True
    finally:
        standby.one("SELECT pg_wal_replay_resume()")
    assert done.wait(30), "the revocation never returned after replay resumed"
    assert result["revoked"] is True
    assert ts.valid(s, after) is False, "the standby accepted a token whose revocation had returned"
    ts.assert_rejected(s, after, "revoked")
    # the setting raised this transaction only: the session's own value is untouched
    assert ts.one(p, "SHOW synchronous_commit") == "on"
