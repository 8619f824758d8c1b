"""Parallel query (issue 19): the read functions do not turn parallel plans off, and they answer
right inside a parallel statement, in a worker or in the leader while parallel mode is active.

- A row-level security policy that calls token_store.jwt_verify(current_setting('app.token', true))
  on a table big enough for a parallel plan (parallel costs set to zero): EXPLAIN shows a Gather and
  the query returns the rows of the token's subject; with a refused token it raises 28000. Two
  forms: the subject read once per statement (a sub-select, as docs/rls.sql does), which needs the
  readers PARALLEL SAFE or RESTRICTED; and per row, which needs them SAFE.
- With debug_parallel_query = on (force_parallel_mode on PostgreSQL 15) and zero parallel costs,
  jwt_verify, jwt_valid and jwt_introspect over a table of valid, revoked, subject-revoked and
  session-ended tokens run under a Gather and answer exactly as without it; stats() counts each
  verification once, whichever process made it.
- Writers stay PARALLEL UNSAFE.
"""

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

DB = "ts_t_parallel"
ROLE = "ts_t_par_user"
KID = "k-par"
READERS = ("jwt_verify", "jwt_valid", "jwt_introspect")
WRITERS = ("jwt_issue", "jwt_store", "jwt_revoke", "jwt_revoke_id", "jwt_revoke_subject", "create_key",
           "generate_key", "set_key_state", "import_jwks", "purge", "reencrypt", "session_start",
           "session_refresh", "session_end", "session_end_subject")
ZERO_COSTS = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0",
              "min_parallel_index_scan_size": "0", "max_parallel_workers_per_gather": "2"}


def force_setting(conn) -> str:
    """debug_parallel_query since PostgreSQL 16, force_parallel_mode before."""
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    return "debug_parallel_query" if version >= 160000 else "force_parallel_mode"


def parallel_session(ts, conn, force=False):
    for name, value in ZERO_COSTS.items():
        ts.set_guc(conn, name, value)
    if force:
        ts.set_guc(conn, force_setting(conn), "on")


def plan(conn, query, params=None) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + query, params).fetchall())


def proparallel(ts, conn) -> dict:
    return dict(ts.rows(conn, "SELECT p.proname, p.proparallel FROM pg_catalog.pg_proc p "
                              "WHERE p.pronamespace = 'token_store'::regnamespace"))


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB) as name:
        conn = ts.connect(name)
        secret = ts.create_key(conn, KID, "HS256")
        ts.ensure_role(ROLE, "token_store_app")
        conn.execute("CREATE TABLE par_docs (id int, owner text, body text)")
        conn.execute("INSERT INTO par_docs SELECT g, 'par-' || (g % 10), repeat('x', 40) FROM generate_series(1, 100000) g")
        conn.execute("ALTER TABLE par_docs ENABLE ROW LEVEL SECURITY")
        conn.execute(sql.SQL("GRANT SELECT ON par_docs TO {}").format(sql.Identifier(ROLE)))
        conn.execute("ANALYZE par_docs")
        try:
            yield name, secret
        finally:
            ts.close_all()
            ts.drop_db(name)
            ts.drop_role(ROLE)


def test_readers_are_parallel_safe_or_restricted_and_writers_unsafe(ts, db):
    marks = proparallel(ts, ts.connect(db[0]))
    for f in READERS:
        assert marks[f] in ("s", "r"), f"{f} is PARALLEL {marks[f]}: it turns parallel plans off for every query calling it"
    for f in WRITERS:
        assert marks[f] == "u", f"{f} writes and must be PARALLEL UNSAFE, is {marks[f]}"


POLICIES = {
    # the verified subject read once per statement (an InitPlan evaluated by the leader)
    "once per statement": "owner = (SELECT token_store.jwt_verify(pg_catalog.current_setting('app.token', true)) ->> 'sub')",
    # called for every row, in the workers too
    "per row": "owner = token_store.jwt_verify(pg_catalog.current_setting('app.token', true)) ->> 'sub'",
}


@pytest.mark.parametrize("form", list(POLICIES))
def test_rls_policy_calling_jwt_verify_keeps_a_parallel_plan(ts, db, form):
    name, secret = db
    admin = ts.connect(name)
    admin.execute("DROP POLICY IF EXISTS par_owner ON par_docs")
    admin.execute(f"CREATE POLICY par_owner ON par_docs USING ({POLICIES[form]})")
    good = ts.issue(admin, ts.claims(sub="par-3"), kid=KID)
    revoked = ts.issue(admin, ts.claims(sub="par-4"), kid=KID)
    assert ts.revoke(admin, revoked) is True
    needs_gather = form == "once per statement" or proparallel(ts, admin)["jwt_verify"] == "s"

    user = ts.connect(name, user=ROLE)
    parallel_session(ts, user)
    ts.set_guc(user, "app.token", good)
    query = "SELECT count(*), min(owner), max(owner) FROM par_docs"
    shown = plan(user, query)
    if needs_gather:
        assert "Gather" in shown, f"no parallel plan with the policy ({form}):\n{shown}"
    for _ in range(3):
        assert ts.rows(user, query) == [(10000, "par-3", "par-3")]
    ts.set_guc(user, "app.token", revoked)
    with ts.expect_error("28000", "token rejected: revoked"):
        user.execute(query).fetchall()
    ts.set_guc(user, "app.token", good)
    assert ts.rows(user, query) == [(10000, "par-3", "par-3")]


KINDS = ("valid", "revoked", "subject_revoked", "session_ended", "not_stored", "malformed")


@pytest.fixture(scope="module")
def tokens(ts, db):
    """par_tokens: 50 tokens of each kind, with the reason each must be refused for."""
    name, secret = db
    conn = ts.connect(name)
    conn.execute("CREATE TABLE par_tokens (n int, kind text, tok text)")
    rows = []
    for i in range(50):
        rows.append(("valid", ts.issue(conn, ts.claims(sub=f"par-valid-{i}"), kid=KID)))
        t = ts.issue(conn, ts.claims(sub=f"par-revoked-{i}"), kid=KID)
        ts.revoke(conn, t)
        rows.append(("revoked", t))
        claims = ts.claims(sub="par-gone")
        claims["iat"] -= 5
        rows.append(("subject_revoked", ts.mint(claims, secret, "HS256", KID)))
        pair = ts.one(conn, "SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": f"par-s-{i}"}), KID))
        conn.execute("SELECT token_store.session_end(%s::uuid)", (pair["session_id"],))
        rows.append(("session_ended", pair["access_token"]))
        rows.append(("not_stored", ts.mint(ts.claims(sub=f"par-ns-{i}"), secret, "HS256", KID)))
        rows.append(("malformed", f"par.{i}.malformed"))
    # the subject revocation comes after its tokens were issued; deny-list entries need no row
    conn.execute("SELECT token_store.jwt_revoke_subject('par-gone')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO par_tokens VALUES (%s, %s, %s)", [(n, k, t) for n, (k, t) in enumerate(rows)])
    conn.execute("ANALYZE par_tokens")
    return rows


def expected_reason(kind, require_stored=True):
    if kind == "valid":
        return None
    if kind == "subject_revoked":
        return "subject_revoked"
    if kind == "not_stored":
        return "not_stored" if require_stored else None
    return kind if kind != "malformed" else "malformed"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("force", [True, False], ids=["forced", "parallel scan"])
def test_read_functions_in_parallel_mode(ts, db, tokens, kind, force):
    name, _ = db
    conn = ts.connect(name)
    parallel_session(ts, conn, force=force)
    reason = expected_reason(kind)
    want = sorted(t for k, t in tokens if k == kind)
    query = ("SELECT tok, token_store.jwt_valid(tok), token_store.jwt_introspect(tok) "
             "FROM par_tokens WHERE kind = %s")
    shown = plan(conn, query, (kind,))
    assert "Gather" in shown, f"no parallel plan:\n{shown}"
    before = ts.stats(conn)["verifications"]
    rows = sorted(conn.execute(query, (kind,)).fetchall())
    after = ts.stats(conn)["verifications"]
    assert [r[0] for r in rows] == want
    for tok, valid, intro in rows:
        if reason is None:
            assert valid is True and intro["active"] is True, (tok, valid, intro)
        else:
            assert valid is False and intro == {"active": False, "reason": reason}, (tok, valid, intro)
    # each of the 100 calls counted once, in whichever process it ran
    outcome = "ok" if reason is None else reason
    assert after.get(outcome, 0) - before.get(outcome, 0) == 2 * len(want), (before, after)

    verify = "SELECT token_store.jwt_verify(tok) ->> 'sub' FROM par_tokens WHERE kind = %s"
    assert "Gather" in plan(conn, verify, (kind,))
    if reason is None:
        subs = sorted(r[0] for r in conn.execute(verify, (kind,)).fetchall())
        assert subs == sorted(f"par-valid-{i}" for i in range(50))
    elif reason == "malformed":
        with ts.expect_error("22P02", "invalid token:"):
            conn.execute(verify, (kind,)).fetchall()
    else:
        with ts.expect_error("28000", f"token rejected: {reason}"):
            conn.execute(verify, (kind,)).fetchall()


@pytest.mark.parametrize("force", [True, False], ids=["forced", "parallel scan"])
def test_deny_list_mode_in_parallel_workers(ts, db, tokens, force):
    """token_store.require_stored set in the session reaches the workers (PostgreSQL copies the
    leader's settings into them): an unstored token verifies there in deny-list mode."""
    name, _ = db
    conn = ts.connect(name)
    parallel_session(ts, conn, force=force)
    conn.execute("SET token_store.require_stored = off")
    query = "SELECT count(*) FILTER (WHERE token_store.jwt_valid(tok)) FROM par_tokens WHERE kind = 'not_stored'"
    assert "Gather" in plan(conn, query)
    assert ts.one(conn, query) == 50
    query = "SELECT count(*) FILTER (WHERE token_store.jwt_valid(tok)) FROM par_tokens WHERE kind = 'subject_revoked'"
    assert ts.one(conn, query) == 0
