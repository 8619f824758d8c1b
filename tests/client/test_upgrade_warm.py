"""A warm backend across ALTER EXTENSION token_store UPDATE and across DROP EXTENSION + CREATE
EXTENSION of another version (issue 19): a session that verified before (relations resolved, keys
parsed, the session tables known to be there or not) answers at its next statement as the schema
now is. The archived install scripts are copied into the private copy of PostgreSQL only, as
test_upgrade.py does (and with its helpers)."""

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from test_upgrade import current_version, install_archived, released_versions, version_key

DB = "ts_t_upgrade_warm"
KID = "k-upwarm"


@pytest.fixture
def db(ts):
    ts.drop_db(DB)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    for v in released_versions():
        if version_key(v) < version_key(current_version(ts)):
            install_archived(ts, v)
    yield DB
    ts.close_all()
    ts.drop_db(DB)


def create(conn, version=None):
    if version is None:
        conn.execute("CREATE EXTENSION token_store")
    else:
        conn.execute(sql.SQL("CREATE EXTENSION token_store VERSION {}").format(sql.Literal(version)))


def version_of(ts, conn):
    return ts.one(conn, "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'token_store'")


def warm_backend(ts, conn, secret):
    """A backend that has verified (a token with a sid too), read the stats and purged: every cache
    of the read path and of the session tables' presence is filled."""
    token = ts.mint(ts.claims(sub="upwarm"), secret, "HS256", KID)
    with_sid = ts.mint(ts.claims(sub="upwarm", sid="7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10"), secret, "HS256", KID)
    conn.execute("SET token_store.require_stored = off")
    for _ in range(3):
        assert ts.valid(conn, token) is True
        assert ts.valid(conn, with_sid) is True
    ts.stats(conn)
    ts.one(conn, "SELECT token_store.purge()")
    return token


def session_ended_in(ts, a, b):
    """A session started and ended by `a`: warm backend `b` refuses its access token, and every
    function of `b` that reads the session tables works."""
    pair = ts.one(a, "SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": "upwarm-sess"}), KID))
    assert ts.valid(b, pair["access_token"]) is True
    assert ts.one(a, "SELECT token_store.session_end(%s::uuid)", (pair["session_id"],)) is True
    ts.assert_rejected(b, pair["access_token"], "session_ended")
    assert ts.stats(b)["active"] >= 0
    assert ts.one(b, "SELECT token_store.purge()") >= 0
    assert ts.one(b, "SELECT token_store.jwt_revoke_subject('upwarm-nobody')") == 0


def issuer_token(ts):
    """A registered issuer's ES256 token and the rows that register it (as a good fetch leaves
    them), written by a superuser: no identity provider is needed to show the tables are read."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    iss = "https://upwarm-idp.example"
    token = jwt.encode(ts.claims(sub="upwarm-idp-user") | {"iss": iss}, key, algorithm="ES256",
                       headers={"kid": "upwarm-idp-1"})
    return iss, spki, token


def register_issuer(a, iss, spki):
    a.execute("""INSERT INTO token_store.identity_providers (issuer, jwks_uri, fetched_at, fresh_until,
                        next_fetch_at) VALUES (%s, 'https://upwarm-idp.example/certs', now(),
                        now() + interval '1 day', now() + interval '1 day')""", (iss,))
    a.execute("""INSERT INTO token_store.issuer_keys (issuer, position, kid, alg, material)
                 VALUES (%s, 0, 'upwarm-idp-1', 'ES256', %s)""", (iss, spki))


@pytest.mark.parametrize("old", ["0.2.0", "0.3.0"])
def test_warm_backend_across_alter_extension_update(ts, db, old):
    """0.2.0 -> 0.3.0 (the update adds the session tables) and 0.3.0 -> the current version."""
    current = current_version(ts)
    target = "0.3.0" if old == "0.2.0" else current
    assert version_key(old) < version_key(target) <= version_key(current)
    a, b = ts.connect(db), ts.connect(db)
    create(a, old)
    secret = ts.create_key(a, KID, "HS256")
    token = warm_backend(ts, b, secret)

    iss, spki, idp_token = issuer_token(ts)
    if old == "0.3.0":
        # no issuer tables yet: the token's kid is no key of ours
        ts.assert_rejected(b, idp_token, "unknown_key")

    a.execute(sql.SQL("ALTER EXTENSION token_store UPDATE TO {}").format(sql.Literal(target)))
    assert version_of(ts, a) == target
    session_ended_in(ts, a, b)
    if old == "0.3.0":
        # the issuer tables the update added are read by the warm backend at its next statement
        register_issuer(a, iss, spki)
        assert ts.valid(b, idp_token) is True
        a.execute("DELETE FROM token_store.issuer_keys WHERE issuer = %s", (iss,))
        ts.assert_rejected(b, idp_token, "unknown_key")
    assert ts.valid(b, token) is True
    a.execute("SELECT token_store.set_key_state(%s, 'retired')", (KID,))
    ts.assert_rejected(b, token, "unknown_key")


@pytest.mark.parametrize("first,then", [("current", "0.2.0"), ("0.2.0", "current"), ("current", "0.3.0"),
                                        ("0.3.0", "current")])
def test_warm_backend_across_drop_and_create_of_another_version(ts, db, first, then):
    """DROP EXTENSION, then CREATE EXTENSION of another version in another session: the warm
    backend's next statement works on the new schema (session tables gone, or there again), and
    its key set is the new, empty one."""
    a, b = ts.connect(db), ts.connect(db)
    create(a, None if first == "current" else first)
    secret = ts.create_key(a, KID, "HS256")
    token = warm_backend(ts, b, secret)

    a.execute("DROP EXTENSION token_store")
    create(a, None if then == "current" else then)
    ts.assert_rejected(b, token, "unknown_key")  # new, empty keys table
    # every function of the warm backend that reads or writes the session tables when present
    st = ts.stats(b)
    assert st["active"] == 0
    assert ts.one(b, "SELECT token_store.purge()") == 0
    assert ts.one(b, "SELECT token_store.jwt_revoke_subject('upwarm-nobody')") == 0
    ts.create_key(a, KID, "HS256", secret)
    # 0.2.0's schema has no trigger on the keys table: the new key must reach b all the same
    assert ts.introspect(b, token).get("reason") is None
    assert ts.valid(b, token) is True
    if then == "0.2.0":
        with_sid = ts.mint(ts.claims(sub="upwarm", sid="7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10"), secret, "HS256", KID)
        assert ts.valid(b, with_sid) is True
    else:
        session_ended_in(ts, a, b)


def test_key_changes_reach_warm_backend_on_a_schema_not_yet_updated(ts, db):
    """Between installing the new library and ALTER EXTENSION UPDATE, the library serves the old
    schema: 0.2.0's has no trigger on the keys table, and key changes must reach warm backends all
    the same."""
    a, b = ts.connect(db), ts.connect(db)
    create(a, "0.2.0")
    secret = ts.create_key(a, KID, "HS256")
    token = warm_backend(ts, b, secret)
    a.execute("SELECT token_store.set_key_state(%s, 'retired')", (KID,))
    ts.assert_rejected(b, token, "unknown_key")
    a.execute("SELECT token_store.set_key_state(%s, 'active')", (KID,))
    assert ts.valid(b, token) is True
    other = ts.create_key(a, "k-upwarm-2", "HS256")
    assert ts.valid(b, ts.mint(ts.claims(sub="upwarm"), other, "HS256", "k-upwarm-2")) is True
