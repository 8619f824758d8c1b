"""Sessions and refresh tokens (CONTRACT.md "Sessions and refresh tokens"), against real clusters:
the whole life of a session, reuse detection and its grace, two connections refreshing one token at
the same instant, kill -9 and immediate shutdown in the middle of refreshes, idle timeout and
maximum lifetime, the purge worker, a hot standby, privileges and hostile refresh tokens.

The shared cluster runs most of it in database ts_sessions; the worker test uses ts_client (where
the shared cluster's purge worker runs); crashes and the standby get throwaway clusters."""

import os
import random
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from throwaway_cluster import as_pg, clusters

DB = "ts_sessions"
KID = "k-sessions"
SUB = "sess-alice"
CRASH_PORT, PRIMARY_PORT, STANDBY_PORT = 54456, 54457, 54458
REFRESH_PREFIX = "tsr_"


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        ts.create_key(ts.connect(DB), KID, "HS256")
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def start(conn, sub=SUB, metadata=None, claims=None, **ttl):
    claims = {"sub": sub, **(claims or {})}
    args = [Jsonb(claims), ttl.get("access_ttl", "15 minutes"), ttl.get("refresh_ttl", "30 days"),
            Jsonb(metadata) if metadata is not None else None]
    r = conn.execute("SELECT token_store.session_start(%s, %s::interval, %s::interval, %s)", args).fetchone()[0]
    return r


def refresh(conn, token, claims=None):
    return conn.execute("SELECT token_store.session_refresh(%s, %s)",
                        (token, Jsonb(claims) if claims is not None else None)).fetchone()[0]


def refused(answer, reason):
    assert answer == {"error": "invalid_grant", "reason": reason}, answer


def assert_pair(ts, conn, pair, session_id=None):
    """A token response whose access token verifies with the session's sid."""
    assert set(pair) == {"token_type", "access_token", "expires_in", "refresh_token", "session_id"}, pair
    assert pair["token_type"] == "Bearer"
    assert pair["refresh_token"].startswith(REFRESH_PREFIX) and "." not in pair["refresh_token"]
    if session_id is not None:
        assert pair["session_id"] == session_id
    claims = ts.verify(conn, pair["access_token"])
    assert claims["sid"] == pair["session_id"]
    assert 0 < pair["expires_in"] <= claims["exp"] - claims["iat"] + 1
    return claims


def live_ids(ts, conn, sub=SUB):
    return [str(r[0]) for r in ts.rows(conn, "SELECT session_id FROM token_store.sessions(%s)", (sub,))]


def interval(conn, seconds):
    conn.execute(f"SET token_store.refresh_reuse_interval = '{seconds}s'")


def both_modes(ts, conn, token, reason):
    """Refused with `reason` in allow-list and deny-list mode, by verify, valid and introspect."""
    for mode in ("on", "off"):
        conn.execute(f"SET token_store.require_stored = {mode}")
        ts.assert_rejected(conn, token, reason)
    conn.execute("RESET token_store.require_stored")


def valid_both_modes(ts, conn, token):
    for mode in ("on", "off"):
        conn.execute(f"SET token_store.require_stored = {mode}")
        assert ts.valid(conn, token), mode
    conn.execute("RESET token_store.require_stored")


# ---- the whole life ----------------------------------------------------------------------------


def test_whole_life(ts, conn):
    sub = f"life-{uuid.uuid4()}"
    interval(conn, 1)
    a = start(conn, sub, metadata={"device": "phone"}, claims={"role": "user"})
    claims = assert_pair(ts, conn, a)
    assert claims["sub"] == sub and claims["role"] == "user"
    assert ts.introspect(conn, a["access_token"])["active"] is True
    # refresh ten times: each new pair valid, of the same session, generation counting up
    old, current, accesses = [], a, [a["access_token"]]
    for i in range(1, 11):
        nxt = refresh(conn, current["refresh_token"])
        c = assert_pair(ts, conn, nxt, a["session_id"])
        assert c["sub"] == sub and c["role"] == "user"
        assert ts.one(conn, "SELECT generation FROM token_store.sessions(%s)", (sub,)) == i
        old.append(current["refresh_token"])
        accesses.append(nxt["access_token"])
        current = nxt
    assert len(set(old)) == 10 and current["refresh_token"] not in old
    # others of the same subject, for the list
    b = start(conn, sub, metadata={"device": "laptop"})
    c = start(conn, sub, metadata={"device": "tablet"})
    d = start(conn, sub)
    rows = ts.rows(conn, "SELECT session_id, generation, metadata FROM token_store.sessions(%s)", (sub,))
    assert [str(r[0]) for r in rows] == [d["session_id"], c["session_id"], b["session_id"], a["session_id"]]
    assert [r[1] for r in rows] == [0, 0, 0, 10]
    assert [r[2] for r in rows] == [None, {"device": "tablet"}, {"device": "laptop"}, {"device": "phone"}]
    # after the grace, each old refresh token is refused as reused; the first reuse ends session a
    time.sleep(1.2)
    for t in old:
        refused(refresh(conn, t), "refresh_reused")
    refused(refresh(conn, current["refresh_token"]), "session_ended")
    for t in accesses:
        both_modes(ts, conn, t, "session_ended")
    assert live_ids(ts, conn, sub) == [d["session_id"], c["session_id"], b["session_id"]]
    # end one session of three
    assert ts.one(conn, "SELECT token_store.session_end(%s, 'logout')", (b["session_id"],)) is True
    assert ts.one(conn, "SELECT token_store.session_end(%s)", (b["session_id"],)) is False
    both_modes(ts, conn, b["access_token"], "session_ended")
    refused(refresh(conn, b["refresh_token"]), "session_ended")
    assert live_ids(ts, conn, sub) == [d["session_id"], c["session_id"]]
    valid_both_modes(ts, conn, c["access_token"])
    # end the others
    assert ts.one(conn, "SELECT token_store.session_end_subject(%s, NULL, 'everywhere')", (sub,)) == 2
    assert ts.one(conn, "SELECT token_store.session_end_subject(%s)", (sub,)) == 0
    for s in (c, d):
        both_modes(ts, conn, s["access_token"], "session_ended")
        refused(refresh(conn, s["refresh_token"]), "session_ended")
    assert live_ids(ts, conn, sub) == []
    reasons = dict(ts.rows(conn, "SELECT id::text, end_reason FROM token_store.sessions WHERE subject = %s", (sub,)))
    assert reasons == {a["session_id"]: "refresh_reused", b["session_id"]: "logout",
                       c["session_id"]: "everywhere", d["session_id"]: "everywhere"}


def test_logout_everywhere_else_keeps_one(ts, conn):
    sub = f"else-{uuid.uuid4()}"
    keep, other = start(conn, sub), start(conn, sub)
    assert ts.one(conn, "SELECT token_store.session_end_subject(%s, %s)", (sub, keep["session_id"])) == 1
    assert live_ids(ts, conn, sub) == [keep["session_id"]]
    assert ts.valid(conn, keep["access_token"])
    both_modes(ts, conn, other["access_token"], "session_ended")
    assert_pair(ts, conn, refresh(conn, keep["refresh_token"]), keep["session_id"])


def test_jwt_revoke_subject_ends_the_sessions_too(ts, conn):
    sub = f"revsub-{uuid.uuid4()}"
    s = start(conn, sub)
    assert ts.one(conn, "SELECT token_store.jwt_revoke_subject(%s)", (sub,)) == 1
    ts.assert_rejected(conn, s["access_token"], "revoked")
    refused(refresh(conn, s["refresh_token"]), "session_ended")
    assert live_ids(ts, conn, sub) == []


def test_refresh_claims_replace_the_unregistered_ones(ts, conn):
    sub = f"role-{uuid.uuid4()}"
    s = start(conn, sub, claims={"role": "user", "aud": "api", "tier": 1})
    n = refresh(conn, s["refresh_token"], {"role": "admin"})
    c = ts.verify(conn, n["access_token"], "api")
    assert (c["sub"], c["aud"], c["role"], c["sid"]) == (sub, "api", "admin", s["session_id"])
    assert "tier" not in c
    # the next refresh keeps the new claims
    c2 = ts.verify(conn, refresh(conn, n["refresh_token"])["access_token"], "api")
    assert c2["role"] == "admin" and "tier" not in c2


def test_metadata_and_claims_are_sealed(ts, conn):
    marker = f"device-{uuid.uuid4()}"
    s = start(conn, f"sealed-{uuid.uuid4()}", metadata={"ua": marker}, claims={"secret_claim": marker})
    raw = ts.one(conn, "SELECT claims || coalesce(metadata, '') FROM token_store.sessions WHERE id = %s",
                 (s["session_id"],))
    assert marker.encode() not in bytes(raw)
    hashes = ts.rows(conn, "SELECT token_hash FROM token_store.refresh_tokens WHERE session_id = %s",
                     (s["session_id"],))
    assert len(hashes) == 1 and len(bytes(hashes[0][0])) == 32
    import hashlib
    assert bytes(hashes[0][0]) == hashlib.sha256(s["refresh_token"].encode()).digest()
    # moved to another row, the metadata no longer opens (bound to its row)
    other = start(conn, f"sealed-{uuid.uuid4()}", metadata={"ua": "x"})
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE token_store.sessions SET metadata = (SELECT metadata FROM token_store.sessions "
                     "WHERE id = %s) WHERE id = %s", (s["session_id"], other["session_id"]))
        with ts.expect_error("XX001"):
            conn.execute("SELECT * FROM token_store.sessions((SELECT subject FROM token_store.sessions "
                         "WHERE id = %s))", (other["session_id"],))


def test_bad_arguments_raise_22023(ts, conn):
    for args in ([Jsonb({"role": "x"})], [Jsonb([1])], [Jsonb({"sub": 5})], [Jsonb({"sub": ""})],
                 [Jsonb({"sub": "a", "sid": "x"})], [Jsonb({"sub": "a", "exp": 1})],
                 [Jsonb({"sub": "a"}), "0 seconds"], [Jsonb({"sub": "a"}), "-1 minute"],
                 [Jsonb({"sub": "a"}), "1 minute", "0 seconds"]):
        q = "SELECT token_store.session_start(%s" + ", %s::interval" * (len(args) - 1) + ")"
        with ts.expect_error("22023"):
            conn.execute(q, args)
    s = start(conn, f"bad-{uuid.uuid4()}")
    for claims in ([1], {"sub": "mallory"}, {"sid": str(uuid.uuid4())}, {"exp": 1}):
        with ts.expect_error("22023"):
            refresh(conn, s["refresh_token"], claims)
    # the refused arguments consumed nothing
    assert_pair(ts, conn, refresh(conn, s["refresh_token"]), s["session_id"])
    with ts.expect_error("42704"):
        conn.execute("SELECT token_store.session_start('{\"sub\": \"a\"}', kid => 'no-such-key')")
    with ts.expect_error("22001"):
        conn.execute("SELECT token_store.session_end(%s, %s)", (s["session_id"], "r" * 2000))


# ---- reuse -----------------------------------------------------------------------------------


def test_reuse_outside_the_grace_ends_that_session_only(ts, conn):
    sub = f"reuse-{uuid.uuid4()}"
    victim, other = start(conn, sub), start(conn, sub)
    new = refresh(conn, victim["refresh_token"])
    interval(conn, 0)
    refused(refresh(conn, victim["refresh_token"]), "refresh_reused")
    # at once, in another connection, in both modes
    elsewhere = ts.connect(DB)
    for t in (victim["access_token"], new["access_token"]):
        both_modes(ts, elsewhere, t, "session_ended")
    refused(refresh(elsewhere, new["refresh_token"]), "session_ended")
    # the subject's other session keeps working
    valid_both_modes(ts, elsewhere, other["access_token"])
    assert_pair(ts, elsewhere, refresh(elsewhere, other["refresh_token"]), other["session_id"])
    assert live_ids(ts, elsewhere, sub) == [other["session_id"]]


def test_reuse_within_the_grace_gets_a_pair_of_the_same_session(ts, conn):
    s = start(conn, f"grace-{uuid.uuid4()}")
    interval(conn, 30)
    first = refresh(conn, s["refresh_token"])
    second = refresh(conn, s["refresh_token"])
    for p in (first, second):
        assert_pair(ts, conn, p, s["session_id"])
    assert first["refresh_token"] != second["refresh_token"]
    # each successor works once
    assert_pair(ts, conn, refresh(conn, first["refresh_token"]), s["session_id"])
    assert_pair(ts, conn, refresh(conn, second["refresh_token"]), s["session_id"])


def _refresh_at_once(ts, token, reuse_interval):
    """Two connections refresh `token` at the same instant; returns both answers."""
    conns = [ts.connect(DB) for _ in range(2)]
    for c in conns:
        interval(c, reuse_interval)
        c.execute("SELECT 1")
    barrier = threading.Barrier(2)
    out = [None, None]

    def run(i):
        barrier.wait()
        out[i] = refresh(conns[i], token)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_two_connections_refresh_one_token_at_once(ts, conn):
    for _ in range(5):
        # within the grace: both get a valid pair of the session
        s = start(conn, f"race-{uuid.uuid4()}")
        a, b = _refresh_at_once(ts, s["refresh_token"], 10)
        for p in (a, b):
            assert_pair(ts, conn, p, s["session_id"])
        assert ts.one(conn, "SELECT generation FROM token_store.sessions WHERE id = %s", (s["session_id"],)) == 2
        # outside it: exactly one wins, and the session ends
        s = start(conn, f"race-{uuid.uuid4()}")
        answers = _refresh_at_once(ts, s["refresh_token"], 0)
        winners = [p for p in answers if "access_token" in p]
        losers = [p for p in answers if "error" in p]
        assert len(winners) == 1 and len(losers) == 1, answers
        refused(losers[0], "refresh_reused")
        both_modes(ts, conn, winners[0]["access_token"], "session_ended")
        refused(refresh(conn, winners[0]["refresh_token"]), "session_ended")


def test_rotations_within_one_second_are_ordered(ts, conn):
    s = start(conn, f"order-{uuid.uuid4()}")
    chain = [s]
    # rotate until two consecutive access tokens share their iat second
    while True:
        chain.append(refresh(conn, chain[-1]["refresh_token"]))
        iats = [ts.verify(conn, p["access_token"])["iat"] for p in chain[-2:]]
        if iats[0] == iats[1] and len(chain) >= 5:
            break
        assert len(chain) < 200
    gens = ts.rows(conn, "SELECT generation FROM token_store.refresh_tokens WHERE session_id = %s "
                         "ORDER BY created_at, generation", (s["session_id"],))
    assert [g[0] for g in gens] == list(range(len(chain)))
    interval(conn, 0)
    # only the newest refresh token is good; it goes first, then an older one is a reuse
    assert_pair(ts, conn, refresh(conn, chain[-1]["refresh_token"]), s["session_id"])
    refused(refresh(conn, chain[-2]["refresh_token"]), "refresh_reused")


# ---- idle timeout and maximum lifetime ---------------------------------------------------------


def test_idle_timeout(ts, conn):
    s = start(conn, f"idle-{uuid.uuid4()}")
    conn.execute("SET token_store.session_idle_timeout = '2s'")
    time.sleep(1)
    s2 = refresh(conn, s["refresh_token"])  # a refresh in time keeps it alive
    assert_pair(ts, conn, s2, s["session_id"])
    time.sleep(2.2)
    assert live_ids(ts, conn, ts.verify(conn, s2["access_token"])["sub"]) == []
    refused(refresh(conn, s2["refresh_token"]), "session_idle")
    refused(refresh(conn, s2["refresh_token"]), "session_ended")
    both_modes(ts, conn, s2["access_token"], "session_ended")
    assert ts.one(conn, "SELECT end_reason FROM token_store.sessions WHERE id = %s", (s["session_id"],)) == "session_idle"


def test_maximum_lifetime(ts, conn):
    s = start(conn, f"max-{uuid.uuid4()}")
    conn.execute("SET token_store.session_max_lifetime = '2s'")
    p = s
    for _ in range(2):
        time.sleep(0.5)
        p = refresh(conn, p["refresh_token"])
        assert_pair(ts, conn, p, s["session_id"])
    time.sleep(1.3)
    refused(refresh(conn, p["refresh_token"]), "session_expired")
    both_modes(ts, conn, p["access_token"], "session_ended")
    assert ts.one(conn, "SELECT end_reason FROM token_store.sessions WHERE id = %s", (s["session_id"],)) == "session_expired"


def test_expired_refresh_token(ts, conn):
    s = start(conn, f"rexp-{uuid.uuid4()}", refresh_ttl="1 second")
    time.sleep(1.2)
    refused(refresh(conn, s["refresh_token"]), "expired")


# ---- purge -----------------------------------------------------------------------------------


def test_purge_deletes_ended_sessions_after_their_access_tokens(ts, conn):
    conn.execute("SET token_store.leeway = 0")
    sub = f"purge-{uuid.uuid4()}"
    ended = start(conn, sub, access_ttl="1 second")
    refresh(conn, ended["refresh_token"])
    live = start(conn, sub, access_ttl="1 second")
    fresh_end = start(conn, sub)  # ended, but its access token is still inside its ttl
    conn.execute("SELECT token_store.session_end(%s)", (ended["session_id"],))
    conn.execute("SELECT token_store.session_end(%s)", (fresh_end["session_id"],))
    time.sleep(2.1)
    ts.one(conn, "SELECT token_store.purge()")
    left = {r[0] for r in ts.rows(conn, "SELECT id::text FROM token_store.sessions WHERE subject = %s", (sub,))}
    assert left == {live["session_id"], fresh_end["session_id"]}
    assert ts.one(conn, "SELECT count(*) FROM token_store.refresh_tokens WHERE session_id = %s",
                  (ended["session_id"],)) == 0
    both_modes(ts, conn, fresh_end["access_token"], "session_ended")
    refused(refresh(conn, ended["refresh_token"]), "not_stored")


def test_worker_purges_ended_sessions(ts):
    settings = {"token_store.purge_interval": "1s", "token_store.leeway": "0"}
    ts.configure(ts.connect(), settings, {"token_store.purge_interval": "1s"})
    try:
        c = ts.connect("ts_client")
        c.execute("CREATE EXTENSION IF NOT EXISTS token_store")
        if not ts.one(c, "SELECT count(*) FROM token_store.keys WHERE kid = 'k-sess-worker'"):
            ts.create_key(c, "k-sess-worker", "HS256")
        sub = f"worker-{uuid.uuid4()}"
        ended = start(c, sub, access_ttl="1 second")
        live = start(c, sub, access_ttl="1 second")
        c.execute("SELECT token_store.session_end(%s)", (ended["session_id"],))

        def gone():
            return ts.one(c, "SELECT count(*) FROM token_store.sessions WHERE id = %s", (ended["session_id"],)) == 0

        ts.wait_for(gone, 30, "the purge worker to delete the ended session")
        assert ts.one(c, "SELECT count(*) FROM token_store.refresh_tokens WHERE session_id = %s",
                      (ended["session_id"],)) == 0
        ts.holds_for(lambda: live_ids(ts, c, sub) == [live["session_id"]], 2, "the live session stays")
    finally:
        conn = ts.wait_for(lambda: ts.connect(), 60, "a connection to restore the settings")
        ts.configure(conn, {k: None for k in settings}, {"token_store.purge_interval": "1min"})


# ---- privileges ------------------------------------------------------------------------------


def test_privileges(ts, db):
    su = ts.connect(DB)
    for role, groups in (("sess_app", ["token_store_app"]), ("sess_admin", ["token_store_admin"]), ("sess_nobody", [])):
        ts.ensure_role(role, *groups)
    try:
        app = ts.connect(DB, user="sess_app")
        sub = f"priv-{uuid.uuid4()}"
        s = start(app, sub, metadata={"device": "phone"})
        pair = refresh(app, s["refresh_token"])
        assert_pair(ts, app, pair, s["session_id"])
        assert ts.one(app, "SELECT metadata FROM token_store.sessions(%s)", (sub,)) == {"device": "phone"}
        for q in ("SELECT * FROM token_store.sessions", "SELECT metadata FROM token_store.sessions",
                  "SELECT * FROM token_store.refresh_tokens"):
            with ts.expect_error("42501"):
                app.execute(q)
        admin = ts.connect(DB, user="sess_admin")
        assert ts.one(admin, "SELECT generation FROM token_store.sessions WHERE id = %s", (s["session_id"],)) == 1
        for q in ("SELECT metadata FROM token_store.sessions", "SELECT claims FROM token_store.sessions",
                  "SELECT * FROM token_store.refresh_tokens"):
            with ts.expect_error("42501"):
                admin.execute(q)
        assert ts.one(admin, "SELECT token_store.session_end(%s)", (s["session_id"],)) is True
        # the app, with no privilege on the sessions table, sees the end through its verify
        ts.assert_rejected(app, pair["access_token"], "session_ended")
        nobody = ts.connect(DB, user="sess_nobody")
        for q, args in (("SELECT token_store.session_start(%s)", [Jsonb({"sub": "x"})]),
                        ("SELECT token_store.session_refresh(%s)", ["x"]),
                        ("SELECT token_store.session_end(%s)", [uuid.uuid4()]),
                        ("SELECT token_store.session_end_subject(%s)", ["x"]),
                        ("SELECT * FROM token_store.sessions(%s)", ["x"])):
            with ts.expect_error("42501"):
                nobody.execute(q, args)
        assert ts.one(su, "SELECT has_table_privilege('public', 'token_store.sessions', 'SELECT')") is False
    finally:
        ts.close_all()
        for role in ("sess_app", "sess_admin", "sess_nobody"):
            ts.drop_role(role)


# ---- hostile input ---------------------------------------------------------------------------


def test_hostile_refresh_tokens(ts, conn):
    s = start(conn, f"hostile-{uuid.uuid4()}")
    good = s["refresh_token"]
    rnd = random.Random(13)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    candidates = [good[:n] for n in range(len(good))]
    candidates += [good + "A", good + good, good.upper(), good.replace(REFRESH_PREFIX, "TSR_"), " " + good, good + " "]
    candidates += [REFRESH_PREFIX + "".join(rnd.choice(alphabet) for _ in range(n)) for n in range(0, 120)]
    candidates += ["x" * n for n in (0, 1, 47, 1000, 100_000, 2_000_000)]
    candidates += [chr(b) * 47 for b in range(1, 256)]
    candidates += [REFRESH_PREFIX + chr(b) * 43 for b in range(1, 256)]
    candidates += ["".join(chr(rnd.randrange(1, 0x10FFFF)) for _ in range(rnd.randrange(1, 80)))
                   .encode("utf-8", "ignore").decode("utf-8", "ignore").replace("\0", "") for _ in range(200)]
    # every bit of the random part flipped, one at a time, where the result is still text
    for i in range(len(REFRESH_PREFIX), len(good)):
        for bit in range(7):
            flipped = good[:i] + chr(ord(good[i]) ^ (1 << bit)) + good[i + 1:]
            if flipped != good and "\0" not in flipped:
                candidates.append(flipped)
    for c in candidates:
        a = refresh(conn, c)
        assert a.get("error") == "invalid_grant" and a.get("reason") in ("malformed", "not_stored"), (c[:60], a)
    # none of it touched the session: the real token still works
    assert_pair(ts, conn, refresh(conn, good), s["session_id"])
    # access tokens with a forged or odd sid are refused only when it names an ended session of ours
    # (issued and verified in two statements: a verify does not see its own statement's writes)
    assert ts.valid(conn, ts.issue(conn, {"sub": "x", "role": "r", "other": "sid"})) is True


def test_foreign_sid_is_no_reason_to_refuse(ts, conn):
    """A token of another issuer may carry an OIDC `sid`: unknown sessions do not refuse it."""
    for sid in ("not-a-uuid", str(uuid.uuid4()), "", "x" * 1000):
        t = ts.one(conn, "SELECT token_store.jwt_issue(%s)", (Jsonb({"sub": "oidc", "sid": sid}),))
        assert ts.valid(conn, t), sid


# ---- crashes -----------------------------------------------------------------------------------


def cluster_with_key(ts, make, name, port, dbname):
    """A throwaway cluster (purge paused) with database `dbname`, the extension and key KID."""
    c = make(name, port)
    c.init(dbname, {"token_store.purge_interval": "0"})
    c.start()
    c.connect().execute(f"CREATE DATABASE {dbname}")
    conn = c.connect(dbname)
    conn.execute("CREATE EXTENSION token_store")
    ts.create_key(conn, KID, "HS256")
    return c


@pytest.fixture(scope="module")
def crash_cluster(ts):
    with clusters("sessions-crash-", ts.pgbin) as make:
        yield cluster_with_key(ts, make, "sessions-crash", CRASH_PORT, "ts_sess_crash")


def _blocked(c, pid):
    return c.one("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,))


@pytest.mark.parametrize("victim", ["holder", "waiter"])
def test_kill9_in_the_middle_of_a_refresh(ts, crash_cluster, victim):
    c = crash_cluster
    conn = c.connect("ts_sess_crash")
    s = start(conn, f"crash-{uuid.uuid4()}")
    # a refresh committed before the crash stays committed
    committed = refresh(conn, s["refresh_token"])
    old = committed["refresh_token"]
    holder = c.connect("ts_sess_crash")
    holder.autocommit = False
    pending = refresh(holder, old)  # consumed, successor written, not committed: the lock is held
    assert "access_token" in pending
    waiter = c.connect("ts_sess_crash")
    waiter_pid = waiter.execute("SELECT pg_backend_pid()").fetchone()[0]
    result = {}

    def wait_refresh():
        try:
            result["answer"] = refresh(waiter, old)
        except psycopg.Error as e:
            result["error"] = e

    t = threading.Thread(target=wait_refresh)
    t.start()
    ts.wait_for(lambda: _blocked(c, waiter_pid), 20, "the second refresh to wait for the session lock")
    pid = waiter_pid if victim == "waiter" else holder.execute("SELECT pg_backend_pid()").fetchone()[0]
    c.kill9(pid)
    t.join(30)
    assert "answer" not in result, result  # the crash ended it before any answer
    conn = c.connect("ts_sess_crash")
    interval(conn, 0)
    # nothing of the interrupted refresh survived; the old token works exactly once
    refused(refresh(conn, pending["refresh_token"]), "not_stored")
    assert ts.introspect(conn, pending["access_token"]) == {"active": False, "reason": "not_stored"}
    again = refresh(conn, old)
    assert_pair(ts, conn, again, s["session_id"])
    assert ts.one(conn, "SELECT generation FROM token_store.sessions WHERE id = %s", (s["session_id"],)) == 2
    # the first refresh's token stayed consumed
    refused(refresh(conn, s["refresh_token"]), "refresh_reused")
    refused(refresh(conn, old), "refresh_reused")
    log = c.log_text()
    assert f"(PID {pid}) was terminated by signal 9" in log and "PANIC:" not in log


def test_immediate_shutdown_keeps_consumed_tokens_consumed(ts, crash_cluster):
    c = crash_cluster
    conn = c.connect("ts_sess_crash")
    s = start(conn, f"shutdown-{uuid.uuid4()}")
    n = refresh(conn, s["refresh_token"])
    as_pg(str(c.pgbin / "pg_ctl"), "-D", str(c.data), "-m", "immediate", "stop")
    c.close_all()
    c.start()
    c.wait_ready()
    conn = c.connect("ts_sess_crash")
    interval(conn, 0)
    assert_pair(ts, conn, refresh(conn, n["refresh_token"]), s["session_id"])
    refused(refresh(conn, s["refresh_token"]), "refresh_reused")


def test_reencrypt_moves_sessions(ts, crash_cluster):
    c = crash_cluster
    conn = c.connect("ts_sess_crash")
    s = start(conn, f"rekey-{uuid.uuid4()}", metadata={"device": "rekey"}, claims={"role": "r"})
    old_fp = ts.one(conn, "SELECT key_fingerprint FROM token_store.sessions WHERE id = %s", (s["session_id"],))
    old_key = (c.data / "token_store_key.conf").read_text().split("'")[1]
    new_key = os.urandom(32).hex()
    rekey(c, new_key, old_key)
    try:
        conn = c.connect("ts_sess_crash")
        while ts.one(conn, "SELECT token_store.reencrypt(1000)"):
            pass
        fp = ts.one(conn, "SELECT key_fingerprint FROM token_store.sessions WHERE id = %s", (s["session_id"],))
        assert fp != old_fp
        assert old_fp not in ts.one(conn, "SELECT rows_per_key FROM token_store.stats")
        rekey(c, new_key, None)
        conn = c.connect("ts_sess_crash")
        sub = ts.verify(conn, s["access_token"])["sub"]
        assert ts.one(conn, "SELECT metadata FROM token_store.sessions(%s)", (sub,)) == {"device": "rekey"}
        n = refresh(conn, s["refresh_token"])
        assert ts.verify(conn, n["access_token"])["role"] == "r"
    finally:
        rekey(c, None, None)


def rekey(c, key, previous):
    """ALTER SYSTEM the encryption keys (None: back to the cluster's own) and reload."""
    conn = c.connect()
    for name, value in (("token_store.encryption_key", key), ("token_store.previous_encryption_keys", previous)):
        if value is None:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
        else:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1)


# ---- standby ---------------------------------------------------------------------------------


def test_standby(ts):
    with clusters("sessions-standby-", ts.pgbin) as make:
        primary = cluster_with_key(ts, make, "primary", PRIMARY_PORT, "ts_sess_rep")
        p = primary.connect("ts_sess_rep")
        standby = make("standby", STANDBY_PORT)
        standby.base_backup_of(primary)
        standby.start()
        sub = f"rep-{uuid.uuid4()}"
        live = start(p, sub, metadata={"device": "replica"})
        ended = start(p, sub)
        p.execute("SELECT token_store.session_end(%s)", (ended["session_id"],))
        target = primary.one("SELECT pg_current_wal_lsn()")
        ts.wait_for(lambda: standby.one("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)),
                    30, "the standby to catch up")
        s = standby.connect("ts_sess_rep")
        assert ts.rows(s, "SELECT session_id::text, metadata FROM token_store.sessions(%s)", (sub,)) == [
            (live["session_id"], {"device": "replica"})]
        assert ts.valid(s, live["access_token"])
        both_modes(ts, s, ended["access_token"], "session_ended")
        for name, q, args in (
            ("session_start", "SELECT token_store.session_start(%s)", [Jsonb({"sub": sub})]),
            ("session_refresh", "SELECT token_store.session_refresh(%s)", [live["refresh_token"]]),
            ("session_refresh", "SELECT token_store.session_refresh(%s)", ["garbage"]),
            ("session_end", "SELECT token_store.session_end(%s)", [live["session_id"]]),
            ("session_end_subject", "SELECT token_store.session_end_subject(%s)", [sub]),
        ):
            with ts.expect_error("25006", f"cannot execute {name} on a hot standby"):
                s.execute(q, args)
        # nothing was consumed by the attempt on the standby
        assert_pair(ts, p, refresh(p, live["refresh_token"]), live["session_id"])
