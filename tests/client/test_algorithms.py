"""Every JWS algorithm against two independent implementations, PyJWT and jwcrypto, in both
directions, and the RFC 7515 appendix A examples.

- theirs -> ours: keys made with `cryptography`, registered in every form create_key accepts (PEM:
  PKCS#8, PKCS#1, SEC1, SPKI; JWK: private and public; for HS*: the secret and an oct JWK); tokens
  signed by PyJWT and by jwcrypto, with and without kid, are stored and verify with equal claims.
- ours -> theirs: keys from generate_key; issued tokens verify in both libraries with the public
  keys of jwks() (for HS*: the secret given to create_key).
- RFC 7515 A.1, A.2 and A.3: the RFC's keys and tokens, verbatim. Their signatures verify (the
  verdict is `expired`: their exp is in 2011), a tampered copy's does not.
"""

import json
import time
import uuid

import jwt
import pytest

import algkit as ak

THEIRS_DB = "ts_t_alg_theirs"
OURS_DB = "ts_t_alg_ours"
RFC_DB = "ts_t_alg_rfc7515"


@pytest.fixture(scope="module")
def theirs_db(ts):
    ts.fresh_db(THEIRS_DB)
    yield THEIRS_DB
    ts.drop_db(THEIRS_DB)


KEY_FORMS = [pytest.param(alg, form, id=f"{alg}-{form}") for alg in ak.ALL_ALGS for form in ak.forms(alg)]


@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "no-kid"])
@pytest.mark.parametrize("lib", ak.LIBS)
@pytest.mark.parametrize("alg,form", KEY_FORMS)
def test_their_token_verifies_here(ts, theirs_db, alg, form, lib, with_kid):
    conn = ts.connect(theirs_db)
    kid = f"{alg}-{form}-{lib}-{'kid' if with_kid else 'nokid'}"
    key = ak.signing_key(alg)
    claims = ts.claims(
        sub=f"user-{uuid.uuid4()}", iss="https://idp.example", aud=["svc-a", "svc-b"],
        scope="read write", profile={"name": "Zoë ✓", "n": 42, "ratio": 1.5, "ok": True, "none": None},
    )
    token = ak.mint(lib, claims, alg, key, kid if with_kid else None)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg and header.get("kid") == (kid if with_kid else None)

    with ak.sole_key_of_its_alg(ts, conn, kid, alg, ak.material(key, form)):
        assert ak.key_row(conn, kid) == (alg, "active", form in ak.PRIVATE_FORMS)
        token_id = ts.store(conn, token)
        assert ts.store(conn, token) == token_id
        assert ts.verify(conn, token) == claims
        assert ts.verify(conn, token, "svc-b", "https://idp.example") == claims
        assert ts.introspect(conn, token) == {"active": True, **claims, "token_id": str(token_id)}
        # the key that verified it, also when the token named none
        assert ts.one(conn, "SELECT kid FROM token_store.tokens WHERE id = %s", (token_id,)) == kid
        assert ts.valid(conn, ak.tamper(token, "payload")) is False


@pytest.mark.parametrize("alg,form", KEY_FORMS)
def test_registered_key_signs_only_when_private(ts, theirs_db, alg, form):
    """A private form signs tokens both libraries accept with the public half they computed
    themselves; a public form verifies only (55000 on jwt_issue). jwks() publishes the public
    half exactly as jwcrypto writes it."""
    conn = ts.connect(theirs_db)
    kid = f"{alg}-{form}-issue"
    key = ak.signing_key(alg)
    with ak.sole_key_of_its_alg(ts, conn, kid, alg, ak.material(key, form)):
        if ak.KIND[alg] != "oct":
            published = [k for k in ts.one(conn, "SELECT token_store.jwks()")["keys"] if k["kid"] == kid]
            assert published == [{**ak.public_jwk(alg), "kid": kid, "alg": alg, "use": "sig"}]
        if form not in ak.PRIVATE_FORMS:
            with ts.expect_error("55000"):
                ts.issue(ts.connect(theirs_db), {"sub": "nobody"}, "5 minutes", kid)
            return
        token = ts.issue(conn, {"sub": f"signed-by-{form}"}, "5 minutes", kid)
        verifier = key if ak.KIND[alg] == "oct" else ak.public_jwk(alg)
        for lib in ak.LIBS:
            assert ak.decode(lib, token, alg, verifier)["sub"] == f"signed-by-{form}", lib


@pytest.fixture(scope="module")
def generated(ts):
    """alg -> (kid, key for verifying there): generate_key's public JWK, or for HS* the secret
    given to create_key (generate_key never reveals one)."""
    ts.fresh_db(OURS_DB)
    conn = ts.connect(OURS_DB)
    out = {}
    for alg in ak.ALL_ALGS:
        kid = f"gen-{alg}"
        if alg in ak.HMAC_ALGS:
            out[alg] = (kid, ts.create_key(conn, kid, alg))
            continue
        jwk = ts.one(conn, "SELECT token_store.generate_key(%s, %s)", (kid, alg))
        assert {k: jwk[k] for k in ("kid", "alg", "use")} == {"kid": kid, "alg": alg, "use": "sig"}
        assert not ak.PRIVATE_JWK_MEMBERS & jwk.keys(), f"generate_key returned private members: {jwk}"
        out[alg] = (kid, jwk)
    yield out
    ts.drop_db(OURS_DB)


@pytest.mark.parametrize("lib", ak.LIBS)
@pytest.mark.parametrize("alg", ak.ALL_ALGS)
def test_our_token_verifies_there(ts, generated, alg, lib):
    conn = ts.connect(OURS_DB)
    kid, generated_key = generated[alg]
    claims = {"sub": f"ours-{alg}", "scope": "read", "n": 7, "nested": {"list": [1, "ü", None]}}
    before = int(time.time())
    token = ts.issue(conn, claims, "10 minutes", kid)
    after = int(time.time())
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": kid, "typ": "JWT"}

    if alg in ak.HMAC_ALGS:
        verifier = generated_key
    else:
        verifier = ts.one(conn, "SELECT token_store.jwks()")
        assert generated_key in verifier["keys"], "generate_key's JWK is not the one jwks() publishes"
    decoded = ak.decode(lib, token, alg, verifier)
    assert {k: decoded[k] for k in claims} == claims
    assert before <= decoded["iat"] <= after and decoded["exp"] - decoded["iat"] == 600
    assert str(uuid.UUID(decoded["jti"])) == decoded["jti"]
    assert ts.verify(conn, token) == decoded
    with pytest.raises(ak.BAD_SIGNATURE[lib]):
        ak.decode(lib, ak.tamper(token, "payload"), alg, verifier)


# ---- RFC 7515 appendix A ------------------------------------------------------------------------
# The JWK members and the compact serializations exactly as RFC 7515 prints them.

RFC7515_CLAIMS = {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}
RFC7515 = {
    "A.1": (
        "HS256",
        {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ),
    "A.2": (
        "RS256",
        {
            "kty": "RSA",
            "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx"
                 "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs"
                 "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH"
                 "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV"
                 "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8"
                 "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
            "e": "AQAB",
            "d": "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97I"
                 "jlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0"
                 "BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn"
                 "439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYT"
                 "CBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLh"
                 "BOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
            "p": "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdi"
                 "YrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPG"
                 "BY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
            "q": "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxa"
                 "ewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA"
                 "-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
            "dp": "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3Q"
                  "CLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb"
                  "34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
            "dq": "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa"
                  "7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-ky"
                  "NlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
            "qi": "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2o"
                  "y26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLU"
                  "W0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U",
        },
        "eyJhbGciOiJSUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CU"
        "Ar7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO"
        "--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN"
        "_IoypGlUPQGe77Rw",
    ),
    "A.3": (
        "ES256",
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
        },
        "eyJhbGciOiJFUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    ),
}
PUBLIC_MEMBERS = {"kty", "crv", "n", "e", "x", "y"}
RFC_CASES = [
    pytest.param("A.1", "as-given", id="A.1-HS256-oct"),
    pytest.param("A.2", "as-given", id="A.2-RS256-private-jwk"),
    pytest.param("A.2", "public", id="A.2-RS256-public-jwk"),
    pytest.param("A.3", "as-given", id="A.3-ES256-private-jwk"),
    pytest.param("A.3", "public", id="A.3-ES256-public-jwk"),
]


@pytest.fixture(scope="module")
def rfc_db(ts):
    ts.fresh_db(RFC_DB)
    yield RFC_DB
    ts.drop_db(RFC_DB)


@pytest.mark.parametrize("example,form", RFC_CASES)
def test_rfc7515_example(ts, rfc_db, example, form):
    alg, jwk, token = RFC7515[example]
    if form == "public":
        jwk = {m: v for m, v in jwk.items() if m in PUBLIC_MEMBERS}
    # the transcription is exact: jwcrypto verifies the RFC's signature with the RFC's key
    assert json.loads(ak.signature_only(token, alg, jwk)) == RFC7515_CLAIMS

    conn = ts.connect(rfc_db)
    kid = f"rfc7515-{example}-{form}"
    with ak.sole_key_of_its_alg(ts, conn, kid, alg, json.dumps(jwk)):
        assert ak.key_row(conn, kid) == (alg, "active", form == "as-given")
        # the signature passes; only the claims check (exp in 2011) refuses it
        assert ts.introspect(conn, token) == {"active": False, "reason": "expired"}
        ts.assert_rejected(conn, token, "expired")
        for part in ("header", "payload", "signature"):
            ts.assert_rejected(conn, ak.tamper(token, part), "bad_signature")
        ts.set_guc(conn, "token_store.require_stored", "off")
        ts.assert_rejected(conn, token, "expired")
        ts.assert_rejected(conn, ak.tamper(token, "signature"), "bad_signature")
