"""Roles and privileges: what token_store_app and token_store_admin may do, that a role with no
grant may do nothing, that non-superusers never see the encryption key, that a hostile
search_path cannot hijack the SECURITY DEFINER functions, and that the table keeps nothing in clear.

Every check runs twice: connected as the role (trust auth), and as a superuser under SET ROLE."""

import datetime
import hashlib
import uuid

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

DB = "ts_t_priv"
APP, ADMIN, NOBODY, ATTACKER = "ts_app_user", "ts_admin_user", "ts_nobody", "ts_attacker"
ROLES = {APP: ["token_store_app"], ADMIN: ["token_store_admin"], NOBODY: [], ATTACKER: ["token_store_app"]}

# Functions that read or write the extension's tables: SECURITY DEFINER with a pinned search_path.
DEFINER_FUNCTIONS = {
    "create_key", "set_key_state", "jwt_issue", "jwt_store",
    "jwt_revoke", "jwt_revoke_id", "jwt_revoke_subject", "jwt_payload", "purge", "purge_expired", "stats",
    "session_start", "session_refresh", "session_end", "session_end_subject", "sessions",
    "dpop_verify", "jwt_verify_dpop", "revocations_since",
}
# They run no SQL (they read the tables by index probes): SECURITY INVOKER, no per-call search_path,
# guarded by their EXECUTE grants alone.
INVOKER_READERS = {"jwt_verify", "jwt_valid", "jwt_introspect"}
PINNED_SEARCH_PATH = "search_path=pg_catalog, pg_temp"

# A value of each argument type the SQL surface uses, to call any function (not NULL: a strict
# function called with a NULL constant is folded away before its EXECUTE privilege is checked).
DUMMY_ARGS = {
    "text": "x", "jsonb": Jsonb({}), "interval": datetime.timedelta(minutes=1),
    "uuid": uuid.UUID(int=0), "bigint": 1, "integer": 1, "boolean": False, "double precision": 1.0,
    "text[]": ["x"],
    "timestamp with time zone": datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
}


@pytest.fixture(scope="module")
def env(ts):
    """The database, the LOGIN roles, and a signing key (kid, secret) made by the superuser."""
    ts.drop_db(DB)
    for role in ROLES:
        ts.drop_role(role)
    ts.fresh_db(DB)
    for role, groups in ROLES.items():
        ts.ensure_role(role, *groups)
    su = ts.connect(DB)
    su.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(DB), sql.Identifier(ATTACKER)))
    secret = ts.create_key(su, "k-priv", "HS256")
    yield "k-priv", secret
    ts.close_all()
    ts.drop_db(DB)
    for role in ROLES:
        ts.drop_role(role)


@pytest.fixture(params=["login", "set_role"])
def session_as(request, ts, env):
    """session_as(role): a connection acting as `role`, by logging in or by SET ROLE."""

    def make(role):
        if request.param == "login":
            conn = ts.connect(DB, user=role)
            assert ts.one(conn, "SELECT current_user") == role
        else:
            conn = ts.connect(DB)
            ts.set_role(conn, role)
        return conn

    return make


@pytest.fixture
def su(ts, env):
    return ts.connect(DB)


def a_token(ts, env, **claims):
    kid, secret = env
    return ts.mint(ts.claims(**claims), secret, "HS256", kid)


def test_catalog_grants_nothing_to_public(ts, su):
    functions = ts.rows(su, """
        SELECT p.proname, p.prosecdef, coalesce(p.proconfig, '{}'),
               has_function_privilege('public', p.oid, 'EXECUTE')
          FROM pg_proc p WHERE p.pronamespace = 'token_store'::regnamespace""")
    names = {f[0] for f in functions}
    assert DEFINER_FUNCTIONS <= names and INVOKER_READERS <= names
    for name, secdef, config, public_exec in functions:
        assert not public_exec, f"PUBLIC can execute token_store.{name}"
        if name in DEFINER_FUNCTIONS:
            assert secdef, f"token_store.{name} is not SECURITY DEFINER"
        if name in INVOKER_READERS:
            assert not secdef and config == [], f"token_store.{name}: SECURITY DEFINER {secdef}, config {config}"
        if secdef:
            assert PINNED_SEARCH_PATH in config, f"token_store.{name} has no pinned search_path: {config}"
    relations = ts.rows(su, """
        SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')
          FROM pg_class c WHERE c.relnamespace = 'token_store'::regnamespace AND c.relkind IN ('r', 'v')""")
    assert {"tokens", "signing_keys", "keys", "stats"} <= {r[0] for r in relations}
    assert not [r[0] for r in relations if r[1]], "PUBLIC has privileges on a token_store relation"
    assert ts.one(su, "SELECT has_schema_privilege('public', 'token_store', 'USAGE')") is False


def check_token_lifecycle(ts, env, conn):
    """What token_store_app (and therefore admin) may do: every token function."""
    issued = ts.issue(conn, {"sub": "app-user"}, "5 minutes")
    assert ts.verify(conn, issued)["sub"] == "app-user"
    token = a_token(ts, env, sub="app-user-2")
    token_id = ts.store(conn, token)
    assert ts.valid(conn, token) is True
    assert ts.introspect(conn, token)["token_id"] == str(token_id)
    assert ts.revoke(conn, issued, "done") is True
    ts.assert_rejected(conn, issued, "revoked")
    assert ts.one(conn, "SELECT token_store.jwt_revoke_id(%s, %s)", (token_id, "done")) is True
    assert ts.one(conn, "SELECT token_store.jwt_revoke_subject(%s, %s)", ("nobody-in-particular", "x")) == 0
    return token_id


def test_app_can_issue_store_verify_revoke(ts, env, session_as):
    check_token_lifecycle(ts, env, session_as(APP))


APP_DENIED = {
    "select tokens": ("SELECT * FROM token_store.tokens", None),
    "select signing_keys": ("SELECT * FROM token_store.signing_keys", None),
    "select subject_revocations": ("SELECT * FROM token_store.subject_revocations", None),
    "select keys view": ("SELECT * FROM token_store.keys", None),
    "select stats view": ("SELECT * FROM token_store.stats", None),
    "stats()": ("SELECT * FROM token_store.stats()", None),
    "jwt_payload": ("SELECT token_store.jwt_payload(%s)", (uuid.uuid4(),)),
    "create_key": ("SELECT token_store.create_key(%s, %s, %s)", ("app-key", "HS256", "a" * 40)),
    "set_key_state": ("SELECT token_store.set_key_state(%s, %s)", ("k-priv", "retired")),
    "purge": ("SELECT token_store.purge()", None),
    "delete tokens": ("DELETE FROM token_store.tokens", None),
    "un-revoke": ("UPDATE token_store.tokens SET revoked_at = NULL", None),
    "delete subject revocations": ("DELETE FROM token_store.subject_revocations", None),
}


@pytest.mark.parametrize("what", APP_DENIED)
def test_app_denied(ts, session_as, what):
    query, params = APP_DENIED[what]
    with ts.expect_error("42501"):
        session_as(APP).execute(query, params)


def test_admin_can_administer(ts, env, session_as):
    conn = session_as(ADMIN)
    revoked_before = ts.stats(conn)["revoked"]
    token_id = check_token_lifecycle(ts, env, conn)
    assert ts.one(conn, "SELECT token_store.jwt_payload(%s)", (token_id,))["sub"] == "app-user-2"
    kid = f"admin-{uuid.uuid4().hex[:8]}"
    ts.create_key(conn, kid, "HS384")
    conn.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (kid,))
    assert ts.rows(conn, "SELECT alg, state FROM token_store.keys WHERE kid = %s", (kid,)) == [("HS384", "verify_only")]
    # the lifecycle revoked two unexpired rows; nothing here has expired, so purge removes none
    assert ts.stats(conn)["revoked"] - revoked_before == 2
    assert ts.one(conn, "SELECT revoked FROM token_store.stats") - revoked_before == 2
    assert ts.one(conn, "SELECT token_store.purge()") == 0


def test_admin_can_read_tokens_table(ts, env, session_as):
    conn = session_as(ADMIN)
    token_id = ts.store(conn, a_token(ts, env, sub="admin-reads"))
    assert ts.one(conn, "SELECT subject FROM token_store.tokens WHERE id = %s", (token_id,)) == "admin-reads"


def test_nobody_denied_every_function_and_relation(ts, su, session_as):
    functions = ts.rows(su, """
        SELECT p.proname, p.proargtypes::regtype[]::text[]
          FROM pg_proc p WHERE p.pronamespace = 'token_store'::regnamespace ORDER BY 1""")
    relations = [r[0] for r in ts.rows(su, """
        SELECT c.relname FROM pg_class c
         WHERE c.relnamespace = 'token_store'::regnamespace AND c.relkind IN ('r', 'v', 'm') ORDER BY 1""")]
    assert len(functions) >= len(DEFINER_FUNCTIONS) and len(relations) >= 4
    conn = session_as(NOBODY)
    for name, argtypes in functions:
        unknown = [t for t in argtypes if t not in DUMMY_ARGS]
        assert not unknown, f"test needs a dummy value for {unknown} (token_store.{name})"
        query = sql.SQL("SELECT token_store.{}({})").format(
            sql.Identifier(name), sql.SQL(", ").join(sql.SQL("%s::" + t) for t in argtypes)
        )
        with ts.expect_error("42501"):
            conn.execute(query, [DUMMY_ARGS[t] for t in argtypes])
    for rel in relations:
        with ts.expect_error("42501"):
            conn.execute(sql.SQL("SELECT * FROM token_store.{}").format(sql.Identifier(rel)))


@pytest.mark.parametrize("role", [APP, ADMIN, NOBODY])
def test_non_superuser_cannot_see_encryption_key(ts, su, session_as, role):
    key = ts.encryption_key_text()
    conn = session_as(role)
    seen = []
    for setting in ("token_store.encryption_key", "token_store.previous_encryption_keys"):
        with ts.expect_error("42501"):
            conn.execute(sql.SQL("SHOW {}").format(sql.SQL(setting)))
        with ts.expect_error("42501"):
            conn.execute("SELECT current_setting(%s)", (setting,))
        with ts.expect_error("42501"):
            conn.execute("SELECT current_setting(%s, true)", (setting,))
    seen += ts.rows(conn, "SELECT * FROM pg_settings")
    seen += ts.rows(conn, "SHOW ALL")
    with ts.expect_error("42501"):
        conn.execute("SELECT * FROM pg_file_settings")
    assert "token_store.encryption_key" not in {r[0] for r in ts.rows(conn, "SELECT name FROM pg_settings")}
    leaked = key in repr(seen)
    assert not leaked, f"{role} can read the encryption key"

    # a superuser is shown that a key is set, never the key
    assert ts.one(su, "SHOW token_store.encryption_key") == "(hidden)"
    assert ts.one(su, "SELECT current_setting('token_store.encryption_key')") == "(hidden)"
    leaked = key in repr(ts.rows(su, "SELECT * FROM pg_settings") + ts.rows(su, "SHOW ALL"))
    assert not leaked, "a superuser can read the encryption key"


HIJACK_SQL = """
CREATE SCHEMA evil;
CREATE TABLE evil.calls (fn text NOT NULL);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.log(f text) RETURNS void LANGUAGE sql AS $$ INSERT INTO evil.calls VALUES (f) $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('clock_timestamp'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION evil.to_timestamp(float8) RETURNS timestamptz LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('to_timestamp'); RETURN pg_catalog.to_timestamp($1); END $$;
CREATE FUNCTION evil.make_interval(secs float8) RETURNS interval LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('make_interval'); RETURN pg_catalog.make_interval(secs => secs); END $$;
CREATE FUNCTION evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('count'); RETURN pg_catalog.int8pl($1, 1); END $$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION evil.eq_bytea(bytea, bytea) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('=bytea'); RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = evil.eq_bytea);
CREATE FUNCTION evil.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('=text'); RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq_text);
CREATE FUNCTION evil.lt_tstz(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN PERFORM evil.log('<timestamptz'); RETURN true; END $$;
CREATE OPERATOR evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.lt_tstz);
"""
HIJACKED = {"now", "clock_timestamp", "to_timestamp", "make_interval", "count", "=bytea", "=text", "<timestamptz"}


def test_search_path_hijack_is_harmless(ts, env, session_as):
    conn = session_as(ATTACKER)
    conn.execute("DROP SCHEMA IF EXISTS evil CASCADE")
    conn.execute(HIJACK_SQL)
    ts.set_guc(conn, "search_path", "evil, pg_catalog, public")

    # the trap works on the attacker's own queries ...
    conn.execute("""SELECT now(), clock_timestamp(), to_timestamp(0::float8), make_interval(secs => 1::float8),
                           (SELECT count(*) FROM (VALUES (1)) v), '\\x01'::bytea = '\\x02'::bytea,
                           'a'::text = 'b'::text, now() < now()""")
    assert {r[0] for r in ts.rows(conn, "SELECT fn FROM evil.calls")} == HIJACKED
    conn.execute("TRUNCATE evil.calls")

    # ... but never fires inside token_store's functions, which still give the right answers
    victim = f"victim-{uuid.uuid4()}"
    issued = ts.issue(conn, {"sub": victim}, "5 minutes")
    assert ts.verify(conn, issued)["sub"] == victim
    assert ts.valid(conn, issued) is True
    forged = issued[:-4] + ("AAAA" if not issued.endswith("AAAA") else "BBBB")
    assert ts.valid(conn, forged) is False
    assert ts.valid(conn, a_token(ts, env, sub=victim)) is False  # not stored
    token = a_token(ts, env, sub=victim)
    token_id = ts.store(conn, token)
    assert ts.introspect(conn, token)["token_id"] == str(token_id)
    assert ts.revoke(conn, issued, "hijack test") is True
    assert ts.valid(conn, issued) is False
    assert ts.one(conn, "SELECT token_store.jwt_revoke_id(%s, %s)", (token_id, "x")) is True
    assert ts.one(conn, "SELECT token_store.jwt_revoke_subject(%s, %s)", (victim, "x")) == 0
    assert ts.rows(conn, "SELECT fn FROM evil.calls") == []


def test_tokens_table_holds_nothing_in_clear(ts, env, su):
    kid, secret = env
    marker = f"zebra-{uuid.uuid4()}"
    issued = ts.issue(su, {"sub": "clear-test", "note": marker})
    minted = a_token(ts, env, sub="clear-test-2", note=marker)
    ts.store(su, minted)
    ts.revoke(su, minted, "test")
    needles = [marker, issued, minted, issued.split(".")[1], minted.split(".")[1], minted.split(".")[2], secret]

    def assert_absent(rows, where):
        for row in rows:
            for value in row:
                if isinstance(value, (bytes, memoryview)):
                    blob = bytes(value)
                    for n in needles:
                        assert n.encode() not in blob and n.encode().hex() not in blob.hex(), f"{where}: clear text in bytea"
                else:
                    text = str(value)
                    for n in needles:
                        assert n not in text, f"{where}: clear text in a column: {text[:80]}"

    rows = ts.rows(su, "SELECT * FROM token_store.tokens")
    assert len(rows) >= 2
    assert_absent(rows, "tokens")
    assert_absent(ts.rows(su, "SELECT t::text FROM token_store.tokens t"), "tokens as text")
    assert_absent(ts.rows(su, "SELECT * FROM token_store.signing_keys"), "signing_keys")
    hashes = {bytes(r[0]) for r in ts.rows(su, "SELECT token_hash FROM token_store.tokens")}
    assert {hashlib.sha256(issued.encode()).digest(), hashlib.sha256(minted.encode()).digest()} <= hashes
