"""The guides in docs/ do what they say, and the operator's view of the extension is tidy.

docs/postgrest.sql, docs/rls.sql and docs/sessions.sql are loaded with psql into a fresh database,
as a user would; the statements the guides show an app running are taken from the guides' markdown
(each ```sql block that is not part of the .sql file starts with a comment naming it, e.g.
`-- login: ...`) and run here with bind parameters, directly and through pgbouncer in transaction
mode started on a loopback port (docs/pgbouncer.ini). The markdown must show the .sql files whole.

Also: every function of the extension has a COMMENT, every setting a description, and the
extension's members are exactly what the README documents.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import jwt
import psycopg
import pytest
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DB = "ts_t_docs"
APP = "ts_docs_app"            # the app's login role: token_store_app (and web_user, for rls.md)
OUTSIDER = "ts_docs_outsider"  # a login role with no grant
GUIDE_ROLES = ("authenticator", "api_token_check", "web_user", "web_anon")  # made by postgrest.sql
BOUNCER_PORT = int(os.environ.get("TS_PGBOUNCER_PORT", "54345"))

# The named statements of each guide that this module runs.
USED = {
    "postgrest": {"signing key", "jwks", "a PostgREST request"},
    "rls": {"an app request"},
    "sessions": {"signing key", "login", "authenticate", "refresh", "logout", "log out everywhere",
                 "end every session of a user", "your devices"},
    "pgbouncer": {"issue", "verify", "revoke", "right", "wrong behind a transaction pool"},
}


def code_lines(text: str) -> str:
    """The SQL without comment-only lines, whitespace collapsed."""
    return " ".join(" ".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).split())


class Guide:
    """docs/<name>.md: its ```sql blocks are either part of docs/<name>.sql (setup) or named
    statements the app runs, whose first line is `-- <name>: ...`."""

    def __init__(self, name: str):
        self.name = name
        self.md = (DOCS / f"{name}.md").read_text()
        self.blocks = re.findall(r"^```(\w*)\n(.*?)^```", self.md, re.S | re.M)
        sql_path = DOCS / f"{name}.sql"
        self.sql = sql_path.read_text() if sql_path.exists() else None
        self.setup: list[str] = []
        self.named: dict[str, str] = {}
        self.problems: list[str] = []   # asserted empty by test_markdown_blocks_are_sql_file_or_named
        for lang, body in self.blocks:
            if lang != "sql":
                continue
            if self.sql is not None and code_lines(body) in code_lines(self.sql):
                self.setup.append(body)
                continue
            m = re.match(r"--\s*([^:\n]+):", body)
            if not m:
                self.problems.append(f"{name}.md: a sql block is neither in {name}.sql nor named: {body[:80]!r}")
            elif m.group(1) in self.named:
                self.problems.append(f"{name}.md: two blocks named {m.group(1)!r}")
            else:
                self.named[m.group(1)] = body

    def statements(self, label: str) -> list[str]:
        assert label in USED[self.name], f"{label!r} is not listed in USED[{self.name!r}]"
        body = self.named[label]
        code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";[ \t]*$", code, flags=re.M) if s.strip()]

    def statement(self, label: str) -> str:
        (stmt,) = self.statements(label)
        return stmt


POSTGREST, RLS, SESSIONS, PGBOUNCER = (Guide(n) for n in ("postgrest", "rls", "sessions", "pgbouncer"))
GUIDES = {g.name: g for g in (POSTGREST, RLS, SESSIONS, PGBOUNCER)}


def bind(stmt: str, values: dict[int, object]) -> tuple[str, list]:
    """A guide's statement, written with $1, $2, ..., as psycopg takes it (%s placeholders) with
    its parameters picked from `values` by number: one numbering serves a whole block."""
    params: list = []

    def placeholder(m):
        params.append(values[int(m.group(1))])
        return "%s"

    return re.sub(r"\$(\d+)", placeholder, stmt.replace("%", "%%")), params


def run(conn, stmt: str, *values):
    sql_text, params = bind(stmt, dict(enumerate(values, start=1)))
    return conn.execute(sql_text, params)


def one(conn, stmt: str, *values):
    return run(conn, stmt, *values).fetchone()[0]


def run_block(conn, stmts: list[str], values: dict[int, object], inside=None):
    """Run a BEGIN ... COMMIT block of a guide; `inside(conn)` runs just before its last query.
    Returns (rows of the last query, what `inside` returned). Rolls back on any error."""
    assert stmts[0].upper() == "BEGIN" and stmts[-1].upper() == "COMMIT", stmts
    conn.execute("BEGIN")
    try:
        for stmt in stmts[1:-2]:
            conn.execute(*bind(stmt, values))
        extra = inside(conn) if inside else None
        rows = conn.execute(*bind(stmts[-2], values)).fetchall()
        conn.execute("COMMIT")
        return rows, extra
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def psql_file(ts, dbname: str, path: Path):
    out = subprocess.run(
        [str(ts.pgbin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", ts.host, "-p", str(ts.port),
         "-U", "postgres", "-d", dbname, "-f", str(path)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"psql -f {path.name} failed:\n{out.stderr}"


# ---- the database of the guides -----------------------------------------------------------------


JWKS: dict = {}   # token_store.jwks() of the guides' database: PostgREST's jwt-secret


class Env:
    def __init__(self, ts, jwks):
        self.ts = ts
        self.jwks = jwks

    def app(self, **kw):
        """A connection as the app's login role."""
        return self.ts.connect(DB, user=APP, **kw)

    def authenticator(self):
        return self.ts.connect(DB, user="authenticator")

    def su(self):
        return self.ts.connect(DB)


def drop_roles(ts):
    for role in (APP, OUTSIDER, *GUIDE_ROLES):
        ts.drop_role(role)


@pytest.fixture(scope="module")
def env(ts):
    ts.drop_db(DB)
    drop_roles(ts)
    ts.fresh_db(DB)
    for name in ("postgrest", "rls", "sessions"):
        psql_file(ts, DB, DOCS / f"{name}.sql")
    ts.ensure_role(APP, "token_store_app", "web_user")
    ts.ensure_role(OUTSIDER)
    su = ts.connect(DB)
    # the operator's step of postgrest.md and sessions.md: one ES256 key pair, made in the database
    assert POSTGREST.statement("signing key") == SESSIONS.statement("signing key")
    public = one(su, SESSIONS.statement("signing key"))
    assert public["kid"] == "api-1" and public["alg"] == "ES256" and "d" not in public
    jwks = one(su, POSTGREST.statement("jwks"))
    assert [k["kid"] for k in jwks["keys"]] == ["api-1"]
    JWKS.clear()
    JWKS.update(jwks)
    ts.close_all()
    yield Env(ts, jwks)
    ts.close_all()
    ts.drop_db(DB)
    drop_roles(ts)


def login(conn, subject: str, device: dict | None = None) -> dict:
    pair = one(conn, SESSIONS.statement("login"), subject, Jsonb(device) if device is not None else None)
    assert set(pair) == {"token_type", "access_token", "expires_in", "refresh_token", "session_id"}, pair
    return pair


def refresh(conn, token: str) -> dict:
    return one(conn, SESSIONS.statement("refresh"), token)


def authenticate(conn, token: str) -> dict:
    return one(conn, SESSIONS.statement("authenticate"), token)


def postgrest_check(jwks: dict, token: str) -> dict:
    """What PostgREST does itself with jwt-secret = token_store.jwks() and jwt-aud = "api"."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="api")


def postgrest_request(conn, token: str | None, *, claims=None, headers=None, inside=None):
    """The transaction PostgREST runs for GET /notes (postgrest.md), connected as authenticator."""
    stmts = POSTGREST.statements("a PostgREST request")
    if token is None and headers is None:   # anonymous: PostgREST switches to db-anon-role
        stmts = [s.replace("'web_user'", "'web_anon'") for s in stmts]
    if headers is None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
    if claims is None:
        claims = postgrest_check(JWKS, token) if token else {}
    return run_block(conn, stmts, {1: json.dumps(claims), 2: json.dumps(headers)}, inside)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# ---- the markdown shows what is tested -----------------------------------------------------------


@pytest.mark.parametrize("name", ["postgrest", "rls", "sessions", "pgbouncer"])
def test_markdown_blocks_are_sql_file_or_named(name):
    assert GUIDES[name].problems == []


@pytest.mark.parametrize("name", ["postgrest", "rls", "sessions"])
def test_markdown_shows_the_sql_file_whole(name):
    guide = GUIDES[name]
    assert guide.setup, f"{name}.md shows nothing of {name}.sql"
    assert code_lines("\n".join(guide.setup)) == code_lines(guide.sql), (
        f"the sql blocks of {name}.md, in order, are not {name}.sql")


@pytest.mark.parametrize("name", ["postgrest", "rls", "sessions", "pgbouncer"])
def test_every_named_statement_is_run_here(name):
    assert set(GUIDES[name].named) == USED[name]


def test_pgbouncer_markdown_shows_the_ini_file():
    ini_blocks = [body for lang, body in PGBOUNCER.blocks if lang == "ini"]
    assert ini_blocks == [(DOCS / "pgbouncer.ini").read_text()]


# ---- postgrest.md --------------------------------------------------------------------------------


def test_jwks_is_what_postgrest_checks_tokens_with(env):
    pair = login(env.app(), unique("pg-jwks"))
    claims = postgrest_check(env.jwks, pair["access_token"])
    assert claims["aud"] == "api" and claims["role"] == "web_user"
    with pytest.raises(jwt.DecodeError):   # a refresh token is no JWT
        postgrest_check(env.jwks, pair["refresh_token"])


def test_postgrest_live_token_passes_and_sets_verified_claims(env):
    sub = unique("pg-live")
    pair = login(env.app(), sub)
    verified = authenticate(env.app(), pair["access_token"])

    def inside(conn):
        return (conn.execute("SELECT current_user, current_setting('request.jwt.claims')::jsonb, "
                             "api_auth.current_sub()").fetchone())

    rows, (user, claims, current_sub) = postgrest_request(env.authenticator(), pair["access_token"], inside=inside)
    assert rows == []
    assert user == "web_user"
    assert claims == verified and claims["sub"] == sub
    assert current_sub == sub


def test_postgrest_refuses_revoked_tokens(ts, env):
    app = env.app()
    pair = login(app, unique("pg-revoked"))
    postgrest_request(env.authenticator(), pair["access_token"])
    assert one(app, "SELECT token_store.jwt_revoke($1, 'logout')", pair["access_token"]) is True
    postgrest_check(env.jwks, pair["access_token"])  # PostgREST itself would still let it through
    with ts.expect_error("PT401", "token rejected: revoked") as info:
        postgrest_request(env.authenticator(), pair["access_token"])
    assert info.value.diag.message_primary == "token rejected: revoked"

    sub = unique("pg-everywhere")
    pairs = [login(app, sub), login(app, sub)]
    assert one(app, "SELECT token_store.jwt_revoke_subject($1, 'logout everywhere')", sub) == 2
    for p in pairs:
        with ts.expect_error("PT401", "token rejected: revoked"):
            postgrest_request(env.authenticator(), p["access_token"])

    ended = login(app, unique("pg-session-ended"))
    postgrest_request(env.authenticator(), ended["access_token"])
    assert one(app, SESSIONS.statement("logout"), ended["access_token"]) is True
    with ts.expect_error("PT401", "token rejected: session_ended"):
        postgrest_request(env.authenticator(), ended["access_token"])


def test_postgrest_refuses_other_bad_tokens(ts, env):
    app, su = env.app(), env.su()
    pair = login(app, unique("pg-bad"))
    access = pair["access_token"]
    body, sig = access.rsplit(".", 1)
    forged = body + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    expired = one(su, "SELECT token_store.jwt_issue($1)", Jsonb(
        {"sub": "pg-expired", "aud": "api", "role": "web_user", "exp": int(time.time()) - 3600}))
    cases = [
        (pair["refresh_token"], "token rejected: malformed"),
        (forged, "token rejected: bad_signature"),
        (expired, "token rejected: expired"),
        ("not-a-jwt", "token rejected: malformed"),
    ]
    for token, message in cases:
        with ts.expect_error("PT401") as info:
            postgrest_request(env.authenticator(), token, claims={"role": "web_user"})
        assert info.value.diag.message_primary == message
    for header in ("Basic dXNlcjpwYXNz", "Bearer", f"Token {access}"):
        with ts.expect_error("PT401", 'expected "Authorization: Bearer <token>"'):
            postgrest_request(env.authenticator(), None, headers={"authorization": header})


def test_postgrest_anonymous_request_runs_as_web_anon(ts, env):
    seen = []
    with ts.expect_error("42501", "permission denied for table notes"):
        postgrest_request(env.authenticator(), None, inside=lambda conn: seen.append(
            conn.execute("SELECT current_user, api_auth.current_sub()").fetchone()))
    assert seen == [("web_anon", None)]


def test_web_roles_cannot_call_token_store_directly(ts, env):
    token = login(env.app(), unique("pg-direct"))["access_token"]
    conn = env.authenticator()
    for role in ("web_user", "web_anon"):
        conn.execute("BEGIN")
        run(conn, "SELECT set_config('role', $1, true)", role)
        with ts.expect_error("42501", "permission denied for"):
            one(conn, "SELECT token_store.jwt_verify($1)", token)
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        run(conn, "SELECT set_config('role', $1, true)", role)
        assert one(conn, "SELECT api_auth.authenticate($1) ->> 'aud'", token) == "api"
        conn.execute("ROLLBACK")


# ---- rls.md --------------------------------------------------------------------------------------


def app_request(conn, token: str, note: str):
    rows, _ = run_block(conn, RLS.statements("an app request"), {1: token, 2: note})
    return rows


def test_rls_each_user_sees_only_their_notes(env):
    app = env.app()
    alice, bob = unique("rls-alice"), unique("rls-bob")
    a, b = login(app, alice)["access_token"], login(app, bob)["access_token"]
    assert app_request(app, a, "alice 1") == [(alice, "alice 1")]
    assert app_request(env.app(), b, "bob 1") == [(bob, "bob 1")]
    assert app_request(app, a, "alice 2") == [(alice, "alice 1"), (alice, "alice 2")]
    rows, _ = postgrest_request(env.authenticator(), a)
    assert [(owner, body) for _id, owner, body in rows] == [(alice, "alice 1"), (alice, "alice 2")]
    rows, _ = postgrest_request(env.authenticator(), b)
    assert [(owner, body) for _id, owner, body in rows] == [(bob, "bob 1")]
    # the superuser (owner) sees both: the rows are there, the policy hides them
    owners = {o for (o,) in env.su().execute("SELECT owner FROM api.notes").fetchall()}
    assert {alice, bob} <= owners


def test_rls_refuses_writing_rows_of_others(ts, env):
    app = env.app()
    alice, bob = unique("rls-w-alice"), unique("rls-w-bob")
    a, b = login(app, alice)["access_token"], login(app, bob)["access_token"]
    app_request(app, b, "bob's")
    for stmt in ("INSERT INTO api.notes (owner, body) VALUES ($1, 'planted')", "UPDATE api.notes SET owner = $1"):
        app.execute("BEGIN")
        one(app, "SELECT api_auth.authenticate($1) ->> 'sub'", a)
        app_request_note = app.execute("INSERT INTO api.notes (body) VALUES ('mine') RETURNING owner").fetchone()
        assert app_request_note == (alice,)
        with ts.expect_error("42501", "new row violates row-level security policy"):
            run(app, stmt, bob)
        app.execute("ROLLBACK")
    app.execute("BEGIN")
    run(app, "SELECT api_auth.authenticate($1)", a)
    assert run(app, "UPDATE api.notes SET body = 'defaced' WHERE owner = $1", bob).rowcount == 0
    assert run(app, "DELETE FROM api.notes WHERE owner = $1", bob).rowcount == 0
    app.execute("COMMIT")
    assert app_request(env.app(), b, "bob again") == [(bob, "bob's"), (bob, "bob again")]


def test_rls_without_a_verified_token_sees_nothing(ts, env):
    app = env.app()
    a = login(app, unique("rls-none"))["access_token"]
    assert app_request(app, a, "only with a token") != []
    # the next transaction on the same connection: the claims ended with the last one
    assert app.execute("SELECT api_auth.current_sub(), count(*) FROM api.notes").fetchone() == (None, 0)
    assert env.app().execute("SELECT count(*) FROM api.notes").fetchone() == (0,)
    assert one(app, "SELECT token_store.jwt_revoke($1)", a) is True
    with ts.expect_error("PT401", "token rejected: revoked"):
        app_request(app, a, "after logout")
    assert env.su().execute("SELECT count(*) FROM api.notes WHERE body = 'after logout'").fetchone() == (0,)


# ---- sessions.md ---------------------------------------------------------------------------------


def test_login_gives_an_access_and_a_refresh_token(ts, env):
    app = env.app()
    sub = unique("s-login")
    pair = login(app, sub, {"device": "phone"})
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    claims = authenticate(app, pair["access_token"])
    assert claims["sub"] == sub and claims["aud"] == "api" and claims["role"] == "web_user"
    assert claims["exp"] - claims["iat"] == 900 and claims["sid"] == pair["session_id"]
    assert pair["refresh_token"].startswith("tsr_") and pair["refresh_token"].count(".") == 0
    with ts.expect_error("22P02", "invalid token:"):
        authenticate(app, pair["refresh_token"])
    assert refresh(app, pair["access_token"]) == {"error": "invalid_grant", "reason": "malformed"}
    assert refresh(app, "garbage") == {"error": "invalid_grant", "reason": "malformed"}
    again = login(app, sub)
    assert again["access_token"] != pair["access_token"] and again["session_id"] != pair["session_id"]


def test_refresh_rotates_the_refresh_token(ts, env):
    app, su = env.app(), env.su()
    su.execute("SET token_store.refresh_reuse_interval = 0")
    sub = unique("s-rotate")
    first = login(app, sub)
    second = refresh(app, first["refresh_token"])
    assert set(second) == set(first), second
    third = refresh(app, second["refresh_token"])
    assert set(third) == set(first), third
    sids = {authenticate(app, p["access_token"])["sid"] for p in (first, second, third)}
    assert sids == {first["session_id"]}, "a refresh keeps the session"
    assert len({p["refresh_token"] for p in (first, second, third)}) == 3
    assert authenticate(app, third["access_token"])["sub"] == sub
    # past the reuse interval (0 here), a used refresh token ends its session
    assert refresh(su, second["refresh_token"]) == {"error": "invalid_grant", "reason": "refresh_reused"}
    assert refresh(app, third["refresh_token"]) == {"error": "invalid_grant", "reason": "session_ended"}


def test_reused_refresh_token_ends_that_session(ts, env):
    app, su = env.app(), env.su()
    su.execute("SET token_store.refresh_reuse_interval = 0")
    sub, other = unique("s-reuse"), unique("s-bystander")
    stolen = login(app, sub)
    second_device = login(app, sub)
    rotated = refresh(app, stolen["refresh_token"])
    bystander = login(app, other)
    assert refresh(su, stolen["refresh_token"]) == {"error": "invalid_grant", "reason": "refresh_reused"}
    for token in (stolen["access_token"], rotated["access_token"]):
        ts.assert_rejected(app, token, "session_ended")
    assert refresh(app, rotated["refresh_token"]) == {"error": "invalid_grant", "reason": "session_ended"}
    for pair in (second_device, bystander):
        assert authenticate(app, pair["access_token"])["sid"] == pair["session_id"]
        assert "access_token" in refresh(app, pair["refresh_token"])


def test_two_tabs_refreshing_at_once_both_get_a_pair(ts, env):
    a, b = env.app(), env.app()
    sub = unique("s-race")
    pair = login(a, sub)
    b_pid = b.execute("SELECT pg_backend_pid()").fetchone()[0]
    a.execute("BEGIN")
    first = refresh(a, pair["refresh_token"])
    assert "access_token" in first
    result = {}

    def second():
        try:
            result["b"] = refresh(b, pair["refresh_token"])
        except Exception as e:  # reported below
            result["b"] = e

    thread = threading.Thread(target=second)
    thread.start()
    mon = ts.connect(DB)
    try:
        ts.wait_for(lambda: ts.one(mon, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                                   (b_pid,)), 10, "the second refresh to wait for the first one's row lock")
    finally:
        a.execute("COMMIT")
        thread.join(20)
    assert not thread.is_alive()
    # within token_store.refresh_reuse_interval: a race is no theft, both tabs go on
    second_pair = result["b"]
    assert second_pair["session_id"] == pair["session_id"], second_pair
    for p in (first, second_pair):
        assert authenticate(a, p["access_token"])["sub"] == sub
        assert "access_token" in refresh(a, p["refresh_token"])


def test_logout_ends_one_session(ts, env):
    app = env.app()
    sub = unique("s-logout")
    here, there = login(app, sub), login(app, sub)
    logout = SESSIONS.statement("logout")
    assert one(app, logout, here["access_token"]) is True
    ts.assert_rejected(app, here["access_token"], "session_ended")
    with ts.expect_error("28000", "token rejected: session_ended"):
        one(app, logout, here["access_token"])
    assert refresh(app, here["refresh_token"]) == {"error": "invalid_grant", "reason": "session_ended"}
    assert authenticate(app, there["access_token"])["sub"] == sub
    assert "access_token" in refresh(app, there["refresh_token"])


def test_logout_everywhere(ts, env):
    app = env.app()
    sub = unique("s-everywhere")
    laptop, phone = login(app, sub), login(app, sub)
    phone2 = refresh(app, phone["refresh_token"])
    everywhere = SESSIONS.statement("log out everywhere")
    assert one(app, everywhere, laptop["access_token"], False) == 2
    for token in (laptop["access_token"], phone["access_token"], phone2["access_token"]):
        ts.assert_rejected(app, token, "session_ended")
    for token in (laptop["refresh_token"], phone2["refresh_token"]):
        assert refresh(app, token) == {"error": "invalid_grant", "reason": "session_ended"}
    with ts.expect_error("28000", "token rejected: session_ended"):
        one(app, everywhere, laptop["access_token"], False)
    # a login right after works at once
    pair = login(app, sub)
    assert ts.valid(app, pair["access_token"]) and "access_token" in refresh(app, pair["refresh_token"])


def test_logout_everywhere_else(ts, env):
    app = env.app()
    sub = unique("s-else")
    here, there, third = login(app, sub), login(app, sub), login(app, sub)
    assert one(app, SESSIONS.statement("log out everywhere"), here["access_token"], True) == 2
    assert authenticate(app, here["access_token"])["sub"] == sub
    for p in (there, third):
        ts.assert_rejected(app, p["access_token"], "session_ended")


def test_operator_ends_every_session_of_a_user(ts, env):
    app = env.app()
    sub = unique("s-reset")
    pairs = [login(app, sub), login(app, sub)]
    assert one(app, SESSIONS.statement("end every session of a user"), sub) == 2
    for pair in pairs:
        ts.assert_rejected(app, pair["access_token"], "session_ended")


def test_your_devices(ts, env):
    app = env.app()
    sub = unique("s-devices")
    phone = login(app, sub, {"device": "phone", "ua": "Mobile Safari"})
    laptop = login(app, sub, {"device": "laptop"})
    gone = login(app, sub, {"device": "old tablet"})
    one(app, SESSIONS.statement("logout"), gone["access_token"])
    rows = run(app, SESSIONS.statement("your devices"), phone["access_token"]).fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [
        (laptop["session_id"], False, {"device": "laptop"}),
        (phone["session_id"], True, {"device": "phone", "ua": "Mobile Safari"}),
    ]
    signed_in, last_seen = rows[1][3], rows[1][4]
    assert signed_in == last_seen
    refresh(app, phone["refresh_token"])
    rows = run(app, SESSIONS.statement("your devices"), laptop["access_token"]).fetchall()
    assert [r[1] for r in rows] == [True, False] and rows[1][4] > rows[1][3]
    # the metadata is stored encrypted
    raw = env.su().execute("SELECT metadata FROM token_store.sessions WHERE id = %s",
                           (phone["session_id"],)).fetchone()[0]
    assert b"Mobile Safari" not in bytes(raw)


def test_only_token_store_app_members_run_the_session_functions(ts, env):
    outsider = ts.connect(DB, user=OUTSIDER)
    with ts.expect_error("42501"):
        login(outsider, "intruder")
    with ts.expect_error("42501"):
        one(outsider, "SELECT token_store.session_start($1)", Jsonb({"sub": "intruder"}))


# ---- pgbouncer.md --------------------------------------------------------------------------------


def render_ini(text: str, overrides: dict[str, dict[str, str]], added: dict[str, dict[str, str]]) -> str:
    """pgbouncer.ini with `overrides` replacing keys the file has (each must be there) and
    `added` appended to their sections."""
    out, section, seen = [], None, set()
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\]\s*$", line)
        if m:
            if section in added:
                out.extend(f"{k} = {v}" for k, v in added[section].items())
            section = m.group(1)
        kv = re.match(r"([^;\s=][^=]*?)\s*=", line)
        if kv and section in overrides and kv.group(1) in overrides[section]:
            line = f"{kv.group(1)} = {overrides[section][kv.group(1)]}"
            seen.add((section, kv.group(1)))
        out.append(line)
    if section in added:
        out.extend(f"{k} = {v}" for k, v in added[section].items())
    missing = {(s, k) for s, keys in overrides.items() for k in keys} - seen
    assert not missing, f"docs/pgbouncer.ini lacks {missing}"
    return "\n".join(out) + "\n"


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def bouncer(ts, env):
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert os.path.exists(exe), "pgbouncer is not installed (scripts/lib.sh's ensure_deps installs it)"
    assert not port_in_use(BOUNCER_PORT), f"port {BOUNCER_PORT} is taken: set TS_PGBOUNCER_PORT"
    d = ts.cluster_dir / "pgbouncer"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in ("postgres", APP, "authenticator")))
    ini = render_ini((DOCS / "pgbouncer.ini").read_text(), overrides={
        "databases": {"*": f"host={ts.host} port={ts.port}"},
        "pgbouncer": {
            "listen_port": str(BOUNCER_PORT), "auth_type": "trust", "auth_file": str(d / "userlist.txt"),
            "default_pool_size": "1", "logfile": str(d / "pgbouncer.log"), "pidfile": str(d / "pgbouncer.pid"),
        },
    }, added={"pgbouncer": {"unix_socket_dir": str(d)}})
    assert "pool_mode = transaction" in ini
    (d / "pgbouncer.ini").write_text(ini)
    root = os.geteuid() == 0
    if root:
        shutil.chown(d, "postgres", "postgres")
        for f in d.iterdir():
            shutil.chown(f, "postgres", "postgres")
    with open(d / "stderr.log", "wb") as err:
        proc = subprocess.Popen([exe, str(d / "pgbouncer.ini")], stdout=err, stderr=subprocess.STDOUT,
                                **({"user": "postgres", "group": "postgres", "extra_groups": []} if root else {}))
    try:
        deadline = time.monotonic() + 15
        while not port_in_use(BOUNCER_PORT):
            assert proc.poll() is None, f"pgbouncer exited: {(d / 'stderr.log').read_text()}"
            assert time.monotonic() < deadline, "pgbouncer did not start listening"
            time.sleep(0.1)
        yield BOUNCER_PORT
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def pooled(bouncer):
    """pooled(user): a connection through pgbouncer (transaction mode, one server connection per
    user), without named prepared statements (pgbouncer 1.18 cannot follow them)."""
    opened = []

    def make(user=APP):
        conn = psycopg.connect(host="127.0.0.1", port=bouncer, dbname=DB, user=user, autocommit=True,
                               connect_timeout=10, prepare_threshold=None)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def test_pool_shares_one_server_connection(pooled):
    c1, c2 = pooled(), pooled()
    pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (c1, c2, c1, c2)}
    assert len(pids) == 1, "the two clients should share the pool's one server connection"


def test_issue_verify_revoke_through_the_pool(ts, env, pooled):
    c1, c2 = pooled(), pooled()
    sub = unique("pool-user")
    token = one(c1, PGBOUNCER.statement("issue"), Jsonb({"sub": sub, "aud": "api"}))
    assert one(c2, PGBOUNCER.statement("verify"), token)["sub"] == sub
    assert one(env.app(), "SELECT token_store.jwt_verify($1) ->> 'sub'", token) == sub   # not pooled
    assert one(c2, PGBOUNCER.statement("revoke"), token) is True
    for conn in (c1, env.app()):
        with ts.expect_error("28000", "token rejected: revoked"):
            one(conn, PGBOUNCER.statement("verify"), token)


def test_guides_work_through_the_pool(ts, env, pooled):
    c1, c2, web = pooled(), pooled(), pooled("authenticator")
    sub = unique("pool-session")
    pair = login(c1, sub)
    assert app_request(c2, pair["access_token"], "pooled note") == [(sub, "pooled note")]
    rows, _ = postgrest_request(web, pair["access_token"])
    assert [(o, b) for _i, o, b in rows] == [(sub, "pooled note")]
    # a request of nobody on the same server connection right after: no claims are left over
    with ts.expect_error("42501", "permission denied for table notes"):
        postgrest_request(web, None)
    assert c1.execute("SELECT api_auth.current_sub(), count(*) FROM api.notes").fetchone() == (None, 0)
    new = refresh(c2, pair["refresh_token"])
    assert authenticate(c1, new["access_token"])["sub"] == sub
    assert one(c1, SESSIONS.statement("logout"), new["access_token"]) is True
    with ts.expect_error("PT401", "token rejected: session_ended"):
        postgrest_request(web, new["access_token"])
    assert refresh(c2, new["refresh_token"]) == {"error": "invalid_grant", "reason": "session_ended"}


def test_session_state_right_and_wrong(pooled):
    c1, c2 = pooled(), pooled()
    claims = json.dumps({"sub": "pool-alice"})
    rows, _ = run_block(c1, PGBOUNCER.statements("right"), {1: claims})
    assert rows == [("pool-alice",)]
    assert c2.execute("SELECT api_auth.current_sub()").fetchone() == (None,)
    try:
        run(c1, PGBOUNCER.statement("wrong behind a transaction pool"), claims)
        # c2 is served by the same server connection, and is now taken for pool-alice
        assert c2.execute("SELECT api_auth.current_sub()").fetchone() == ("pool-alice",)
    finally:
        c2.execute("SELECT set_config('request.jwt.claims', '', false)")
    assert c1.execute("SELECT api_auth.current_sub()").fetchone() == (None,)


# ---- the operator's view -------------------------------------------------------------------------


def readme_section(title: str) -> str:
    """The text under the README heading `title`, up to the next heading of its level or above."""
    lines = (ROOT / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)$", line)
        if m and m.group(2) == title:
            level, body = len(m.group(1)), []
            for following in lines[i + 1:]:
                h = re.match(r"(#+) ", following)
                if h and len(h.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    raise AssertionError(f"README has no section {title!r}")


def readme_members() -> set[str]:
    """The extension's members as the README documents them."""
    api = readme_section("API")
    members = set()
    for name, args in re.findall(r"^#### `(\w+)\(([^)]*)\)", api, re.M):
        # "name type [default ...]", the type possibly of two words (double precision);
        # pg_describe_object spells types out (timestamptz: timestamp with time zone)
        spelled = {"timestamptz": "timestamp with time zone"}
        types = [a.split(" default")[0].split(None, 1)[1] for a in args.split(",") if a.strip()]
        types = [spelled.get(t, t) for t in types]
        members.add(f"function token_store.{name}({','.join(types)})")
    members |= {f"view token_store.{v}" for v in re.findall(r"view `token_store\.(\w+)`", api)}
    table_text = readme_section("The managed table")
    members |= {f"table token_store.{t}" for t in re.findall(r"`token_store\.(\w+)`", table_text)}
    return members


def test_every_function_has_a_comment(ts, env):
    conn = ts.connect(DB)
    rows = ts.rows(conn, """
        SELECT p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc')
          FROM pg_proc p WHERE p.pronamespace = 'token_store'::regnamespace ORDER BY 1""")
    assert len(rows) >= 17
    for proc, comment in rows:
        assert comment, f"{proc} has no COMMENT"
        assert comment.startswith("token_store: ") and "\n" not in comment and len(comment) <= 120, (proc, comment)
    for rel, comment in ts.rows(conn, """
            SELECT c.oid::regclass::text, obj_description(c.oid, 'pg_class') FROM pg_class c
             WHERE c.relnamespace = 'token_store'::regnamespace AND c.relkind IN ('r', 'v')"""):
        assert comment, f"{rel} has no COMMENT"


def test_extension_members_are_what_the_readme_documents(ts, env):
    # From PostgreSQL 17 on, a table's or view's row type and its array type are extension members of
    # their own; they come with the relation, so they are left out (a standalone type is kept).
    members = {r for (r,) in ts.rows(ts.connect(DB), """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'token_store')
           AND NOT EXISTS (
               SELECT FROM pg_type t
                 LEFT JOIN pg_type elem ON elem.oid = t.typelem AND elem.typarray = t.oid
                 JOIN pg_class c ON c.oid IN (t.typrelid, elem.typrelid)
                WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid AND c.relkind <> 'c')""")}
    documented = readme_members()
    assert len([m for m in documented if m.startswith("function")]) >= 17
    assert {"table token_store.tokens", "view token_store.keys", "view token_store.stats"} <= documented
    assert members == documented, (
        f"not documented: {sorted(members - documented)}; documented, not installed: {sorted(documented - members)}")


def test_every_setting_has_a_description(ts, env):
    settings_text = readme_section("Settings")
    rows = re.findall(r"^\| (`token_store\.[^|]*) \| ([^|]*) \|", settings_text, re.M)
    documented = {n for first, _ in rows for n in re.findall(r"`(token_store\.\w+)`", first)}
    hidden = {n for first, ctx in rows if "hidden" in ctx for n in re.findall(r"`(token_store\.\w+)`", first)}
    assert {"token_store.encryption_key", "token_store.previous_encryption_keys"} == hidden
    conn = ts.connect(DB)
    shown = dict(ts.rows(conn, "SELECT name, short_desc FROM pg_settings WHERE name LIKE 'token_store.%'"))
    assert set(shown) == documented - hidden
    for name, desc in shown.items():
        assert desc and desc.strip(), f"{name} has no description"
    for name in hidden:  # defined, and kept out of pg_settings on purpose (no description to read)
        assert "NO_SHOW_ALL" in ts.one(conn, "SELECT pg_settings_get_flags(%s)", (name,))
