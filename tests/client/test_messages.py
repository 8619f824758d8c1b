"""Every error a user can provoke reads as PostgreSQL's own: a lowercase message without a
trailing period, and a DETAIL and HINT that are sentences (capitalised, ending with a period).

The core crate words its reasons as lowercase clauses so they compose; src/error.rs renders them
at the one place they leave. This drives each kind of refusal through SQL and checks the text the
client receives."""

import base64
import json

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

DB = "ts_messages"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        ts.create_key(ts.connect(DB), "k-msg")
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def rsa_public_jwk() -> dict:
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers().n
    return {"kty": "RSA", "n": b64(n.to_bytes(256, "big")), "e": "AQAB"}


CASES = [
    # (statement, parameters, SQLSTATE)
    ("SELECT token_store.create_key('k1', 'XS256', 'x')", None, "22023"),
    ("SELECT token_store.create_key('k1', 'HS256', 'short')", None, "22023"),
    ("SELECT token_store.create_key('', 'HS256', repeat('s', 40))", None, "22023"),
    ("SELECT token_store.create_key('k-msg', 'HS256', repeat('s', 40))", None, "42710"),
    ("SELECT token_store.create_key('k1', 'RS256', %s)", [ec_pem()], "22023"),
    ("SELECT token_store.create_key('k1', 'ES256', %s)", ["-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"], "22023"),
    ("SELECT token_store.create_key('k1', 'ES256', %s)", ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"], "22023"),
    ("SELECT token_store.create_key('k1', 'ES256', %s)", ["-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"], "22023"),
    ("SELECT token_store.create_key('k1', 'ES256', %s)", [ec_pem() + ec_pem()], "22023"),
    ("SELECT token_store.create_key('k1', 'HS256', %s)", [json.dumps({"kty": "oct"})], "22023"),
    ("SELECT token_store.create_key('k1', 'HS256', %s)", [json.dumps({"kty": "oct", "k": "!!"})], "22023"),
    ("SELECT token_store.create_key('k1', 'RS256', %s)", [json.dumps({"kty": "RSA", "n": "AQAB"})], "22023"),
    ("SELECT token_store.create_key('k1', 'RS256', %s)", [json.dumps({**rsa_public_jwk(), "e": "AQABAQAB"})], "22023"),
    ("SELECT token_store.create_key('k1', 'ES256', %s)", [json.dumps({"kty": "EC", "crv": "P-256", "x": b64(b"\1" * 32), "y": b64(b"\2" * 32)})], "22023"),
    ("SELECT token_store.create_key('k1', 'EdDSA', %s)", [json.dumps({"kty": "OKP", "crv": "Ed25519", "x": b64(b"\0" * 32)})], "22023"),
    ("SELECT token_store.create_key('k1', 'HS256', %s)", [ec_pem().replace("PRIVATE", "PUBLIC")], "22023"),
    ("SELECT token_store.import_jwks(%s::jsonb)", [json.dumps({"keys": [{"kty": "oct", "k": b64(b"s" * 40)}]})], "22023"),
    ("SELECT token_store.import_jwks(%s::jsonb)", [json.dumps({"keys": [{"kid": "a", "kty": "oct", "k": b64(b"s" * 40)}]})], "22023"),
    ("SELECT token_store.import_jwks(%s::jsonb)", [json.dumps({"keys": "no"})], "22023"),
    ("SELECT token_store.set_key_state('k-msg', 'dormant')", None, "22023"),
    ("SELECT token_store.set_key_state('no-such-kid', 'retired')", None, "42704"),
    ("SELECT token_store.jwt_issue('[1]'::jsonb)", None, "22023"),
    ("SELECT token_store.jwt_issue('{\"exp\": \"soon\"}'::jsonb)", None, "22023"),
    ("SELECT token_store.jwt_issue('{}'::jsonb, '-1 minute')", None, "22023"),
    ("SELECT token_store.jwt_issue('{}'::jsonb, '1 minute', 'no-such-kid')", None, "42704"),
    ("SELECT token_store.jwt_issue(%s::jsonb)", ['{"n": 1' + "0" * 1100 + "}"], "22023"),
    ("SELECT token_store.jwt_issue(%s::jsonb)", ["[" * 80 + "]" * 80], "54001"),
    ("SELECT token_store.jwt_verify('not.a.token')", None, "22P02"),
    ("SELECT token_store.jwt_revoke_subject('s', repeat('r', 2000))", None, "22001"),
    ("SELECT token_store.reencrypt(0)", None, "22023"),
    ("ALTER SYSTEM SET token_store.encryption_key = 'zz'", None, "22023"),
    ("ALTER SYSTEM SET token_store.previous_encryption_keys = 'zz'", None, "22023"),
]


@pytest.mark.parametrize("query,params,sqlstate", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_error_text_is_in_postgres_style(conn, query, params, sqlstate):
    with pytest.raises(psycopg.Error) as info:
        if query.startswith("ALTER SYSTEM"):  # runs the setting's check; no transaction block
            conn.execute(query, params)
        else:
            with conn.transaction():
                conn.execute(query, params)
    diag = info.value.diag
    assert diag.sqlstate == sqlstate, f"{query}: {diag.sqlstate} {diag.message_primary}"
    message = diag.message_primary
    assert not message[0].isupper() and not message.endswith("."), f"message is not in style: {message!r}"
    for part, text in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        if text is not None:
            assert text[0].isupper() and text.endswith("."), f"{part} is not a sentence: {text!r}"
    # Where the refusal explains itself, it does so in a DETAIL, not in nothing.
    if sqlstate in ("22023", "22001", "54001"):
        assert diag.message_detail, f"{query}: no DETAIL for {message!r}"

# reencrypt's WARNING is checked in test_reencrypt_undecryptable.py.
