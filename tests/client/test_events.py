"""Revocation events (CONTRACT.md "Revocation events"): with token_store.notify_channel set, a
listening connection receives exactly one notification per committed revocation, subject
revocation, session end, reuse detection and key state change, none for a rolled-back one, with
the contract's payload; revocations_since answers the same from the tables after a reconnect and on
a hot standby; the example listener (examples/python/revocation_listener.py) keeps its deny-set."""

import datetime as dt
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from throwaway_cluster import clusters

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))
import revocation_listener  # noqa: E402

DB = "ts_events"
KID = "k-events"
CHANNEL = "ts_revocations"
STANDBY_PORTS = (54464, 54465)
MEMBERS = {"event", "token_id", "jti", "sub", "sid", "kid", "at"}
SECRET: dict[str, str] = {}


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        c = ts.connect(DB)
        SECRET[KID] = ts.create_key(c, KID, "HS256")
        c.execute(f"ALTER DATABASE {DB} SET token_store.notify_channel = '{CHANNEL}'")
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


@pytest.fixture
def listener(ts, db):
    c = ts.connect(db)
    c.execute(f"LISTEN {CHANNEL}")
    return c


def drain(listener, quiet=0.5):
    """Every notification that arrives until none has come for `quiet` seconds."""
    out = []
    for n in listener.notifies(timeout=quiet, stop_after=None):
        assert n.channel == CHANNEL
        assert len(n.payload.encode()) < 8000
        out.append(json.loads(n.payload))
    return out


def check_payload(e, **want):
    assert set(e) <= MEMBERS | {"omitted"}, e
    at = dt.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - at).total_seconds()) < 60
    for k, v in want.items():
        assert e.get(k) == v, (k, e)


def token_id(ts, conn, token):
    return str(ts.one(conn, "SELECT id FROM token_store.tokens WHERE token_hash = sha256(%s::bytea)",
                      (token.encode(),)))


def test_one_event_per_committed_change(ts, conn, listener):
    drain(listener, 0.2)
    sub = f"ev-{uuid.uuid4()}"
    claims = ts.claims(sub)
    t1 = ts.issue(conn, claims | {"jti": "jti-1"}, kid=KID)
    assert drain(listener, 0.3) == [], "issuing is no revocation"
    ts.revoke(conn, t1)
    [e] = drain(listener)
    check_payload(e, event="token_revoked", token_id=token_id(ts, conn, t1), jti="jti-1", sub=sub, kid=KID)
    assert "sid" not in e
    # revoking again changes nothing, and says nothing
    assert ts.revoke(conn, t1) is False
    assert drain(listener, 0.3) == []
    # an unstored token gets a revoked row: one event
    t2 = ts.mint(ts.claims(sub) | {"jti": "jti-2"}, SECRET[KID], "HS256", KID)
    ts.revoke(conn, t2)
    [e] = drain(listener)
    check_payload(e, event="token_revoked", jti="jti-2", token_id=token_id(ts, conn, t2))
    # jwt_revoke_id
    t3 = ts.issue(conn, claims, kid=KID)
    conn.execute("SELECT token_store.jwt_revoke_id(%s)", (token_id(ts, conn, t3),))
    [e] = drain(listener)
    check_payload(e, event="token_revoked", token_id=token_id(ts, conn, t3))


def test_rolled_back_changes_say_nothing(ts, db, conn, listener):
    drain(listener, 0.2)
    t = ts.issue(conn, ts.claims("ev-rollback"), kid=KID)
    kid = f"ev-rb-{uuid.uuid4()}"
    conn.execute("SELECT token_store.generate_key(%s, 'ES256')", (kid,))
    s = conn.execute("SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": "ev-rollback"}), KID)).fetchone()[0]
    tx = ts.connect(db)
    tx.autocommit = False
    ts.revoke(tx, t)
    tx.execute("SELECT token_store.jwt_revoke_subject('ev-rollback')")
    tx.execute("SELECT token_store.session_end(%s)", (s["session_id"],))
    tx.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (kid,))
    tx.rollback()
    assert drain(listener, 0.5) == []
    # a savepoint rolled back inside a committed transaction takes its events with it
    tx.execute("SAVEPOINT a")
    ts.revoke(tx, t)
    tx.execute("ROLLBACK TO SAVEPOINT a")
    tx.execute("SELECT token_store.session_end(%s)", (s["session_id"],))
    assert drain(listener, 0.3) == [], "nothing before the commit"
    tx.commit()
    [e] = drain(listener)
    check_payload(e, event="session_ended", sid=s["session_id"], sub="ev-rollback")


def test_changes_in_replica_mode_are_announced(ts, conn, listener):
    """The event triggers are ENABLE ALWAYS: a change applied with session_replication_role =
    replica (as a logical subscriber's apply worker and data-copy tools run) is announced too."""
    drain(listener, 0.2)
    t = ts.issue(conn, ts.claims("ev-replica") | {"jti": "jti-replica"}, kid=KID)
    assert ts.one(conn, """SELECT tgenabled FROM pg_trigger
                           WHERE tgname = 'tokens_revoked_event'""") == "A"
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE token_store.tokens SET revoked_at = now() WHERE token_hash = sha256(%s::bytea)",
                 (t.encode(),))
    conn.execute("RESET session_replication_role")
    [e] = drain(listener)
    check_payload(e, event="token_revoked", jti="jti-replica", sub="ev-replica")


def test_subject_sessions_and_keys(ts, conn, listener):
    drain(listener, 0.2)
    sub = f"ev-subj-{uuid.uuid4()}"
    stored = [ts.issue(conn, ts.claims(sub), kid=KID) for _ in range(2)]
    s = conn.execute("SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": sub}), KID)).fetchone()[0]
    conn.execute("SELECT token_store.jwt_revoke_subject(%s)", (sub,))
    events = drain(listener)
    kinds = sorted(e["event"] for e in events)
    # its two stored tokens, the session's access token, the session, the subject
    assert kinds == ["session_ended", "subject_revoked", "token_revoked", "token_revoked", "token_revoked"], events
    ids = {token_id(ts, conn, t) for t in stored + [s["access_token"]]}
    assert {e["token_id"] for e in events if e["event"] == "token_revoked"} == ids
    [subj] = [e for e in events if e["event"] == "subject_revoked"]
    check_payload(subj, sub=sub)
    assert set(subj) == {"event", "sub", "at"}
    # reuse detection
    conn.execute("SET token_store.refresh_reuse_interval = 0")
    try:
        s = conn.execute("SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": sub}), KID)).fetchone()[0]
        conn.execute("SELECT token_store.session_refresh(%s)", (s["refresh_token"],))
        drain(listener, 0.2)
        answer = conn.execute("SELECT token_store.session_refresh(%s)", (s["refresh_token"],)).fetchone()[0]
        assert answer["reason"] == "refresh_reused"
        [e] = drain(listener)
        check_payload(e, event="refresh_reused", sid=s["session_id"], sub=sub)
    finally:
        conn.execute("RESET token_store.refresh_reuse_interval")
    # key state changes: one event per change, none for setting the same state again
    kid = f"ev-key-{uuid.uuid4()}"
    conn.execute("SELECT token_store.generate_key(%s, 'ES256')", (kid,))
    assert drain(listener, 0.3) == []
    conn.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (kid,))
    conn.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (kid,))
    conn.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    events = drain(listener)
    assert [e["event"] for e in events] == ["key_verify_only", "key_retired"]
    for e in events:
        check_payload(e, kid=kid)
        assert set(e) == {"event", "kid", "at"}
    # plain SQL by an operator is announced too
    conn.execute("UPDATE token_store.signing_keys SET state = 'active' WHERE kid = %s", (kid,))
    [e] = drain(listener)
    check_payload(e, event="key_active", kid=kid)


def test_long_members_are_left_out(ts, conn, listener):
    drain(listener, 0.2)
    # within the 1024-byte bound of an identifying claim, but longer than 2000 bytes as JSON
    sub, jti = "\x01" * 1000, "\\" * 1010
    t = ts.issue(conn, ts.claims(sub) | {"jti": jti}, kid=KID)
    ts.revoke(conn, t)
    [e] = drain(listener)
    assert e["omitted"] == ["jti", "sub"]
    assert "jti" not in e and "sub" not in e
    check_payload(e, event="token_revoked", token_id=token_id(ts, conn, t))
    # revocations_since has the whole row
    rows = ts.rows(conn, "SELECT jti, sub FROM token_store.revocations_since(%s) WHERE token_id = %s",
                   (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1), e["token_id"]))
    assert rows == [(jti, sub)]


def test_concurrent_revocations(ts, db, listener):
    drain(listener, 0.2)
    conn = ts.connect(db)
    tokens = [ts.issue(conn, ts.claims(f"ev-conc-{i}"), kid=KID) for i in range(40)]
    conns = [ts.connect(db) for _ in range(4)]
    barrier = threading.Barrier(len(conns))

    def run(c, mine):
        barrier.wait()
        for i, t in enumerate(mine):
            if i % 5 == 4:
                # a rolled-back revocation among the committed ones
                with c.transaction(force_rollback=True):
                    ts.revoke(c, t)
            else:
                ts.revoke(c, t)

    # every token is revoked by two connections at once: one of them changes it
    shares = [tokens[i::2] for i in range(2)] * 2
    threads = [threading.Thread(target=run, args=(c, s)) for c, s in zip(conns, shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = drain(listener, 1.0)
    revoked = {str(r) for (r,) in ts.rows(conn, "SELECT id FROM token_store.tokens WHERE subject LIKE 'ev-conc-%%' "
                                                "AND revoked_at IS NOT NULL")}
    ids = [e["token_id"] for e in events]
    assert len(ids) == len(set(ids)), "one event per change"
    assert set(ids) == revoked
    assert len(revoked) >= 32


def test_revocations_since_catches_up(ts, db, conn):
    start = ts.one(conn, "SELECT now()")
    sub = f"ev-since-{uuid.uuid4()}"
    t = ts.issue(conn, ts.claims(sub) | {"jti": "since-1"}, kid=KID)
    ts.revoke(conn, t)
    s = conn.execute("SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": sub}), KID)).fetchone()[0]
    conn.execute("SELECT token_store.session_end(%s)", (s["session_id"],))
    rows = ts.rows(conn, "SELECT event, token_id::text, jti, sub, sid::text, kid FROM token_store.revocations_since(%s) "
                         "WHERE sub = %s", (start, sub))
    assert rows == [("token_revoked", token_id(ts, conn, t), "since-1", sub, None, KID),
                    ("session_ended", None, None, sub, s["session_id"], None)]
    later = ts.one(conn, "SELECT clock_timestamp()")
    assert ts.rows(conn, "SELECT * FROM token_store.revocations_since(%s) WHERE sub = %s", (later, sub)) == []
    # the app role may ask; nobody else
    ts.ensure_role("ev_app", "token_store_app")
    ts.ensure_role("ev_nobody")
    try:
        app = ts.connect(db, user="ev_app")
        assert len(ts.rows(app, "SELECT * FROM token_store.revocations_since(%s) WHERE sub = %s", (start, sub))) == 2
        with ts.expect_error("42501"):
            ts.connect(db, user="ev_nobody").execute("SELECT * FROM token_store.revocations_since(now())")
    finally:
        ts.close_all()
        ts.drop_role("ev_app")
        ts.drop_role("ev_nobody")


def test_example_listener_keeps_its_deny_set(ts, db, conn):
    conninfo = f"host={ts.host} port={ts.port} dbname={db} user=postgres"
    deny = revocation_listener.DenySet()
    # a revocation from before the listener started: the catch-up brings it
    early = ts.issue(conn, ts.claims("ev-early") | {"jti": "early"}, kid=KID)
    ts.revoke(conn, early)
    stop, ready = threading.Event(), threading.Event()
    seen = []
    th = threading.Thread(target=revocation_listener.listen, args=(conninfo, deny, stop),
                          kwargs={"on_event": seen.append, "channel": CHANNEL, "ready": ready}, daemon=True)
    th.start()
    try:
        assert ready.wait(20)
        assert deny.denied({"jti": "early"})
        live = ts.issue(conn, ts.claims("ev-live") | {"jti": "live"}, kid=KID)
        assert not deny.denied({"jti": "live", "sub": "ev-live", "iat": int(time.time())})
        ts.revoke(conn, live)
        ts.wait_for(lambda: deny.denied({"jti": "live"}), 10, "the listener to take in the revocation")
        s = conn.execute("SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": "ev-live"}), KID)).fetchone()[0]
        conn.execute("SELECT token_store.session_end(%s)", (s["session_id"],))
        ts.wait_for(lambda: deny.denied({"sid": s["session_id"]}), 10, "the session end")
        conn.execute("SELECT token_store.jwt_revoke_subject('ev-subject')")
        ts.wait_for(lambda: deny.denied({"sub": "ev-subject", "iat": int(time.time()) - 5}), 10, "the subject")
        assert not deny.denied({"sub": "ev-subject", "iat": int(time.time()) + 60})
        # the listener's connection is killed; what commits meanwhile comes with the catch-up
        listener_pid = ts.wait_for(lambda: ts.one(conn, "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                                  (revocation_listener.APPLICATION_NAME,)),
                                   10, "the listener's backend")
        conn.execute("SELECT pg_terminate_backend(%s)", (listener_pid,))
        away = ts.issue(conn, ts.claims("ev-away") | {"jti": "away"}, kid=KID)
        ts.revoke(conn, away)
        ts.wait_for(lambda: deny.denied({"jti": "away"}), 20, "the catch-up after the reconnection")
    finally:
        stop.set()
        th.join(10)


def test_standby_answers_revocations_since(ts):
    with clusters("events-standby-", ts.pgbin) as make:
        primary = make("primary", STANDBY_PORTS[0])
        primary.init("ts_ev_rep", {"token_store.purge_interval": "0"})
        primary.start()
        primary.connect().execute("CREATE DATABASE ts_ev_rep")
        p = primary.connect("ts_ev_rep")
        p.execute("CREATE EXTENSION token_store")
        ts.create_key(p, KID, "HS256")
        start = ts.one(p, "SELECT now()")
        t = ts.issue(p, ts.claims("ev-rep") | {"jti": "rep-1"}, kid=KID)
        ts.revoke(p, t)
        standby = make("standby", STANDBY_PORTS[1])
        standby.base_backup_of(primary)
        standby.start()
        target = primary.one("SELECT pg_current_wal_lsn()")
        ts.wait_for(lambda: standby.one("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)),
                    30, "the standby to catch up")
        s = standby.connect("ts_ev_rep")
        assert ts.rows(s, "SELECT event, jti, sub FROM token_store.revocations_since(%s)", (start,)) == [
            ("token_revoked", "rep-1", "ev-rep")]
