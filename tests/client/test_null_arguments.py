"""NULL in every argument of every token_store function: never XX000, never a Rust backtrace.

The functions are read from pg_proc, so a function added later is covered without editing this
file. A NULL in an argument without a NULL default gives NULL, as a STRICT function would
(jwt_valid gives false; a set-returning function, such as sessions(), gives no rows); a NULL where the default is NULL means "not given" and may give any
documented answer, but never an internal error."""

import uuid

import psycopg
import pytest
from psycopg import sql

DB = "ts_nulls"
KID = "k-nulls"

# The one function whose answer to NULL is not NULL.
NULL_ANSWER = {"jwt_valid": False}


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        ts.create_key(ts.connect(DB), KID, "HS256")
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def functions(conn):
    """(name, [(arg name, type, default is NULL)], returns a set) of every function in schema
    token_store."""
    rows = conn.execute(
        """SELECT p.proname, p.proargnames, pg_catalog.oidvectortypes(p.proargtypes),
                  pg_catalog.pg_get_expr(p.proargdefaults, 0), p.pronargs, p.pronargdefaults, p.proretset
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'token_store' AND p.prokind = 'f' ORDER BY p.proname"""
    ).fetchall()
    out = []
    for name, argnames, types, defaults, nargs, ndefaults, retset in rows:
        types = [t.strip() for t in types.split(",")] if nargs else []
        default_texts = [d.strip() for d in (defaults or "").split(",")] if ndefaults else []
        defaults_null = [False] * (nargs - ndefaults) + [d.upper().startswith("NULL") for d in default_texts]
        out.append((name, list(zip((argnames or [])[:nargs], types, defaults_null)), retset))
    return out


def sample(ts, conn, name: str, typ: str):
    """A plausible non-NULL value for an argument, by its name and type."""
    if typ == "jsonb":
        return sql.SQL("{}::jsonb").format(sql.Literal('{"keys": []}' if name == "jwks" else '{"sub": "nulls"}'))
    if typ == "interval":
        return sql.SQL("'1 minute'::interval")
    if typ == "uuid":
        return sql.SQL("{}::uuid").format(sql.Literal(str(uuid.uuid4())))
    if typ in ("integer", "bigint"):
        return sql.SQL("10")
    if typ == "double precision":
        return sql.SQL("1.0::double precision")
    if typ == "boolean":
        return sql.SQL("false")
    if typ == "text[]":
        return sql.SQL("{}::text[]").format(sql.Literal(["RS256"] if name == "algs" else ["nulls-aud"]))
    value = {
        "token": ts.issue(conn, ts.claims(sub="nulls"), kid=KID),
        "kid": "k-nulls-new",
        "alg": "HS256",
        "key": "n" * 40,
        "state": "active",
        "subject": "nulls",
        "reason": "because",
        "audience": None,
        "issuer": None,
    }.get(name, "x")
    return sql.Literal(value)


def test_every_function_with_null_in_every_argument(ts, conn):
    checked = 0
    for fname, args, retset in functions(conn):
        for i, (arg, typ, default_null) in enumerate(args):
            values = [sql.SQL("NULL::{}").format(sql.SQL(typ)) if j == i else sample(ts, conn, a, t)
                      for j, (a, t, _) in enumerate(args)]
            call = sql.SQL("token_store.{}({})").format(sql.Identifier(fname), sql.SQL(", ").join(values))
            # a set-returning function answers with rows: no rows stand for NULL, any for their count
            query = sql.SQL("SELECT nullif((SELECT count(*) FROM {}), 0)").format(call) if retset else \
                sql.SQL("SELECT {}").format(call)
            with conn.transaction(force_rollback=True):
                try:
                    with conn.transaction():
                        result = conn.execute(query).fetchone()[0]
                except psycopg.Error as e:
                    detail = e.diag.message_detail or ""
                    assert e.sqlstate != "XX000", f"{fname}({arg} => NULL): {e}"
                    assert "backtrace" not in detail.lower() and "src/" not in detail, f"{fname}: {detail}"
                    assert default_null, f"{fname}({arg} => NULL) raised {e.sqlstate}: {e}"
                    checked += 1
                    continue
            if not default_null:
                assert result == NULL_ANSWER.get(fname), f"{fname}({arg} => NULL) gave {result!r}, not NULL"
            checked += 1
    # every function with arguments was reached (a query error above would have failed the test)
    assert checked >= 25
