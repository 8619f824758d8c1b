"""Hostile input at the SQL level: thousands of deterministic inputs, none of which may verify,
raise anything but 22P02/28000, or crash a backend (the postmaster start time must not change)."""

import base64
import json
import random

import pytest

DB = "ts_hostile"
SECRET = "hostile-suite-secret-0123456789abcdef"
SEED = 20261129


def b64(data) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def structural_inputs() -> list[str]:
    """Empty, huge, wrong part counts, bad base64url, non-UTF-8, non-objects, nesting, duplicates."""
    good_h, good_p = b64('{"alg":"HS256","kid":"k"}'), b64('{"sub":"x","exp":4102444800}')
    out = ["", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d", "." * 1000, "é.é.é", "\u202e.x.y",
           " " + good_h + "." + good_p + ".sig", good_h + "." + good_p + ".si g", good_h + "==." + good_p + ".sig",
           good_h + "." + good_p + ".sig=", good_h + "." + good_p + ".s+g/", good_h + ".." + "sig"]
    for n in (16383, 16384, 16385, 100_000, 1_000_000):
        out.append(("a." * n)[:n])
    for raw in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"{\"alg\":\"HS256\"\xff}"):
        out.append(b64(raw) + "." + good_p + ".c2ln")
        out.append(good_h + "." + b64(raw) + ".c2ln")
    for doc in ("[]", "[1]", "1", '"s"', "null", "true", "{", '{"alg":', '{"alg":"HS256",}', "{'alg':'HS256'}",
                '{"alg":"HS256","alg":"HS256"}', '{"alg":"HS256","kid":"k","kid":"j"}', "{}" * 2):
        out.append(b64(doc) + "." + good_p + ".c2ln")
        out.append(good_h + "." + b64(doc) + ".c2ln")
    for depth in (64, 200, 10_000):
        nested = '{"sub":"x","exp":4102444800,"n":' + "[" * depth + "]" * depth + "}"
        out.append(good_h + "." + b64(nested) + ".c2ln")
    return out


def claim_values() -> list:
    return [1e400, -1e400, -1e18, 2**70, -(2**70), "1", "", [1], {}, None, True, 1.5, 0, -1, 253402300800,
            -62135596801, 1e-300, "4102444800"]


def header_variants() -> list[dict]:
    return [
        {"alg": "none"}, {"alg": "None"}, {"alg": "NONE"}, {"alg": ""}, {"alg": None}, {"alg": 1},
        {"alg": ["HS256"]}, {"alg": "hs256"}, {"alg": "HS256 "}, {"alg": "HS256\u0000"}, {"alg": "RS256"},
        {"alg": "HS256", "kid": "k'; DROP TABLE token_store.tokens; --"}, {"alg": "HS256", "kid": 'k"'},
        {"alg": "HS256", "kid": "k\u0000"}, {"alg": "HS256", "kid": "../../etc/passwd"},
        {"alg": "HS256", "kid": "x" * 10_000}, {"alg": "HS256", "kid": 7}, {"alg": "HS256", "kid": None},
        {"alg": "HS256", "jku": "http://127.0.0.1:9/jwks.json"}, {"alg": "HS256", "x5u": "http://127.0.0.1:9/c"},
        {"alg": "HS256", "jwk": {"kty": "oct", "k": b64("x" * 32)}}, {"alg": "HS256", "crit": ["exp"]},
        {"alg": "HS256", "crit": []}, {"alg": "HS256", "b64": False, "crit": ["b64"]},
    ]


def forged_inputs() -> list[str]:
    """Well-formed-looking tokens with hostile headers and claims, signed with a key we do not hold."""
    out = []
    sig = b64(b"\x00" * 32)
    for h in header_variants():
        out.append(b64(json.dumps(h)) + "." + b64('{"sub":"x","exp":4102444800}') + "." + sig)
    h = b64('{"alg":"HS256","kid":"k"}')
    for name in ("exp", "nbf", "iat"):
        for v in claim_values():
            claims = {"sub": "x", "exp": 4102444800, name: v}
            out.append(h + "." + b64(json.dumps(claims)) + "." + sig)
            out.append(h + "." + b64(json.dumps(claims).replace("Infinity", "1e400")) + "." + sig)
    for name in ("sub", "iss", "jti", "aud"):
        for v in (5, None, [1], {"a": 1}, "a\u0000b", ["a", 1]):
            out.append(h + "." + b64(json.dumps({"exp": 4102444800, name: v})) + "." + sig)
    return out


def mutations(token: str, rng: random.Random, n: int) -> list[str]:
    alphabet = "ABCxyz019-_.=+/ \u00e9\u0000"
    out = []
    for _ in range(n):
        t = list(token)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(t))
            if op < 0.5:
                t[i] = rng.choice(alphabet)
            elif op < 0.75:
                del t[i]
            else:
                t.insert(i, rng.choice(alphabet))
        mutated = "".join(t).replace("\u0000", "")  # PostgreSQL text cannot carry NUL
        if mutated != token:
            out.append(mutated)
    return out


def hostile_key_material() -> list[str]:
    pem = "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n"
    out = ["", "x", "{", "{}", "[]", '{"kty":1}', '{"kty":"oct"}', '{"kty":"oct","k":5}', '{"kty":"oct","k":"!!"}',
           '{"kty":"RSA","n":"AQAB","e":"AQAB"}', '{"kty":"RSA","n":"' + b64(b"\x01" * 255) + '","e":"AQAB"}', '{"kty":"RSA","n":"' + b64(b"\x01" * 300) + '","e":"AQ"}',
           '{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}', '{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}',
           '{"kty":"OKP","crv":"Ed25519","x":"' + b64(b"\x00" * 32) + '"}', '{"kty":"OKP","crv":"X25519","x":"AA"}',
           pem.format("PRIVATE KEY", "AAAA"), pem.format("PUBLIC KEY", "!!!!"), pem.format("RSA PRIVATE KEY", ""),
           pem.format("EC PRIVATE KEY", b64(b"\x30\x82\xff\xff")), pem.format("CERTIFICATE", "MIIB"),
           pem.format("ENCRYPTED PRIVATE KEY", "MIIB"), "-----BEGIN PUBLIC KEY-----", "\u0001" * 100,
           '{"kty":"RSA","n":"' + "A" * 100_000 + '","e":"AQAB"}', "[" * 5000 + "]" * 5000]
    return out


@pytest.fixture(scope="module")
def hostile_db(ts):
    ts.fresh_db(DB)
    ts.create_key(ts.connect(DB), "k", secret=SECRET)
    yield DB
    ts.drop_db(DB)


@pytest.fixture
def hostile(ts, hostile_db):
    return ts.connect(hostile_db)


def postmaster_start(ts, conn):
    return ts.one(conn, "SELECT pg_postmaster_start_time()")


def classify(ts, conn, tokens: list[str]) -> dict:
    """Run every token through jwt_valid (one statement) and jwt_verify (one each, in a savepoint
    so errors roll back cleanly); return SQLSTATE counts of jwt_verify."""
    valid = ts.rows(conn, "SELECT token_store.jwt_valid(t) FROM unnest(%s::text[]) AS t", (tokens,))
    assert not any(v for (v,) in valid), "a hostile input verified"
    outcomes: dict = {}
    with conn.cursor() as cur:
        for t in tokens:
            try:
                cur.execute("SELECT token_store.jwt_verify(%s)", (t,))
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except Exception as e:  # noqa: BLE001 - the SQLSTATE is what is checked
                state = getattr(e, "sqlstate", None) or type(e).__name__
                outcomes[state] = outcomes.get(state, 0) + 1
    return outcomes


def test_hostile_tokens(ts, hostile):
    conn = hostile
    before = postmaster_start(ts, conn)
    log_offset = ts.log_size()
    rng = random.Random(SEED)
    good = ts.issue(conn, ts.claims("victim"), kid="k")
    inputs = structural_inputs() + forged_inputs() + mutations(good, rng, 3000)
    # the legitimately signed original is the only one allowed through; mutations that only touch
    # nothing meaningful cannot exist for HMAC, so each must fail
    inputs = [t for t in inputs if t != good]
    assert len(inputs) >= 3000
    outcomes = classify(ts, conn, inputs)
    assert set(outcomes) <= {"22P02", "28000"}, outcomes
    assert sum(outcomes.values()) == len(inputs)
    assert ts.valid(conn, good), "the real token still verifies after the barrage"
    assert postmaster_start(ts, conn) == before, "the postmaster restarted: a backend crashed"
    assert "terminated by signal" not in ts.log_text(log_offset)


def test_hostile_key_material(ts, hostile):
    conn = hostile
    before = postmaster_start(ts, conn)
    states: dict = {}
    algs = ["HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA"]
    with conn.cursor() as cur:
        for i, material in enumerate(hostile_key_material()):
            for alg in algs:
                try:
                    cur.execute("SELECT token_store.create_key(%s, %s, %s)", (f"h{i}-{alg}", alg, material))
                    states["ok"] = states.get("ok", 0) + 1
                except Exception as e:  # noqa: BLE001
                    states[e.sqlstate] = states.get(e.sqlstate, 0) + 1
        for doc in ['{"keys":1}', '{"keys":[1]}', '{"keys":[{}]}', '{"keys":[{"kty":"EC","kid":"a"}]}', "[]", "{}",
                    '{"keys":[{"kty":"oct","kid":"o","alg":"HS256","k":"AAAA"}]}', '"keys"',
                    '{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"}]}']:
            try:
                cur.execute("SELECT token_store.import_jwks(%s::jsonb)", (doc,))
                states["ok"] = states.get("ok", 0) + 1
            except Exception as e:  # noqa: BLE001
                states[e.sqlstate] = states.get(e.sqlstate, 0) + 1
    # "x" and the other short texts are refused for HMAC; long enough junk is a valid HMAC secret,
    # which is the only thing allowed to succeed
    ok_kids = ts.rows(conn, "SELECT kid, alg FROM token_store.keys WHERE kid LIKE 'h%%'")
    assert all(alg.startswith("HS") for (_, alg) in ok_kids), ok_kids
    assert set(states) <= {"ok", "22023"}, states
    assert states.get("22023", 0) >= len(hostile_key_material()) * 5
    assert postmaster_start(ts, conn) == before
