"""Encryption-key rotation end to end: edit the configuration, reload, reencrypt, drop the old key."""

import secrets

import jwt

import pytest

KEY = "token_store.encryption_key"
PREVIOUS = "token_store.previous_encryption_keys"
DB = "ts_rotation"


def fingerprints(ts, conn) -> dict:
    return ts.stats(conn)["rows_per_key"]


@pytest.fixture
def rotation_db(ts):
    ts.fresh_db(DB)
    yield ts.connect(DB)
    # back to the cluster's own key (from its include file) for the tests that follow
    ts.configure(ts.admin_conn(), {KEY: None, PREVIOUS: None}, {KEY: "(hidden)", PREVIOUS: ""})
    ts.drop_db(DB)


def test_rotation_end_to_end(ts, rotation_db):
    conn = rotation_db
    old_key = ts.encryption_key_text()
    new_key = secrets.token_hex(32)
    ts.secrets.add(new_key)
    secret = ts.create_key(conn, "hs")
    conn.execute("SELECT token_store.generate_key('ec', 'ES256')")
    old_tokens = [ts.issue(conn, ts.claims(f"old{i}"), kid=kid) for i, kid in enumerate(["hs", "ec"] * 3)]
    (old_fp,) = fingerprints(ts, conn).keys()
    assert fingerprints(ts, conn) == {old_fp: len(old_tokens) + 2}

    # 1. rotate: the new key encrypts, the old one still decrypts
    ts.configure(ts.admin_conn(), {KEY: new_key, PREVIOUS: old_key}, {KEY: "(hidden)", PREVIOUS: "(hidden)"})
    for t in old_tokens:
        assert ts.valid(conn, t)
    assert all(p["sub"].startswith("old") for (p,) in conn.execute(
        "SELECT token_store.jwt_payload(id) FROM token_store.tokens").fetchall())
    new_tokens = [ts.issue(conn, ts.claims(f"new{i}"), kid=kid) for i, kid in enumerate(["hs", "ec"])]
    per_key = fingerprints(ts, conn)
    assert len(per_key) == 2 and per_key[old_fp] == len(old_tokens) + 2
    (new_fp,) = set(per_key) - {old_fp}
    assert per_key[new_fp] == len(new_tokens)

    # 2. without the old key, old rows are refused loudly, naming the row and the fingerprint
    ts.configure(ts.admin_conn(), {PREVIOUS: None}, {PREVIOUS: ""})
    old_id = ts.one(conn, "SELECT id FROM token_store.tokens WHERE key_fingerprint = %s LIMIT 1", (old_fp,))
    with ts.expect_error("XX001", "cannot decrypt payload of token") as info:
        ts.one(conn, "SELECT token_store.jwt_payload(%s)", (old_id,))
    assert str(old_id) in info.value.diag.message_primary
    assert old_fp in info.value.diag.message_detail
    ts.configure(ts.admin_conn(), {PREVIOUS: old_key}, {PREVIOUS: "(hidden)"})

    # 3. reencrypt in small batches until nothing is left under the old key
    moved, rounds = 0, 0
    while n := ts.one(conn, "SELECT token_store.reencrypt(2)"):
        moved += n
        rounds += 1
        assert rounds < 20
    assert moved == len(old_tokens) + 2, "every old token row and both keys' material moved"
    assert rounds >= 3, "batches of 2 took several calls"
    assert fingerprints(ts, conn) == {new_fp: len(old_tokens) + len(new_tokens) + 2}

    # 4. drop the old key: everything still decrypts, every key still signs and verifies
    ts.configure(ts.admin_conn(), {PREVIOUS: None}, {PREVIOUS: ""})
    conn2 = ts.connect(DB)  # a fresh backend, with no key cached
    subs = sorted(p["sub"] for (p,) in conn2.execute(
        "SELECT token_store.jwt_payload(id) FROM token_store.tokens").fetchall())
    assert subs == sorted([f"old{i}" for i in range(6)] + ["new0", "new1"])
    for t in old_tokens + new_tokens:
        assert ts.valid(conn2, t)
    for kid in ("hs", "ec"):
        assert ts.valid(conn2, ts.issue(conn2, ts.claims("after"), kid=kid))
    # the HMAC secret was re-sealed, not changed: PyJWT still verifies what we issue
    issued = ts.issue(conn2, ts.claims("pyjwt"), kid="hs")
    assert jwt.decode(issued, secret, algorithms=["HS256"])["sub"] == "pyjwt"
