"""The read path without SQL: jwt_verify, jwt_valid and jwt_introspect read the tables by index
probes and keep the keys and the relations' OIDs per backend. What must hold whatever the caches:

- A change committed in session A (a key retired or created, a token or subject revoked) is seen by
  a warm session B at its very next statement, on the kid path and the kid-less path alike.
- Inside one transaction a verification sees the transaction's own writes of earlier statements (a
  stored or revoked token, a new key), not those of its own statement (it is STABLE), and a
  rolled-back key leaves nothing behind in the cache.
- DROP/CREATE EXTENSION, VACUUM FULL, CLUSTER, REINDEX (also CONCURRENTLY, which gives the index a
  new OID) and TRUNCATE in another session never leave a warm backend reading a stale relation.
- The three functions are SECURITY INVOKER without a per-call search_path, still executable only by
  token_store_app and token_store_admin, and work for a role that has no privilege on the tables.
"""

import psycopg
import psycopg.types.json
import pytest
from psycopg import sql

DB = "ts_t_read_path"


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB) as name:
        yield name


def warm(ts, conn, *tokens):
    """Verify each token a few times in `conn`: its key set, parsed keys and relations are cached."""
    for _ in range(3):
        for t in tokens:
            assert ts.valid(conn, t) is True


def test_functions_are_invoker_without_search_path(ts, db):
    conn = ts.connect(db)
    rows = ts.rows(
        conn,
        "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'token_store' AND p.proname IN ('jwt_verify', 'jwt_valid', 'jwt_introspect') "
        "ORDER BY 1",
    )
    assert rows == [("jwt_introspect", False, None), ("jwt_valid", False, None), ("jwt_verify", False, None)]
    # EXECUTE: the two roles only (no PUBLIC entry in the ACL)
    for fn in ("jwt_verify(text, text, text)", "jwt_valid(text)", "jwt_introspect(text)"):
        acl = ts.one(conn, f"SELECT proacl::text[] FROM pg_catalog.pg_proc WHERE oid = 'token_store.{fn}'::regprocedure")
        grantees = sorted(a.split("=")[0] for a in acl)
        assert "" not in grantees, acl
        assert {"token_store_app", "token_store_admin"} <= set(grantees), acl


def test_app_role_without_table_privileges_verifies(ts, db):
    a = ts.connect(db)
    secret = ts.create_key(a, "rp-app", "HS256")
    token = ts.mint(ts.claims(sub="rp-app"), secret, "HS256", "rp-app")
    ts.store(a, token)
    ts.ensure_role("ts_t_rp_app", "token_store_app")
    ts.ensure_role("ts_t_rp_nobody")
    try:
        app = ts.connect(db, user="ts_t_rp_app")
        with ts.expect_error("42501"):
            app.execute("SELECT count(*) FROM token_store.tokens")
        assert ts.valid(app, token) is True
        assert ts.introspect(app, token)["active"] is True
        assert ts.verify(app, token)["sub"] == "rp-app"
        nobody = ts.connect(db, user="ts_t_rp_nobody")
        for call in ("jwt_valid(%s)", "jwt_verify(%s)", "jwt_introspect(%s)"):
            with ts.expect_error("42501"):
                nobody.execute(f"SELECT token_store.{call}", (token,))
    finally:
        ts.close_all()
        ts.drop_role("ts_t_rp_app")
        ts.drop_role("ts_t_rp_nobody")


def test_search_path_of_caller_is_irrelevant(ts, db):
    a = ts.connect(db)
    secret = ts.create_key(a, "rp-path", "HS256")
    token = ts.mint(ts.claims(sub="rp-path"), secret, "HS256", "rp-path")
    ts.store(a, token)
    b = ts.connect(db)
    # a schema of look-alike tables first in the caller's path: the probes never see them
    b.execute("DROP SCHEMA IF EXISTS rp_fake CASCADE")
    b.execute("CREATE SCHEMA rp_fake")
    b.execute("CREATE TABLE rp_fake.tokens (LIKE token_store.tokens)")
    b.execute("CREATE TABLE rp_fake.signing_keys (LIKE token_store.signing_keys)")
    b.execute("SET search_path = rp_fake, public")
    assert ts.valid(b, token) is True
    b.execute("RESET search_path")
    b.execute("DROP SCHEMA rp_fake CASCADE")


def test_key_retired_in_other_session_refused_at_once(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    secret = ts.create_key(a, "rp-retire", "HS256")
    token = ts.mint(ts.claims(sub="rp-retire"), secret, "HS256", "rp-retire")
    kidless = ts.mint(ts.claims(sub="rp-retire-nokid"), secret, "HS256")
    ts.store(a, token)
    ts.store(a, kidless)
    warm(ts, b, token, kidless)

    a.execute("SELECT token_store.set_key_state('rp-retire', 'retired')")
    ts.assert_rejected(b, token, "unknown_key")
    assert ts.valid(b, kidless) is False

    a.execute("SELECT token_store.set_key_state('rp-retire', 'verify_only')")
    assert ts.valid(b, token) is True
    assert ts.valid(b, kidless) is True


def test_token_revoked_in_other_session_refused_at_once(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    secret = ts.create_key(a, "rp-revoke", "HS256")
    token = ts.mint(ts.claims(sub="rp-revoke"), secret, "HS256", "rp-revoke")
    ts.store(a, token)
    warm(ts, b, token)
    assert ts.revoke(a, token) is True
    ts.assert_rejected(b, token, "revoked")


def test_subject_revoked_in_other_session_refused_at_once(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    secret = ts.create_key(a, "rp-subject", "HS256")
    # deny-list mode in B: the unstored token is refused for its subject alone
    ts.set_guc(b, "token_store.require_stored", "off")
    claims = ts.claims(sub="rp-subject-sub")
    claims["iat"] -= 5  # issued before the revocation below, whatever the clock's resolution
    token = ts.mint(claims, secret, "HS256", "rp-subject")
    warm(ts, b, token)
    a.execute("SELECT token_store.jwt_revoke_subject('rp-subject-sub')")
    ts.assert_rejected(b, token, "subject_revoked")
    other = ts.mint(ts.claims(sub="rp-subject-other"), secret, "HS256", "rp-subject")
    assert ts.valid(b, other) is True


def test_key_created_in_other_session_verifies_kidless_at_once(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    first = ts.create_key(a, "rp-nokid-1", "HS384")
    t1 = ts.mint(ts.claims(sub="rp-nokid"), first, "HS384")
    ts.store(a, t1)
    warm(ts, b, t1)  # B has the HS384 key list cached: one key

    second = ts.create_key(a, "rp-nokid-2", "HS384")
    t2 = ts.mint(ts.claims(sub="rp-nokid"), second, "HS384")
    ts.store(a, t2)
    assert ts.valid(b, t2) is True
    assert ts.verify(b, t2)["sub"] == "rp-nokid"
    # and with its kid
    t3 = ts.mint(ts.claims(sub="rp-nokid"), second, "HS384", "rp-nokid-2")
    ts.store(a, t3)
    assert ts.valid(b, t3) is True

    a.execute("SELECT token_store.set_key_state('rp-nokid-2', 'retired')")
    ts.assert_rejected(b, t2, "bad_signature")  # only rp-nokid-1 is left to try
    assert ts.valid(b, t1) is True


def test_own_writes_in_one_transaction(ts, db):
    a = ts.connect(db)
    secret = ts.create_key(a, "rp-tx", "HS256")
    b = ts.connect(db)
    token = ts.mint(ts.claims(sub="rp-tx"), secret, "HS256", "rp-tx")
    warm_token = ts.mint(ts.claims(sub="rp-tx-warm"), secret, "HS256", "rp-tx")
    ts.store(a, warm_token)
    warm(ts, b, warm_token)
    with b.transaction():  # introspect, not verify: an ERROR would end the transaction
        assert ts.introspect(b, token) == {"active": False, "reason": "not_stored"}
        ts.store(b, token)
        assert ts.valid(b, token) is True
        assert ts.introspect(b, token)["active"] is True
        assert ts.revoke(b, token) is True
        assert ts.introspect(b, token) == {"active": False, "reason": "revoked"}
    ts.assert_rejected(b, token, "revoked")
    # the same inside one PL/pgSQL block: each statement there reads under its own snapshot
    other = ts.mint(ts.claims(sub="rp-tx-2"), secret, "HS256", "rp-tx")
    b.execute(
        """
        CREATE FUNCTION pg_temp.rp_steps(t text) RETURNS text[] LANGUAGE plpgsql AS $$
        DECLARE out text[] := '{}';
        BEGIN
            out := out || (token_store.jwt_introspect(t) ->> 'reason');
            PERFORM token_store.jwt_store(t);
            out := out || (token_store.jwt_valid(t))::text;
            PERFORM token_store.jwt_revoke(t);
            out := out || (token_store.jwt_introspect(t) ->> 'reason');
            RETURN out;
        END $$
        """
    )
    got = ts.one(b, "SELECT pg_temp.rp_steps(%s)", (other,))
    assert got == ["not_stored", "true", "revoked"]


def test_a_verify_nested_in_a_writing_statement_reads_its_snapshot(ts, db):
    """jwt_verify, jwt_valid and jwt_introspect are STABLE and read under the statement's snapshot,
    like any STABLE function (and a SELECT in the same statement): a row written by the statement
    itself (a token issued, a revocation) is not seen there, and is seen by the next statement."""
    a = ts.connect(db)
    ts.create_key(a, "rp-nest", "HS256")
    def claims(sub):  # each token its own (ts.claims carries a jti)
        return psycopg.types.json.Jsonb(ts.claims(sub=sub))

    token, valid = a.execute("SELECT t, token_store.jwt_valid(t) "
                             "FROM (SELECT token_store.jwt_issue(%s, '1 minute', 'rp-nest') t OFFSET 0) s",
                             (claims("rp-nest-1"),)).fetchone()
    assert valid is False
    assert ts.one(a, "SELECT token_store.jwt_introspect(%s) ->> 'reason'", (token,)) is None
    assert ts.valid(a, token) is True
    with ts.expect_error("28000", "token rejected: not_stored"):
        ts.one(a, "SELECT token_store.jwt_verify(token_store.jwt_issue(%s, '1 minute', 'rp-nest')) ->> 'sub'",
               (claims("rp-nest"),))
    token = ts.issue(a, ts.claims(sub="rp-nest-2"), kid="rp-nest")
    assert ts.one(a, "SELECT token_store.jwt_introspect(%s) ->> 'active' "
                     "FROM (SELECT token_store.jwt_revoke(%s)) r", (token, token)) == "true"
    assert ts.one(a, "SELECT token_store.jwt_introspect(%s) ->> 'reason'", (token,)) == "revoked"
    # UPDATE ... SET x = jwt_valid(...): no command-counter bump inside the outer UPDATE
    a.execute("CREATE TEMP TABLE rp_nest_t (tok text, ok boolean)")
    a.execute("INSERT INTO rp_nest_t VALUES (%s, NULL), ('garbage', NULL)", (ts.issue(a, ts.claims(sub="rp-n3"), kid="rp-nest"),))
    a.execute("UPDATE rp_nest_t SET ok = token_store.jwt_valid(tok)")
    assert ts.rows(a, "SELECT tok = 'garbage', ok FROM rp_nest_t ORDER BY 1") == [(False, True), (True, False)]


def test_key_made_in_transaction_verifies_there_and_vanishes_on_rollback(ts, db):
    b = ts.connect(db)
    warm_secret = ts.create_key(b, "rp-rb-warm", "HS256")
    warm_token = ts.mint(ts.claims(sub="rp-rb"), warm_secret, "HS256", "rp-rb-warm")
    ts.store(b, warm_token)
    warm(ts, b, warm_token)
    secret = ts.new_secret("HS256")
    token = ts.mint(ts.claims(sub="rp-rb"), secret, "HS256", "rp-rb")
    kidless = ts.mint(ts.claims(sub="rp-rb"), secret, "HS256")
    b.execute("SET token_store.require_stored = off")
    try:
        with b.transaction(force_rollback=True):
            ts.create_key(b, "rp-rb", "HS256", secret)
            assert ts.valid(b, token) is True
            assert ts.valid(b, kidless) is True
            assert ts.valid(b, warm_token) is True
        ts.assert_rejected(b, token, "unknown_key")
        assert ts.valid(b, kidless) is False
        assert ts.valid(b, warm_token) is True
    finally:
        b.execute("RESET token_store.require_stored")


def test_drop_and_create_extension_in_other_session(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    old_secret = ts.create_key(a, "rp-drop", "HS256")
    old = ts.mint(ts.claims(sub="rp-drop"), old_secret, "HS256", "rp-drop")
    ts.store(a, old)
    warm(ts, b, old)

    a.execute("DROP EXTENSION token_store")
    a.execute("CREATE EXTENSION token_store")
    ts.assert_rejected(b, old, "unknown_key")  # new, empty tables
    new_secret = ts.create_key(a, "rp-drop", "HS256")  # the same kid, another secret
    ts.assert_rejected(b, old, "bad_signature")
    new = ts.mint(ts.claims(sub="rp-drop"), new_secret, "HS256", "rp-drop")
    ts.assert_rejected(b, new, "not_stored")
    ts.store(a, new)
    assert ts.valid(b, new) is True
    assert ts.revoke(a, new) is True
    ts.assert_rejected(b, new, "revoked")


@pytest.mark.parametrize(
    "maintenance",
    [
        "VACUUM FULL token_store.{t}",
        "CLUSTER token_store.{t} USING {pk}",
        "REINDEX TABLE token_store.{t}",
        "REINDEX TABLE CONCURRENTLY token_store.{t}",
        "REINDEX INDEX CONCURRENTLY token_store.{pk}",
    ],
)
def test_maintenance_in_other_session(ts, db, maintenance):
    a, b = ts.connect(db), ts.connect(db)
    kid = f"rp-maint-{abs(hash(maintenance)) % 10**8}"
    secret = ts.create_key(a, kid, "HS256")
    stored = ts.mint(ts.claims(sub=kid), secret, "HS256", kid)
    kidless = ts.mint(ts.claims(sub=kid), secret, "HS256")
    revoked = ts.mint(ts.claims(sub=kid), secret, "HS256", kid)
    unstored = ts.mint(ts.claims(sub=kid), secret, "HS256", kid)
    for t in (stored, kidless, revoked):
        ts.store(a, t)
    ts.revoke(a, revoked)
    warm(ts, b, stored, kidless)

    for table, pk in (
        ("tokens", "tokens_token_hash_key"),
        ("signing_keys", "signing_keys_pkey"),
        ("subject_revocations", "subject_revocations_pkey"),
    ):
        a.execute(maintenance.format(t=table, pk=pk))
        assert ts.valid(b, stored) is True, (maintenance, table)
        assert ts.valid(b, kidless) is True, (maintenance, table)
        ts.assert_rejected(b, revoked, "revoked")
        ts.assert_rejected(b, unstored, "not_stored")
    # the OIDs the warm session now uses are the current ones: a revocation reaches it
    a.execute("SELECT token_store.jwt_revoke_subject(%s)", (kid,))
    ts.assert_rejected(b, stored, "revoked")


def test_truncate_in_other_session(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    secret = ts.create_key(a, "rp-trunc", "HS256")
    token = ts.mint(ts.claims(sub="rp-trunc"), secret, "HS256", "rp-trunc")
    ts.store(a, token)
    warm(ts, b, token)

    a.execute("TRUNCATE token_store.tokens")
    ts.assert_rejected(b, token, "not_stored")
    ts.store(a, token)
    assert ts.valid(b, token) is True

    a.execute("SELECT token_store.jwt_revoke_subject('rp-trunc-nobody')")
    a.execute("TRUNCATE token_store.subject_revocations")
    assert ts.valid(b, token) is True

    # a plain TRUNCATE of the keys table (not through the key functions) empties B's key set too
    a.execute("TRUNCATE token_store.signing_keys")
    ts.assert_rejected(b, token, "unknown_key")


def test_issue_in_warm_session_follows_key_changes_at_once(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    ts.create_key(a, "rp-issue-old", "HS256")
    first = ts.issue(b, {"sub": "rp-issue"})  # B's key set is warm
    assert ts.verify(b, first)["sub"] == "rp-issue"
    assert ts.one(b, "SELECT token_store.jwt_introspect(%s)->>'active'", (first,)) == "true"

    ts.create_key(a, "rp-issue-new", "HS256")
    newest = ts.issue(b, {"sub": "rp-issue"})  # signed with the newest active key at once
    assert ts.one(b, "SELECT kid FROM token_store.tokens WHERE token_hash = sha256(%s::bytea)", (newest,)) == "rp-issue-new"

    a.execute("SELECT token_store.set_key_state('rp-issue-new', 'verify_only')")
    again = ts.issue(b, {"sub": "rp-issue"})
    assert ts.one(b, "SELECT kid FROM token_store.tokens WHERE token_hash = sha256(%s::bytea)", (again,)) != "rp-issue-new"
    with ts.expect_error("55000"):
        ts.issue(b, {"sub": "rp-issue"}, kid="rp-issue-new")


def test_key_made_earlier_in_the_same_statement_signs_and_stores(ts, db):
    a = ts.connect(db)
    ts.create_key(a, "rp-same-warm", "HS256")
    ts.issue(a, {"sub": "rp-same"}, kid="rp-same-warm")  # the key set is warm
    token = ts.one(
        a,
        "SELECT token_store.jwt_issue('{\"sub\": \"rp-same\"}', '5 minutes', k) "
        "FROM (SELECT token_store.create_key('rp-same', 'HS256', %s) AS k) made",
        (ts.new_secret("HS256"),),
    )
    assert ts.verify(a, token)["sub"] == "rp-same"
    secret = ts.new_secret("HS256")
    minted = ts.mint(ts.claims(sub="rp-same-2"), secret, "HS256", "rp-same-2")
    row = ts.rows(
        a,
        "SELECT token_store.create_key('rp-same-2', 'HS256', %s), token_store.jwt_store(%s)",
        (secret, minted),
    )[0]
    assert row[0] == "rp-same-2" and ts.introspect(a, minted)["token_id"] == str(row[1])


def test_plain_sql_change_to_the_keys_table_reaches_warm_session(ts, db):
    a, b = ts.connect(db), ts.connect(db)
    secret = ts.create_key(a, "rp-plain", "HS256")
    token = ts.mint(ts.claims(sub="rp-plain"), secret, "HS256", "rp-plain")
    kidless = ts.mint(ts.claims(sub="rp-plain"), secret, "HS256")
    ts.store(a, token)
    ts.store(a, kidless)
    warm(ts, b, token, kidless)
    # an operator's UPDATE, not set_key_state: the trigger sends the invalidation
    a.execute("UPDATE token_store.signing_keys SET state = 'retired', version = version + 1 WHERE kid = 'rp-plain'")
    ts.assert_rejected(b, token, "unknown_key")
    assert ts.valid(b, kidless) is False
    a.execute("UPDATE token_store.signing_keys SET state = 'active', version = version + 1 WHERE kid = 'rp-plain'")
    assert ts.valid(b, token) is True
    a.execute("DELETE FROM token_store.signing_keys WHERE kid = 'rp-plain'")
    ts.assert_rejected(b, token, "unknown_key")
    assert ts.valid(b, kidless) is False
