"""Issue, verify and revoke a JWT with token_store, from Python (psycopg 3).

Connects to the cluster named by PGHOST, PGPORT, PGUSER and PGDATABASE (and PGPASSWORD if set;
libpq reads them), creates its signing key `example-python` when it is missing (that step needs
token_store_admin), then issues a token, verifies it, revokes it and checks that it is refused.
Prints each step; exits non-zero on any unexpected result.

    pip install -r requirements.txt
    python app.py
"""

import sys

import psycopg
from psycopg.types.json import Jsonb

KID = "example-python"


def fail(what: str):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def main():
    # Every value goes in as a bind parameter; autocommit: each statement is its own transaction.
    with psycopg.connect("", autocommit=True, application_name="token_store example (python)") as conn:
        version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        print(f"connected: PostgreSQL {version}")

        # 1. A signing key of our own, made inside the database (the secret never leaves it).
        if conn.execute("SELECT 1 FROM token_store.keys WHERE kid = %s", (KID,)).fetchone():
            print(f"key: {KID} exists")
        else:
            conn.execute("SELECT token_store.generate_key(%s, 'HS256')", (KID,))
            print(f"key: {KID} created")

        # 2. Issue: token_store adds iat, exp and jti, stores the token and returns it.
        claims = {"sub": "example-user", "scope": "read"}
        token = conn.execute(
            "SELECT token_store.jwt_issue(%s, %s::interval, %s)", (Jsonb(claims), "10 minutes", KID)
        ).fetchone()[0]
        if token.count(".") != 2:
            fail(f"jwt_issue returned something that is not a JWT: {token!r}")
        print(f"issued: {token[:20]}...")

        # 3. Verify: the claims (a dict), or an ERROR with SQLSTATE 28000.
        verified = conn.execute("SELECT token_store.jwt_verify(%s)", (token,)).fetchone()[0]
        if verified.get("sub") != "example-user" or verified.get("scope") != "read":
            fail(f"unexpected claims: {verified}")
        print(f"verified: sub={verified['sub']} scope={verified['scope']}")

        if conn.execute("SELECT token_store.jwt_valid(%s)", (token,)).fetchone()[0] is not True:
            fail("jwt_valid is false for a fresh token")
        print("valid: true")

        # 4. Revoke: true when this call revoked it.
        if conn.execute("SELECT token_store.jwt_revoke(%s, %s)", (token, "example")).fetchone()[0] is not True:
            fail("jwt_revoke returned false for a live token")
        print("revoked: true")

        # 5. The revoked token is refused: SQLSTATE 28000, "token rejected: revoked".
        try:
            conn.execute("SELECT token_store.jwt_verify(%s)", (token,))
            fail("a revoked token still verifies")
        except psycopg.Error as e:
            if e.sqlstate != "28000" or e.diag.message_primary != "token rejected: revoked":
                fail(f"unexpected error: {e.sqlstate} {e}")
            print(f"verify after revoke: SQLSTATE {e.sqlstate} {e.diag.message_primary}")

        info = conn.execute("SELECT token_store.jwt_introspect(%s)", (token,)).fetchone()[0]
        if info != {"active": False, "reason": "revoked"}:
            fail(f"unexpected introspection: {info}")
        print("introspect after revoke: active=false reason=revoked")
    print("done")


if __name__ == "__main__":
    try:
        main()
    except psycopg.Error as e:
        fail(f"{type(e).__name__}: {e}")
