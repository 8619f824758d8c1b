"""Keys, secrets, tokens and claims given as literals never reach the server log through a
failing statement (log_min_error_statement = error, the default).

Every error path of the functions that receive key material, a token or claims is driven with
literal arguments (no bind parameters), on the shared cluster; the log written meanwhile must show
each ERROR but no STATEMENT line, and none of the literals. A control statement that fails
outside token_store proves the log does record statements here."""

import json
import secrets
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql

DB = "ts_logsecrecy"
KID = "k-log"


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        assert ts.one(ts.connect(DB), "SHOW log_min_error_statement") == "error"
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def fail(conn, query, *literals, sqlstate):
    """Run `query` with `literals` inlined as SQL literals; it must fail with `sqlstate`."""
    q = sql.SQL(query).format(*(sql.Literal(v) for v in literals))
    with pytest.raises(psycopg.Error) as info:
        conn.execute(q)
    assert info.value.sqlstate == sqlstate, f"{query}: {info.value.sqlstate} {info.value}"


def test_failing_calls_with_literal_secrets_leave_no_statement_in_the_log(ts, conn):
    start = ts.log_size()
    secret = "log-" + secrets.token_hex(24)
    other = "log-" + secrets.token_hex(24)
    ts.secrets.update({secret, other})
    # a private PEM made by cryptography (the independent implementation)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    pem_body = pem.splitlines()[1]

    assert ts.one(conn, sql.SQL("SELECT token_store.create_key('k-log', 'HS256', {})").format(sql.Literal(secret))) == KID
    fail(conn, "SELECT token_store.create_key('k-log', 'HS256', {})", other, sqlstate="42710")
    assert ts.one(conn, sql.SQL("SELECT token_store.create_key('k-log-ec', 'ES256', {})").format(sql.Literal(pem)))
    fail(conn, "SELECT token_store.create_key('k-log-ec', 'ES256', {})", pem, sqlstate="42710")
    fail(conn, "SELECT token_store.create_key('k-log-bad', 'RS256', {})", pem, sqlstate="22023")
    fail(conn, "SELECT token_store.create_key('k-log-bad', 'XS256', {})", secret, sqlstate="22023")
    fail(conn, "SELECT token_store.import_jwks({}::jsonb)", json.dumps({"keys": [{"kty": "oct", "k": secret}]}),
         sqlstate="22023")

    claims = ts.claims(sub="log-subject", note="claims-" + secrets.token_hex(8))
    token = ts.issue(conn, claims, kid=KID)
    assert ts.revoke(conn, token) is True
    forged = ts.mint(ts.claims(sub="log-forged"), other, "HS256", KID)
    fail(conn, "SELECT token_store.jwt_verify({})", token, sqlstate="28000")
    fail(conn, "SELECT token_store.jwt_verify({})", forged, sqlstate="28000")
    fail(conn, "SELECT token_store.jwt_verify({})", token[:-3] + "###", sqlstate="22P02")
    fail(conn, "SELECT token_store.jwt_store({})", token, sqlstate="28000")
    fail(conn, "SELECT token_store.jwt_revoke({})", forged, sqlstate="28000")
    fail(conn, "SELECT token_store.jwt_issue({}::jsonb, '1 minute', 'no-such-kid')", json.dumps(claims),
         sqlstate="42704")
    fail(conn, "SELECT token_store.jwt_issue({}::jsonb)", json.dumps([claims]), sqlstate="22023")
    deep = {"note": claims["note"]}
    for _ in range(80):
        deep = {"d": deep}
    fail(conn, "SELECT token_store.jwt_issue({}::jsonb)", json.dumps(deep), sqlstate="54001")

    # An error PostgreSQL raises inside a token_store function (here a lock timeout while
    # create_key waits on another session's uncommitted key of the same kid) is hidden too.
    holder = ts.connect(DB)
    holder.execute("BEGIN")
    holder.execute("SELECT token_store.create_key('k-log-wait', 'HS256', %s)", ("w" * 40,))
    conn.execute("SET lock_timeout = '200ms'")
    try:
        fail(conn, "SELECT token_store.create_key('k-log-wait', 'HS256', {})", secret + "-wait", sqlstate="55P03")
    finally:
        conn.execute("RESET lock_timeout")
        holder.execute("ROLLBACK")

    # control: a failing statement of no token_store function is logged with its STATEMENT
    marker = "control-" + secrets.token_hex(6)
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute(sql.SQL("SELECT 1 / 0, {}").format(sql.Literal(marker)))

    ts.wait_for(lambda: marker in ts.log_text(start), 10, "the control statement in the server log")
    log = ts.log_text(start)
    assert "token rejected: revoked" in log and "already exists" in log, "the errors themselves are logged"
    assert "canceling statement due to lock timeout" in log
    statements = [line for line in log.splitlines() if "STATEMENT:" in line]
    assert len(statements) == 1 and marker in statements[0], statements
    for literal in (secret, other, pem_body, token, forged, claims["note"], secret + "-wait"):
        assert literal not in log, f"a literal argument reached the server log: {literal[:20]}..."
