"""A row that does not decrypt never blocks an encryption-key rotation.

One token's payload and one key's material are tampered with under the old key; reencrypt() moves
every other row onto the new key, WARNs once per bad row naming it, counts them in stats(), and
leaves them where they are: the bad token still verifies and can be revoked (only its payload is
lost), so the old key can be dropped."""

import secrets

import pytest

KEY = "token_store.encryption_key"
PREVIOUS = "token_store.previous_encryption_keys"
DB = "ts_reencrypt_bad"


@pytest.fixture
def db(ts):
    ts.fresh_db(DB)
    yield ts.connect(DB)
    ts.configure(ts.admin_conn(), {KEY: None, PREVIOUS: None}, {KEY: "(hidden)", PREVIOUS: ""})
    ts.drop_db(DB)


def flip_last_byte(conn, table: str, column: str, where: str, value):
    conn.execute(
        f"UPDATE token_store.{table} SET {column} = "
        f"overlay({column} placing set_byte('\\x00'::bytea, 0, get_byte({column}, length({column}) - 1) # 1) "
        f"from length({column})) WHERE {where} = %s",
        (value,),
    )


def test_reencrypt_moves_what_it_can_and_reports_the_rest(ts, db):
    conn = db
    old_key = ts.encryption_key_text()
    new_key = secrets.token_hex(32)
    ts.secrets.add(new_key)
    ts.create_key(conn, "hs-good")
    ts.create_key(conn, "hs-bad")
    tokens = [ts.issue(conn, ts.claims(f"u{i}"), kid="hs-good") for i in range(7)]
    bad_id = ts.one(conn, "SELECT id FROM token_store.tokens WHERE subject = 'u3'")
    flip_last_byte(conn, "tokens", "payload", "id", bad_id)
    flip_last_byte(conn, "signing_keys", "material", "kid", "hs-bad")
    ts.configure(ts.admin_conn(), {KEY: new_key, PREVIOUS: old_key}, {KEY: "(hidden)", PREVIOUS: "(hidden)"})

    notices = []  # (message, detail, hint): a notice's Diagnostic is valid only inside the handler
    conn.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_detail, d.message_hint)))
    moved, rounds = 0, 0
    while n := ts.one(conn, "SELECT token_store.reencrypt(2)"):
        moved += n
        rounds += 1
        assert rounds < 20
    assert moved == 6 + 1, "six good token rows and one good key moved"
    bad_rows = [n for n in notices if n[0].startswith("cannot decrypt")]
    warnings = [message for message, _, _ in bad_rows]
    assert len(set(warnings)) == 2, warnings  # each call of reencrypt warns of each bad row again
    for _, detail, hint in bad_rows:  # DETAIL and HINT are sentences
        assert detail[0].isupper() and detail.endswith("."), detail
        assert hint[0].isupper() and hint.endswith("."), hint
    assert any(str(bad_id) in w and w.startswith("cannot decrypt payload of token") for w in warnings), warnings
    assert any('key "hs-bad"' in w for w in warnings), warnings
    assert ts.stats(conn)["reencrypt_undecryptable"] == 2
    per_key = ts.stats(conn)["rows_per_key"]
    assert sorted(per_key.values()) == [2, 7], per_key  # the two bad rows stay under the old key

    # the old key goes; the good rows decrypt, the bad token still verifies and revokes
    ts.configure(ts.admin_conn(), {PREVIOUS: None}, {PREVIOUS: ""})
    fresh = ts.connect(DB)
    subs = sorted(p["sub"] for (p,) in fresh.execute(
        "SELECT token_store.jwt_payload(id) FROM token_store.tokens WHERE id <> %s", (bad_id,)).fetchall())
    assert subs == [f"u{i}" for i in range(7) if i != 3]
    with ts.expect_error("XX001", "cannot decrypt payload of token"):
        ts.one(fresh, "SELECT token_store.jwt_payload(%s)", (bad_id,))
    assert all(ts.valid(fresh, t) for t in tokens)
    assert ts.revoke(fresh, tokens[3]) is True
    ts.assert_rejected(fresh, tokens[3], "revoked")
