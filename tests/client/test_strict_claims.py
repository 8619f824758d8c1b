"""Strict JSON in correctly signed tokens: NUL characters, nesting depth, duplicate member names at
any depth, and numbers beyond 64 bits. Every token here is signed with the database's own key, so
only the JSON itself can make it malformed (22P02 'invalid token:', reason `malformed`) or not."""

import hashlib
import hmac
import json

import jwt
import pytest

DB = "ts_t_strict_claims"
KID = "strict"
SECRET = "strict-claims-suite-secret-0123456789abcdef"
# jwt.MAX_JSON_DEPTH in src/jwt.rs: the top-level object counts as level 1.
MAX_DEPTH = 64


@pytest.fixture(scope="module")
def strict_db(ts):
    ts.fresh_db(DB)
    ts.create_key(ts.connect(DB), KID, secret=SECRET)
    yield DB
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, strict_db):
    return ts.connect(strict_db)


def claims_text(ts, extra: str) -> str:
    """The JSON text of valid claims with `extra` (raw JSON members, no leading comma) added."""
    base = json.dumps(ts.claims("strict"), separators=(",", ":"))
    return base[:-1] + "," + extra + "}"


def signed(payload_text: str, header: dict | None = None) -> str:
    """PyJWT's signature over the payload text exactly as given (duplicates and all)."""
    return jwt.api_jws.encode(payload_text.encode(), SECRET, algorithm="HS256", headers=header or {"kid": KID})


def signed_raw_header(header_text: str, payload_text: str) -> str:
    """A token whose header is the given JSON text, HMAC-signed with the suite's key."""
    b64 = jwt.utils.base64url_encode
    signing_input = b64(header_text.encode()) + b"." + b64(payload_text.encode())
    sig = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(sig)).decode()


def count_rows(ts, conn) -> int:
    return ts.one(conn, "SELECT count(*) FROM token_store.tokens")


def assert_refused_everywhere(ts, conn, token: str, says: str):
    """Malformed for every function, in allow-list and deny-list mode; never stored."""
    before = count_rows(ts, conn)
    for require_stored in ("on", "off"):
        ts.set_guc(conn, "token_store.require_stored", require_stored)
        with ts.expect_error("22P02", "invalid token:") as info:
            ts.verify(conn, token)
        assert says in info.value.diag.message_primary, info.value.diag.message_primary
        assert ts.valid(conn, token) is False
        assert ts.introspect(conn, token) == {"active": False, "reason": "malformed"}
        with ts.expect_error("22P02", "invalid token:"):
            ts.store(conn, token)
        with ts.expect_error("22P02", "invalid token:"):
            ts.revoke(conn, token)
    ts.set_guc(conn, "token_store.require_stored", "on")
    assert count_rows(ts, conn) == before, "a malformed token was stored"


def assert_verifies(ts, conn, token: str) -> dict:
    """Stored, then verified; every reader returns the same claims. Returns them."""
    token_id = ts.store(conn, token)
    claims = ts.verify(conn, token)
    assert ts.valid(conn, token) is True
    assert ts.introspect(conn, token) == {"active": True, **claims, "token_id": str(token_id)}
    assert ts.one(conn, "SELECT token_store.jwt_payload(%s)", (token_id,)) == claims
    return claims


# ---- A: NUL characters ---------------------------------------------------------------------------

NUL_PAYLOADS = {
    "top-level-value": r'"note":"a\u0000b"',
    "top-level-name": r'"a\u0000b":1',
    "nested-value": r'"user":{"role":"a\u0000b"}',
    "nested-name": r'"user":{"a\u0000b":"reader"}',
    "array-element": r'"roles":["reader","a\u0000b"]',
    "object-in-array": r'"groups":[{"n":1},{"x\u0000":2}]',
    "deep": r'"a":{"b":[{"c":[["\u0000"]]}]}',
    "only-nul": r'"e":"\u0000"',
}


@pytest.mark.parametrize("case", sorted(NUL_PAYLOADS))
def test_nul_in_claims_is_malformed(ts, conn, case):
    token = signed(claims_text(ts, NUL_PAYLOADS[case]))
    assert_refused_everywhere(ts, conn, token, "NUL")


@pytest.mark.parametrize("header", [{"kid": KID, "x": "a\u0000b"}, {"kid": KID, "a\u0000": 1},
                                    {"kid": KID, "ext": {"y": ["\u0000"]}}])
def test_nul_in_header_is_malformed(ts, conn, header):
    token = signed(claims_text(ts, '"n":1'), header=header)
    assert_refused_everywhere(ts, conn, token, "NUL")


def test_escaped_backslash_u0000_is_not_nul(ts, conn):
    """The six characters \\u0000 (an escaped backslash) are text, not NUL: accepted."""
    claims = assert_verifies(ts, conn, signed(claims_text(ts, r'"note":"\\u0000","\\u0000":1')))
    assert claims["note"] == "\\u0000" and claims["\\u0000"] == 1


# ---- B: nesting depth ----------------------------------------------------------------------------

def nested(levels: int) -> str:
    """Claims whose total depth is `levels`: the top-level object and levels - 1 arrays/objects."""
    inner = levels - 1
    half = inner // 2
    # mix arrays and objects so both count
    opened = '{"o":' * half + "[" * (inner - half)
    closed = "]" * (inner - half) + "}" * half
    return '"deep":' + opened + "1" + closed


def test_nesting_at_the_limit_verifies(ts, conn):
    claims = assert_verifies(ts, conn, signed(claims_text(ts, nested(MAX_DEPTH))))
    depth, v = 1, claims["deep"]
    while isinstance(v, (dict, list)):
        depth += 1
        v = v["o"] if isinstance(v, dict) else v[0]
    assert depth == MAX_DEPTH and v == 1


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100, 127, 128, 129, 130, 200, 5000])
def test_nesting_beyond_the_limit_is_malformed(ts, conn, levels):
    token = signed(claims_text(ts, nested(levels)))
    ts.set_guc(conn, "token_store.max_token_bytes", "1000000")
    assert_refused_everywhere(ts, conn, token, f"nested more than {MAX_DEPTH} levels deep")


def test_deep_header_is_malformed(ts, conn):
    header = '{"alg":"HS256","kid":"strict","x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    token = signed_raw_header(header, claims_text(ts, '"n":1'))
    assert_refused_everywhere(ts, conn, token, "nested more than")


# ---- C: duplicate member names -------------------------------------------------------------------

DUPLICATES = {
    "nested-role": '"user":{"role":"reader","role":"admin"}',
    "in-array": '"list":[{"a":1},{"b":1,"b":2}]',
    "deep": '"a":{"b":{"c":{"d":1,"e":2,"d":3}}}',
    "escaped-spelling": r'"user":{"role":"reader","r\u006fle":"admin"}',
    "top-level-escaped": r'"x":1,"\u0078":2',
    "top-level-registered": '"sub":"alice","sub":"admin"',
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicate_members_at_any_depth_are_malformed(ts, conn, case):
    token = signed(claims_text(ts, DUPLICATES[case]))
    assert_refused_everywhere(ts, conn, token, "duplicate member name")


def test_same_name_in_sibling_objects_is_not_a_duplicate(ts, conn):
    claims = assert_verifies(
        ts, conn, signed(claims_text(ts, '"a":{"role":"reader"},"b":{"role":"admin"},"c":[{"role":1},{"role":2}]')))
    assert claims["a"] == {"role": "reader"} and claims["c"] == [{"role": 1}, {"role": 2}]


def test_duplicate_header_member_is_malformed(ts, conn):
    header = '{"alg":"HS256","kid":"strict","x":{"y":1,"y":2}}'
    assert_refused_everywhere(ts, conn, signed_raw_header(header, claims_text(ts, '"n":1')), "duplicate member name")


# ---- D: numbers ----------------------------------------------------------------------------------

EXACT_NUMBERS = {
    "i64_min": -(2**63),
    "i64_max": 2**63 - 1,
    "u64_max": 2**64 - 1,
    "u64_max_plus_1": 2**64,
    "below_i64_min": -(2**63) - 1,
    "two_pow_70": 2**70,
    "neg_two_pow_70": -(2**70),
    "uuid_as_int": 0x8F0C2A1B3D4E5F60718293A4B5C6D7E8,
    "forty_digits": 1234567890123456789012345678901234567890,
    "float": 1.5,
}


def test_numbers_within_and_beyond_64_bits_keep_every_digit(ts, conn):
    extra = ",".join(f'"{k}":{v}' for k, v in EXACT_NUMBERS.items())
    token = jwt.encode({**ts.claims("numbers"), **EXACT_NUMBERS}, SECRET, algorithm="HS256", headers={"kid": KID})
    assert extra.split(",")[0] in jwt.utils.base64url_decode(token.split(".")[1]).decode()
    claims = assert_verifies(ts, conn, token)
    for name, value in EXACT_NUMBERS.items():
        assert claims[name] == value, name
        assert type(claims[name]) is type(value), name
    # the exact digits, as PostgreSQL's numeric prints them
    for name, value in EXACT_NUMBERS.items():
        assert ts.one(conn, "SELECT token_store.jwt_verify(%s)->>%s", (token, name)) == str(value), name


DECIMAL_TEXTS = {
    "long_decimal": "0.1000000000000000000000000000000001",
    "many_digits": "3.14159265358979323846264338327950288419716939937510",
    "tiny": "1e-400",
    "huge": "1e400",
    "exponent_form_int": "12345678901234567890123e5",
}


def test_decimals_keep_every_digit(ts, conn):
    extra = ",".join(f'"{k}":{v}' for k, v in DECIMAL_TEXTS.items())
    token = signed(claims_text(ts, extra))
    token_id = ts.store(conn, token)
    for name, text in DECIMAL_TEXTS.items():
        want = ts.one(conn, "SELECT %s::numeric::text", (text,))
        assert ts.one(conn, "SELECT (token_store.jwt_verify(%s)->>%s)::numeric::text", (token, name)) == want, name
        assert ts.one(conn, "SELECT (token_store.jwt_payload(%s)->>%s)::numeric::text", (token_id, name)) == want


@pytest.mark.parametrize("text", ["1e1000", "-1e1000", "1e-1001", "0." + "0" * 1000 + "1", "1" * 1001,
                                  "0e99999999999999999999", "1e-99999999999999999999"])
def test_numbers_too_large_or_too_long_are_malformed(ts, conn, text):
    token = signed(claims_text(ts, f'"n":{text}'))
    assert_refused_everywhere(ts, conn, token, "number")


@pytest.mark.parametrize("text", ["1e999", "-9.99e999", "1e-1000", "0." + "0" * 999 + "1", "9" * 1000,
                                  "0e99999", "0.0"])
def test_numbers_at_the_limits_verify(ts, conn, text):
    token = signed(claims_text(ts, f'"n":{text}'))
    claims = assert_verifies(ts, conn, token)
    assert ts.one(conn, "SELECT (token_store.jwt_verify(%s)->>'n')::numeric = %s::numeric", (token, text))
    assert "n" in claims


def test_registered_times_beyond_64_bits_are_malformed(ts, conn):
    """exp, nbf and iat are still checked as times: a huge integer is out of range, not truncated."""
    for name in ("exp", "nbf", "iat"):
        token = signed(json.dumps({**ts.claims("t"), name: 2**70}, separators=(",", ":")))
        assert_refused_everywhere(ts, conn, token, f"{name} is out of range")
