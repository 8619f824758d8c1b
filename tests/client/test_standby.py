"""Replicas: a primary and its streaming hot standby (pg_basebackup -R), both started here on
ports 54352/54353 (spare ones when taken) in a temporary directory (scripts/test.sh: its per-run
one), removed at the end even on failure.

On the standby, jwt_verify, jwt_valid, jwt_introspect and jwks answer from the replayed rows; every
write raises 25006 with a hint to write on the primary; no purge worker (nor its launcher) runs and
nothing is purged. Once promoted, the server starts its launcher and purge worker by itself and
purges the expired rows. The tests run in file order; the promotion comes last."""

import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from throwaway_cluster import clusters

pytestmark = pytest.mark.slow

PRIMARY_PORT, STANDBY_PORT = 54352, 54353
DB = "ts_replica"
KID, RSA_KID = "k-replica", "k-replica-rs"
REPLAY_DEADLINE = 30


@pytest.fixture(scope="module")
def pair(ts):
    with clusters("standby-", Path(os.environ["TS_PGBIN"])) as make:
        primary = make("primary", PRIMARY_PORT)
        # The primary purges nothing during the tests (purge_interval 0): rows the standby keeps
        # are the standby's doing. purge_interval 1s on the standby (its own postgresql.conf)
        # would make a purge worker there act at once, if one ran.
        primary.init(DB, {"token_store.purge_interval": "0", "token_store.leeway": "0"})
        primary.start()
        primary.connect().execute(f"CREATE DATABASE {DB}")
        conn = primary.connect(DB)
        conn.execute("CREATE EXTENSION token_store")
        secret = ts.create_key(conn, KID, "HS256")
        conn.execute("SELECT token_store.generate_key(%s, 'RS256')", (RSA_KID,))

        standby = make("standby", STANDBY_PORT)
        standby.base_backup_of(primary)
        standby.append_conf({"token_store.purge_interval": "1s"})
        standby.start()
        assert standby.one("SELECT pg_is_in_recovery()") is True
        yield primary, standby, secret


@pytest.fixture(autouse=True)
def _close_sessions(pair):
    yield
    for c in pair[:2]:
        c.close_all()


def caught_up(ts, primary, standby):
    """Wait until the standby has replayed everything the primary has written so far."""
    target = primary.one("SELECT pg_current_wal_lsn()")
    ts.wait_for(
        lambda: standby.one("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)),
        REPLAY_DEADLINE, f"the standby to replay up to {target}",
    )


def test_tokens_issued_on_primary_verify_on_standby(ts, pair):
    primary, standby, secret = pair
    p, s = primary.connect(DB), standby.connect(DB)
    claims = ts.claims(sub="replica-alice", role="reader")
    hs = ts.issue(p, claims, kid=KID)
    rs = ts.issue(p, ts.claims(sub="replica-bob"), kid=RSA_KID)
    stored_elsewhere = ts.mint(ts.claims(sub="replica-carol"), secret, "HS256", KID)
    token_id = ts.store(p, stored_elsewhere)
    caught_up(ts, primary, standby)
    ok_before = ts.stats(s)["verifications"]["ok"]

    assert ts.verify(s, hs) == ts.verify(p, hs)
    assert ts.verify(s, hs)["role"] == "reader"
    assert ts.valid(s, rs) is True
    intro = ts.introspect(s, stored_elsewhere)
    assert intro["active"] is True and intro["token_id"] == str(token_id) and intro["sub"] == "replica-carol"
    assert ts.one(s, "SELECT token_store.jwks()") == ts.one(p, "SELECT token_store.jwks()")
    assert [k["kid"] for k in ts.one(s, "SELECT token_store.jwks()")["keys"]] == [RSA_KID]

    # rejections are read-only too: a signed token nobody stored, a forged one, a malformed one
    ts.assert_rejected(s, ts.mint(ts.claims(), secret, "HS256", KID), "not_stored")
    ts.assert_rejected(s, ts.mint(ts.claims(), "x" * 32, "HS256", KID), "bad_signature")
    ts.assert_malformed(s, "not.a.token")
    # the standby took no transaction id for any of that
    assert ts.one(s, "SELECT txid_current_if_assigned()") is None
    st = ts.stats(s)
    # two verifies, a valid and an introspect succeeded on the standby; no other session uses it
    assert st["counters_shared"] is True and st["verifications"]["ok"] - ok_before == 4


def test_revocation_reaches_the_standby(ts, pair):
    primary, standby, _ = pair
    p, s = primary.connect(DB), standby.connect(DB)
    token = ts.issue(p, ts.claims(sub="replica-dave"), kid=KID)
    subject_tokens = [ts.issue(p, ts.claims(sub="replica-erin"), kid=KID) for _ in range(2)]
    caught_up(ts, primary, standby)
    assert ts.valid(s, token) and all(ts.valid(s, t) for t in subject_tokens)

    assert ts.revoke(p, token, "logout") is True
    time.sleep(1.1)  # a subject revocation refuses tokens issued at or before its second
    assert ts.one(p, "SELECT token_store.jwt_revoke_subject('replica-erin', 'password changed')") == 2
    caught_up(ts, primary, standby)
    ts.assert_rejected(s, token, "revoked")
    for t in subject_tokens:
        assert ts.introspect(s, t)["active"] is False
        assert ts.valid(s, t) is False


def test_key_state_change_reaches_warm_standby_session(ts, pair):
    """The standby's sessions keep the keys parsed: the relcache invalidation a key change commits
    with is replayed there, so a warm standby session refuses at once once the change is replayed."""
    primary, standby, _ = pair
    p, s = primary.connect(DB), standby.connect(DB)
    kid = "k-replica-warm"
    secret = ts.create_key(p, kid, "HS256")
    token = ts.mint(ts.claims(sub="replica-warm"), secret, "HS256", kid)
    kidless = ts.mint(ts.claims(sub="replica-warm"), secret, "HS256")
    ts.store(p, token)
    ts.store(p, kidless)
    caught_up(ts, primary, standby)
    for _ in range(3):
        assert ts.valid(s, token) is True and ts.valid(s, kidless) is True

    p.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    caught_up(ts, primary, standby)
    ts.assert_rejected(s, token, "unknown_key")
    assert ts.valid(s, kidless) is False
    p.execute("SELECT token_store.set_key_state(%s, 'active')", (kid,))
    caught_up(ts, primary, standby)
    assert ts.valid(s, token) is True and ts.valid(s, kidless) is True


def test_writes_on_standby_raise_25006(ts, pair):
    primary, standby, secret = pair
    p, s = primary.connect(DB), standby.connect(DB)
    token = ts.issue(p, ts.claims(sub="replica-frank"), kid=KID)
    caught_up(ts, primary, standby)
    token_id = ts.introspect(s, token)["token_id"]
    unstored = ts.mint(ts.claims(sub="replica-gina"), secret, "HS256", KID)
    writes = {
        "jwt_issue": ("SELECT token_store.jwt_issue(%s)", (Jsonb({"sub": "x"}),)),
        "jwt_store": ("SELECT token_store.jwt_store(%s)", (unstored,)),
        "jwt_revoke": ("SELECT token_store.jwt_revoke(%s)", (token,)),
        "jwt_revoke_id": ("SELECT token_store.jwt_revoke_id(%s)", (uuid.UUID(token_id),)),
        "jwt_revoke_subject": ("SELECT token_store.jwt_revoke_subject('replica-frank')", None),
        "purge": ("SELECT token_store.purge()", None),
        "create_key": ("SELECT token_store.create_key('k-standby', 'HS256', %s)", (ts.new_secret(),)),
        "generate_key": ("SELECT token_store.generate_key('k-standby', 'ES256')", None),
        "set_key_state": ("SELECT token_store.set_key_state(%s, 'retired')", (KID,)),
        "import_jwks": ("SELECT token_store.import_jwks(token_store.jwks())", None),
        "reencrypt": ("SELECT token_store.reencrypt()", None),
    }
    for name, (query, params) in writes.items():
        with ts.expect_error("25006", f"cannot execute {name} on a hot standby") as info:
            s.execute(query, params)
        assert "primary" in (info.value.diag.message_hint or ""), f"{name}: no hint to write on the primary"
    # nothing changed: the token still verifies there, and its row is not revoked
    assert ts.valid(s, token) is True
    assert ts.valid(s, unstored) is False


def test_standby_runs_no_purge_worker(ts, pair):
    primary, standby, _ = pair
    p, s = primary.connect(DB), standby.connect(DB)
    sub = f"replica-expiring-{uuid.uuid4()}"
    p.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second', %s) "
              "FROM generate_series(1, 5) g", (sub, KID))
    caught_up(ts, primary, standby)
    ts.wait_for(lambda: ts.one(s, "SELECT count(*) FROM token_store.tokens WHERE subject = %s AND expires_at < now()",
                               (sub,)) == 5, 10, "the rows to expire")
    # purge_interval is 1s on the standby: a worker would have purged them within a few seconds
    ts.holds_for(lambda: ts.one(s, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 5, 4,
                 "expired rows stay on the standby")
    assert ts.rows(s, "SELECT pid, backend_type FROM pg_stat_activity "
                      "WHERE backend_type IN ('token_store purge', 'token_store launcher')") == []
    st = ts.stats(s)
    assert st["worker_pids"] == []
    assert st["purged_total"] == 0 and st["last_purge_at"] is None
    assert "token_store launcher started" not in standby.log_text()
    assert "token_store purge worker started" not in standby.log_text()


def test_promoted_standby_starts_its_worker_and_purges(ts, pair):
    primary, standby, _ = pair
    s = standby.connect(DB)
    sub = f"replica-promote-{uuid.uuid4()}"
    primary.connect(DB).execute(
        "SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second', %s) "
        "FROM generate_series(1, 7) g", (sub, KID))
    caught_up(ts, primary, standby)
    assert ts.one(s, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 7
    purged_before = ts.stats(s)["purged_total"]
    primary.stop()  # as in a failover: the old primary is gone

    assert ts.one(s, "SELECT pg_promote(true, 60)") is True
    assert ts.one(s, "SELECT pg_is_in_recovery()") is False
    standby.configure({"token_store.purge_interval": "1s", "token_store.leeway": "0"})

    def worker():
        rows = ts.rows(s, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'token_store purge' AND datname = %s",
                       (DB,))
        return rows[0][0] if len(rows) == 1 else None

    pid = ts.wait_for(worker, 30, "the promoted server's purge worker")
    assert ts.one(s, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'token_store launcher'") == 1
    ts.wait_for(lambda: ts.one(s, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 0, 30,
                "the promoted server to purge the expired rows")
    st = ts.stats(s)
    assert st["worker_pids"] == [pid] and st["purged_total"] - purged_before >= 7
    assert f'expired rows in database "{DB}"' in standby.log_text()
    # and writes work there now
    token = ts.issue(s, ts.claims(sub="after-promotion"), kid=KID)
    assert ts.verify(s, token)["sub"] == "after-promotion"
