"""Logical replication of the extension's tables to a subscriber that verifies (docs/replication.md):
a real publisher (wal_level = logical) and subscribers, each a throwaway cluster with token_store
preloaded, in a temporary directory (scripts/test.sh: its per-run one), removed at the end.

The publisher issues, stores, revokes, ends sessions and changes keys; the subscriber (same
encryption key, CREATE EXTENSION, then CREATE SUBSCRIPTION with copy_data) verifies. Its *warm*
sessions (keys parsed, relations resolved) must honour every change at their first statement after
the change is applied there; the lag from the publisher's commit to the row on the subscriber is
measured and printed (run pytest with -s to see it). The subscriber's own purge worker deletes
expired rows the publisher still has, and the publisher's later updates and deletes of those rows
do not stop the apply; a row the subscriber wrote itself does (a conflict stops every later change,
revocations included, until the local row goes). A second subscriber with another encryption key
refuses with XX001 rather than decrypting anything, until the publisher's key is given to it as a
previous key. The tests run in file order."""

import os
import statistics
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from throwaway_cluster import clusters

pytestmark = pytest.mark.slow

PUB_PORT, SUB_PORT, OTHER_PORT = 54432, 54433, 54434
DB = "ts_logical"
KID, RSA_KID = "k-logical", "k-logical-rs"
# The extension's tables a verifying subscriber needs: every table the read path and jwks() read,
# and the session tables (a session's end is a row of sessions).
TABLES = ("tokens", "signing_keys", "subject_revocations", "sessions", "refresh_tokens")
APPLY_DEADLINE = 30
LAGS: dict[str, list[float]] = {}


def key_conf(cluster) -> str:
    return (cluster.data / "token_store_key.conf").read_text()


def subscribe(cluster, publisher, name):
    """CREATE EXTENSION, then a subscription to the publication (copy_data: the rows already
    there come along); waits until every table is synchronised."""
    cluster.connect().execute(f"CREATE DATABASE {DB}")
    conn = cluster.connect(DB)
    conn.execute("CREATE EXTENSION token_store")
    conn.execute(
        f"CREATE SUBSCRIPTION {name} CONNECTION 'host=127.0.0.1 port={publisher.port} dbname={DB} user=postgres' "
        "PUBLICATION ts_pub WITH (copy_data = true)")
    deadline = time.monotonic() + APPLY_DEADLINE
    while time.monotonic() < deadline:
        states = conn.execute("SELECT srrelid::regclass::text, srsubstate FROM pg_catalog.pg_subscription_rel").fetchall()
        if len(states) == len(TABLES) and all(s == "r" for _, s in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"initial synchronisation of {name} did not finish: {states}")


@pytest.fixture(scope="module")
def topo(ts):
    with clusters("logical-", Path(os.environ["TS_PGBIN"])) as make:
        pub = make("publisher", PUB_PORT)
        # the publisher purges nothing by itself during the tests (its rows outlive the subscriber's)
        pub.init(DB, {"wal_level": "logical", "max_wal_senders": "10", "max_replication_slots": "10",
                      "token_store.purge_interval": "0", "token_store.leeway": "0"})
        pub.start()
        pub.connect().execute(f"CREATE DATABASE {DB}")
        p = pub.connect(DB)
        p.execute("CREATE EXTENSION token_store")
        secret = ts.create_key(p, KID, "HS256")
        p.execute("SELECT token_store.generate_key(%s, 'RS256')", (RSA_KID,))
        # made before the subscription: they reach the subscriber by the initial copy
        early = ts.issue(p, ts.claims(sub="lr-early", role="reader"), kid=KID)
        early_rs = ts.issue(p, ts.claims(sub="lr-early-rs"), kid=RSA_KID)
        p.execute("CREATE PUBLICATION ts_pub FOR TABLE " + ", ".join(f"token_store.{t}" for t in TABLES))

        sub = make("subscriber", SUB_PORT)
        # its own purge worker acts within a second; apply restarts a second after an error
        sub.init(DB, {"token_store.purge_interval": "1s", "token_store.leeway": "0",
                      "wal_retrieve_retry_interval": "'1s'"})
        (sub.data / "token_store_key.conf").write_text(key_conf(pub))  # the same encryption key
        sub.start()
        subscribe(sub, pub, "ts_sub")

        other = make("other-key", OTHER_PORT)
        other.init(DB, {"token_store.purge_interval": "0"})  # its own, different encryption key
        other.start()
        subscribe(other, pub, "ts_sub_other")
        yield {"pub": pub, "sub": sub, "other": other, "secret": secret, "early": early, "early_rs": early_rs}
        if LAGS:
            print("\nlogical replication lag, publisher commit -> row visible on the subscriber (ms):")
            for what, lags in LAGS.items():
                ms = [x * 1000 for x in lags]
                print(f"  {what}: n={len(ms)} median={statistics.median(ms):.1f} max={max(ms):.1f}")


@pytest.fixture(autouse=True)
def _close_sessions(topo):
    yield
    for c in ("pub", "sub", "other"):
        topo[c].close_all()


def applied(ts, poll, query, params, want, what):
    """Poll the subscriber (`poll`, an autocommit session that verifies nothing) until `query`
    returns `want`; record and return the time since the caller's commit (`what` names it)."""
    start = applied.committed_at
    deadline = time.monotonic() + APPLY_DEADLINE
    while True:
        got = ts.one(poll, query, params) if params is not None else ts.one(poll, query)
        if got == want:
            lag = time.monotonic() - start
            LAGS.setdefault(what, []).append(lag)
            print(f"lag {what}: {lag * 1000:.1f} ms")
            return lag
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not applied on the subscriber within {APPLY_DEADLINE}s ({query} gave {got!r})")
        time.sleep(0.005)


def commit(conn, query, params=None):
    """Run `query` (autocommit) on the publisher and note when it returned."""
    row = conn.execute(query, params).fetchone()
    applied.committed_at = time.monotonic()
    return row[0] if row else None


def warm(ts, conn, *tokens):
    for _ in range(3):
        for t in tokens:
            assert ts.valid(conn, t) is True


def test_initial_copy_verifies_and_decrypts(ts, topo):
    """copy_data brings the rows the publisher had: its tokens verify, payloads decrypt, jwks agree."""
    p, s = topo["pub"].connect(DB), topo["sub"].connect(DB)
    assert ts.verify(s, topo["early"])["role"] == "reader"
    assert ts.valid(s, topo["early_rs"]) is True
    token_id = ts.introspect(s, topo["early"])["token_id"]
    assert ts.one(s, "SELECT token_store.jwt_payload(%s::uuid) ->> 'sub'", (token_id,)) == "lr-early"
    assert ts.one(s, "SELECT token_store.jwks()") == ts.one(p, "SELECT token_store.jwks()")
    for t in TABLES:
        assert ts.one(s, f"SELECT count(*) FROM token_store.{t}") == ts.one(p, f"SELECT count(*) FROM token_store.{t}")


def test_revocations_reach_warm_subscriber_sessions(ts, topo):
    p, s = topo["pub"].connect(DB), topo["sub"].connect(DB)
    poll = topo["sub"].connect(DB)
    secret = topo["secret"]
    token = ts.issue(p, ts.claims(sub="lr-dave"), kid=KID)
    by_id = ts.issue(p, ts.claims(sub="lr-dave-2"), kid=KID)
    # deny-list in the subscriber session: this token of the subject is stored nowhere
    sub_claims = ts.claims(sub="lr-erin")
    sub_claims["iat"] -= 5
    of_subject = ts.mint(sub_claims, secret, "HS256", KID)
    commit(p, "SELECT 1")
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject IN ('lr-dave', 'lr-dave-2')", None, 2,
            "jwt_issue")
    s.execute("SET token_store.require_stored = off")
    warm(ts, s, token, by_id, of_subject)

    commit(p, "SELECT token_store.jwt_revoke(%s, 'logout')", (token,))
    applied(ts, poll, "SELECT revoked_at IS NOT NULL FROM token_store.tokens WHERE subject = 'lr-dave'", None, True,
            "jwt_revoke")
    ts.assert_rejected(s, token, "revoked")

    token_id = ts.introspect(p, by_id)["token_id"]
    commit(p, "SELECT token_store.jwt_revoke_id(%s::uuid)", (token_id,))
    applied(ts, poll, "SELECT revoked_at IS NOT NULL FROM token_store.tokens WHERE id = %s::uuid", (token_id,), True,
            "jwt_revoke_id")
    ts.assert_rejected(s, by_id, "revoked")

    commit(p, "SELECT token_store.jwt_revoke_subject('lr-erin', 'password changed')")
    applied(ts, poll, "SELECT count(*) FROM token_store.subject_revocations WHERE subject = 'lr-erin'", None, 1,
            "jwt_revoke_subject")
    ts.assert_rejected(s, of_subject, "subject_revoked")


def test_session_end_reaches_warm_subscriber_session(ts, topo):
    p, s = topo["pub"].connect(DB), topo["sub"].connect(DB)
    poll = topo["sub"].connect(DB)
    pair = commit(p, "SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": "lr-sess"}), KID))
    sid = pair["session_id"]
    applied(ts, poll, "SELECT count(*) FROM token_store.sessions WHERE id = %s::uuid", (sid,), 1, "session_start")
    warm(ts, s, pair["access_token"])
    assert ts.verify(s, pair["access_token"])["sid"] == sid
    # the live sessions of a subject, read on the subscriber (metadata decrypts there)
    assert [str(r[0]) for r in ts.rows(s, "SELECT session_id FROM token_store.sessions('lr-sess')")] == [sid]

    commit(p, "SELECT token_store.session_end(%s::uuid, 'logout')", (sid,))
    applied(ts, poll, "SELECT ended_at IS NOT NULL FROM token_store.sessions WHERE id = %s::uuid", (sid,), True,
            "session_end")
    ts.assert_rejected(s, pair["access_token"], "session_ended")


def test_key_changes_reach_warm_subscriber_sessions(ts, topo):
    """The apply worker runs with session_replication_role = replica: no statement trigger fires
    there, yet a warm subscriber session honours each key change at its first statement after the
    change is applied, on the kid path and the kid-less path."""
    p, s = topo["pub"].connect(DB), topo["sub"].connect(DB)
    poll = topo["sub"].connect(DB)
    kid = "k-logical-rot"
    secret = ts.create_key(p, kid, "HS384")
    token = ts.issue(p, ts.claims(sub="lr-rot"), kid=kid)
    kidless = ts.mint(ts.claims(sub="lr-rot"), secret, "HS384")
    commit(p, "SELECT token_store.jwt_store(%s) IS NOT NULL", (kidless,))
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject = 'lr-rot'", None, 2, "jwt_store")
    warm(ts, s, token, kidless, topo["early"])
    state = "SELECT state FROM token_store.keys WHERE kid = %s"

    commit(p, "SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    applied(ts, poll, state, (kid,), "retired", "set_key_state")
    ts.assert_rejected(s, token, "unknown_key")
    assert ts.valid(s, kidless) is False

    commit(p, "SELECT token_store.set_key_state(%s, 'active')", (kid,))
    applied(ts, poll, state, (kid,), "active", "set_key_state")
    assert ts.valid(s, token) is True and ts.valid(s, kidless) is True

    commit(p, "DELETE FROM token_store.signing_keys WHERE kid = %s RETURNING 1", (kid,))
    applied(ts, poll, "SELECT count(*) FROM token_store.keys WHERE kid = %s", (kid,), 0, "DELETE of a key")
    ts.assert_rejected(s, token, "unknown_key")
    assert ts.valid(s, kidless) is False

    # a key the warm session has never seen: created, and a token of it stored, on the publisher
    new_kid = "k-logical-new"
    new_secret = ts.new_secret("HS384")
    ts.create_key(p, new_kid, "HS384", new_secret)
    fresh = ts.mint(ts.claims(sub="lr-new"), new_secret, "HS384", new_kid)
    fresh_kidless = ts.mint(ts.claims(sub="lr-new"), new_secret, "HS384")
    ts.store(p, fresh)
    commit(p, "SELECT token_store.jwt_store(%s) IS NOT NULL", (fresh_kidless,))
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject = 'lr-new'", None, 2, "create_key")
    assert ts.valid(s, fresh) is True
    assert ts.valid(s, fresh_kidless) is True
    assert ts.verify(s, fresh)["sub"] == "lr-new"
    assert ts.valid(s, topo["early"]) is True
    # the subscriber's fresh sessions agree with its warm one
    fresh_s = topo["sub"].connect(DB)
    assert ts.valid(fresh_s, fresh) is True and ts.valid(fresh_s, token) is False


def test_synchronous_revocation_to_the_subscriber(ts, topo):
    """With the subscription named in the publisher's synchronous_standby_names and
    token_store.synchronous_revocation on, a revocation returns once the subscriber has applied it:
    the warm subscriber session refuses at once, without waiting."""
    pub, p, s = topo["pub"], topo["pub"].connect(DB), topo["sub"].connect(DB)
    token = ts.issue(p, ts.claims(sub="lr-sync"), kid=KID)
    pub.configure({"synchronous_standby_names": "ts_sub"})
    try:
        ts.wait_for(lambda: pub.one("SELECT sync_state FROM pg_catalog.pg_stat_replication "
                                    "WHERE application_name = 'ts_sub'") == "sync", 20,
                    "the subscription to become a synchronous standby")
        assert ts.one(p, "SELECT token_store.jwt_valid(%s)", (token,)) is True
        ts.wait_for(lambda: ts.valid(s, token), APPLY_DEADLINE, "the token to reach the subscriber")
        warm(ts, s, token)
        p.execute("SET token_store.synchronous_revocation = on")
        assert ts.revoke(p, token, "sync") is True
        ts.assert_rejected(s, token, "revoked")
    finally:
        pub.configure({"synchronous_standby_names": None})


def test_read_only_role_on_the_subscriber(ts, topo):
    """A role kept from writing on the subscriber (default_transaction_read_only) verifies, and
    every write of the extension fails there with 25006 instead of diverging from the publisher."""
    sub, p = topo["sub"], topo["pub"].connect(DB)
    token = ts.issue(p, ts.claims(sub="lr-reader"), kid=KID)
    admin = sub.connect(DB)
    admin.execute("DROP ROLE IF EXISTS ts_lr_reader")
    admin.execute("CREATE ROLE ts_lr_reader LOGIN IN ROLE token_store_app")
    admin.execute("ALTER ROLE ts_lr_reader SET default_transaction_read_only = on")
    ts.wait_for(lambda: ts.valid(admin, token), APPLY_DEADLINE, "the token to reach the subscriber")
    reader = psycopg.connect(host="127.0.0.1", port=sub.port, dbname=DB, user="ts_lr_reader", autocommit=True)
    try:
        assert ts.verify(reader, token)["sub"] == "lr-reader"
        assert ts.introspect(reader, token)["active"] is True
        assert ts.one(reader, "SELECT pg_catalog.txid_current_if_assigned()") is None
        writes = [("SELECT token_store.jwt_issue(%s)", (Jsonb({"sub": "lr-reader"}),)),
                  ("SELECT token_store.jwt_revoke(%s)", (token,)),
                  ("SELECT token_store.jwt_revoke_subject('lr-reader')", None),
                  ("SELECT token_store.session_start(%s)", (Jsonb({"sub": "lr-reader"}),))]
        for query, params in writes:
            with ts.expect_error("25006"):
                reader.execute(query, params)
        assert ts.valid(reader, token) is True
    finally:
        reader.close()
        admin.execute("DROP ROLE ts_lr_reader")


def test_subscriber_purge_does_not_break_apply(ts, topo):
    """The subscriber's purge worker deletes expired rows the publisher still has. The publisher's
    later UPDATE (a revocation) and DELETE (its own purge) of those rows find nothing there: the
    apply skips them (PostgreSQL 18 counts them as update_missing / delete_missing conflicts), and
    every later change still applies."""
    p, s, poll = topo["pub"].connect(DB), topo["sub"].connect(DB), topo["sub"].connect(DB)
    sub_name = f"lr-expiring-{uuid.uuid4().hex[:8]}"
    commit(p, "SELECT count(token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second', %s)) "
              "FROM generate_series(1, 5) g", (sub_name, KID))
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub_name,), 5, "jwt_issue x5")
    ids = [r[0] for r in ts.rows(p, "SELECT id FROM token_store.tokens WHERE subject = %s ORDER BY id", (sub_name,))]
    # the subscriber's worker (purge_interval 1s) purges them once expired; the publisher's does not run
    ts.wait_for(lambda: ts.one(poll, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub_name,)) == 0,
                20, "the subscriber's purge worker to delete the expired rows")
    assert ts.one(p, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub_name,)) == 5
    stats_before = subscription_stats(ts, poll)

    live = ts.issue(p, ts.claims(sub="lr-after-purge"), kid=KID)
    commit(p, "SELECT 1")
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject = 'lr-after-purge'", None, 1, "jwt_issue")
    warm(ts, s, live)
    # an UPDATE and DELETEs of rows the subscriber no longer has
    assert ts.one(p, "SELECT token_store.jwt_revoke_id(%s)", (ids[0],)) is True
    assert ts.one(p, "SELECT token_store.purge()") >= 5
    commit(p, "SELECT token_store.jwt_revoke(%s)", (live,))
    applied(ts, poll, "SELECT revoked_at IS NOT NULL FROM token_store.tokens WHERE subject = 'lr-after-purge'", None,
            True, "jwt_revoke after missing rows")
    ts.assert_rejected(s, live, "revoked")

    stats = subscription_stats(ts, poll)
    assert stats["apply_error_count"] == stats_before["apply_error_count"], stats
    assert ts.one(poll, "SELECT pid IS NOT NULL FROM pg_catalog.pg_stat_subscription "
                        "WHERE subname = 'ts_sub' AND relid IS NULL") is True
    if "confl_delete_missing" in stats:  # PostgreSQL 18 counts what it skipped (reported within a second or so)
        def counted():
            now = subscription_stats(ts, poll)
            return (now["confl_update_missing"] - stats_before["confl_update_missing"] == 1
                    and now["confl_delete_missing"] - stats_before["confl_delete_missing"] >= 5)
        ts.wait_for(counted, 15, "the update_missing and delete_missing conflicts to be counted")


def subscription_stats(ts, conn, name="ts_sub") -> dict:
    # the counters are reported by the apply worker; a snapshot of them is cached per transaction
    cur = conn.execute("SELECT * FROM pg_catalog.pg_stat_subscription_stats WHERE subname = %s", (name,))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def test_local_write_on_subscriber_conflicts_and_stops_apply(ts, topo):
    """What the subscriber may not do: write the replicated tables itself. A key made there under a
    kid the publisher then makes too is a unique violation for the apply worker: it stops, retries,
    and no later change arrives (a revocation included) until the local row is removed."""
    p, s, poll = topo["pub"].connect(DB), topo["sub"].connect(DB), topo["sub"].connect(DB)
    token = ts.issue(p, ts.claims(sub="lr-conflict"), kid=KID)
    commit(p, "SELECT 1")
    applied(ts, poll, "SELECT count(*) FROM token_store.tokens WHERE subject = 'lr-conflict'", None, 1, "jwt_issue")
    warm(ts, s, token)
    errors_before = subscription_stats(ts, poll)["apply_error_count"]

    ts.create_key(s, "k-logical-dup", "HS256")  # a local write on the subscriber
    ts.create_key(p, "k-logical-dup", "HS256")
    assert ts.revoke(p, token) is True
    ts.wait_for(lambda: subscription_stats(ts, topo["sub"].connect(DB))["apply_error_count"] > errors_before, 20,
                "the apply worker to fail on the conflicting key")
    # the revocation committed after the conflicting row does not arrive
    ts.holds_for(lambda: ts.valid(s, token) is True, 2, "the token stays valid on the stalled subscriber")
    log = topo["sub"].log_text()
    # 15-17: the unique violation itself; 18 reports it as an insert_exists conflict
    assert ("duplicate key value violates unique constraint" in log
            or 'conflict detected on relation "token_store.signing_keys": conflict=insert_exists' in log), log[-2000:]

    s.execute("DELETE FROM token_store.signing_keys WHERE kid = 'k-logical-dup'")
    commit(p, "SELECT 1")
    applied(ts, poll, "SELECT revoked_at IS NOT NULL FROM token_store.tokens WHERE subject = 'lr-conflict'", None,
            True, "revocation after a conflict resolved (includes the apply worker's restart)")
    ts.assert_rejected(s, token, "revoked")
    assert ts.one(s, "SELECT count(*) FROM token_store.keys WHERE kid = 'k-logical-dup'") == 1


def test_subscriber_with_another_encryption_key_decrypts_nothing(ts, topo):
    """A subscriber whose encryption key is not the publisher's: every read that needs the sealed
    key material or a payload raises XX001 and returns nothing; given the publisher's key as a
    previous key, it verifies and decrypts."""
    other = topo["other"]
    p, o = topo["pub"].connect(DB), other.connect(DB)
    token = ts.issue(p, ts.claims(sub="lr-other", secret_claim="s3cr3t-claim"), kid=KID)
    pair = ts.one(p, "SELECT token_store.session_start(%s, metadata => %s, kid => %s)",
                  (Jsonb({"sub": "lr-other-sess"}), Jsonb({"device": "lr-device"}), KID))
    commit(p, "SELECT 1")
    applied(ts, o, "SELECT count(*) FROM token_store.sessions WHERE subject = 'lr-other-sess'", None, 1,
            "other-key subscriber")
    token_id = ts.one(p, "SELECT id FROM token_store.tokens WHERE subject = 'lr-other'")

    calls = {
        "jwt_verify": ("SELECT token_store.jwt_verify(%s)", (token,)),
        "jwt_verify RS256": ("SELECT token_store.jwt_verify(%s)", (topo["early_rs"],)),
        "jwt_payload": ("SELECT token_store.jwt_payload(%s)", (token_id,)),
        "sessions": ("SELECT metadata FROM token_store.sessions('lr-other-sess')", None),
        # not a refusal of the token (false, or inactive): the server cannot judge it at all
        "jwt_valid": ("SELECT token_store.jwt_valid(%s)", (token,)),
        "jwt_introspect": ("SELECT token_store.jwt_introspect(%s)", (token,)),
        "session access token": ("SELECT token_store.jwt_valid(%s)", (pair["access_token"],)),
    }
    for name, (query, params) in calls.items():
        with pytest.raises(psycopg.Error) as info:
            o.execute(query, params).fetchall()
        err = info.value
        assert err.sqlstate == "XX001", f"{name}: {err.sqlstate} {err}"
        text = f"{err.diag.message_primary} {err.diag.message_detail} {err.diag.message_hint}"
        assert "s3cr3t-claim" not in text and "lr-device" not in text, text

    pub_key = key_conf(topo["pub"]).split("'")[1]
    o.execute(sql.SQL("ALTER SYSTEM SET token_store.previous_encryption_keys = {}").format(sql.Literal(pub_key)))
    o.execute("SELECT pg_catalog.pg_reload_conf()")
    ts.wait_for(lambda: ts.valid(other.connect(DB), token), 20, "the reload to give the subscriber the previous key")
    o2 = other.connect(DB)
    assert ts.verify(o2, token)["secret_claim"] == "s3cr3t-claim"
    assert ts.one(o2, "SELECT token_store.jwt_payload(%s) ->> 'sub'", (token_id,)) == "lr-other"
    assert ts.one(o2, "SELECT metadata FROM token_store.sessions('lr-other-sess')") == {"device": "lr-device"}
    # the session that connected before the reload takes the new setting at its next statement
    assert ts.valid(o, token) is True
