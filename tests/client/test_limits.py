"""Bounded work from one call: oversized claims are refused before signing, deep claims before
parsing, and a revoke reason is capped (it is stored in clear)."""

import json
import time

import pytest
from psycopg.types.json import Jsonb

DB = "ts_limits"
KID = "k-limits"


@pytest.fixture(scope="module")
def db(ts):
    ts.fresh_db(DB)
    c = ts.connect(DB)
    c.execute("SELECT token_store.generate_key(%s, 'RS256')", (KID,))
    yield DB
    ts.close_all()
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def test_claims_too_large_for_a_token_are_refused_before_signing(ts, conn):
    limit = int(ts.one(conn, "SELECT setting FROM pg_settings WHERE name = 'token_store.max_token_bytes'"))
    big = {"sub": "big", "blob": "x" * (20 * 1024 * 1024)}
    with ts.expect_error("22023", "claims are too large") as info:
        ts.issue(conn, big, kid=KID)
    assert f"({limit} bytes)" in info.value.diag.message_detail
    # just under the limit still signs; the signed token stays within it
    fits = {"sub": "fits", "blob": "y" * (limit // 2)}
    token = ts.issue(conn, fits, kid=KID)
    assert len(token) <= limit and ts.valid(conn, token)


def test_claims_nested_beyond_the_documented_depth_are_refused(ts, conn):
    def nested(depth):
        doc = {"leaf": True}
        for _ in range(depth - 1):
            doc = {"n": doc}
        return doc
    ok = ts.issue(conn, {"sub": "deep-ok", "d": nested(63)}, kid=KID)  # 64 levels with the top
    assert ts.verify(conn, ok)["sub"] == "deep-ok"
    for depth in (64, 127, 200, 1500):
        text = '{"sub":"deep","d":' + '{"n":' * depth + "1" + "}" * depth + "}"
        with ts.expect_error("54001", "claims are nested too deeply") as info:
            ts.one(conn, "SELECT token_store.jwt_issue(%s::jsonb, '1 minute', %s)", (text, KID))
        assert "at most 64 levels" in info.value.diag.message_detail
    arrays = [[[[]]]]
    for _ in range(100):
        arrays = [arrays]
    with ts.expect_error("54001", "claims are nested too deeply"):
        ts.issue(conn, {"sub": "deep", "a": arrays}, kid=KID)
    with ts.expect_error("22023", "claims cannot be used") as info:
        ts.one(conn, "SELECT token_store.jwt_issue(%s::jsonb, '1 minute', %s)",
               ('{"sub": "long", "n": ' + "9" * 1001 + "}", KID))
    assert "1000 digits" in info.value.diag.message_detail
    deep_jwks = {"keys": [nested(100)]}
    with ts.expect_error("54001", "JWKS documents are nested too deeply"):
        ts.one(conn, "SELECT token_store.import_jwks(%s)", (Jsonb(deep_jwks),))


def test_revoke_reason_is_capped(ts, conn):
    tokens = [ts.issue(conn, ts.claims(sub=f"reason{i}"), kid=KID) for i in range(3)]
    ids = [ts.one(conn, "SELECT (token_store.jwt_introspect(%s)->>'token_id')::uuid", (t,)) for t in tokens]
    huge = "r" * (10 * 1024 * 1024)
    with ts.expect_error("22001", "revoke reason is too long"):
        ts.revoke(conn, tokens[0], huge)
    with ts.expect_error("22001", "revoke reason is too long"):
        ts.one(conn, "SELECT token_store.jwt_revoke_id(%s, %s)", (ids[1], "r" * 1025))
    with ts.expect_error("22001", "revoke reason is too long"):
        ts.one(conn, "SELECT token_store.jwt_revoke_subject('reason2', %s)", ("é" * 513,))  # 1026 bytes
    assert all(ts.valid(conn, t) for t in tokens), "nothing was revoked by a refused call"
    assert ts.revoke(conn, tokens[0], "r" * 1024) is True
    assert ts.one(conn, "SELECT length(revoke_reason) FROM token_store.tokens WHERE id = %s", (ids[0],)) == 1024
