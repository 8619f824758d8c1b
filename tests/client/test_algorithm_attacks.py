"""The classic attacks on JWT verifiers, for every asymmetric algorithm, each refused with its
reason; and key material that does not fit its algorithm, refused by create_key and import_jwks
with 22023."""

import time
import uuid

import jwt
import pytest
from psycopg.types.json import Jsonb

import algkit as ak

DB = "ts_t_alg_attacks"

# For "kid_of_other_alg": a token of this other alg, signed by that alg's key, names our kid.
OTHER_ALG = {
    "RS256": "RS384", "RS384": "PS384", "RS512": "RS256", "PS256": "RS256", "PS384": "PS512", "PS512": "PS256",
    "ES256": "ES384", "ES384": "ES256", "EdDSA": "ES256",
}
# For "signed_as_sibling": the same RSA key, another padding or hash than the header says.
SIBLING = {"RS256": "PS256", "RS384": "RS512", "RS512": "PS512", "PS256": "RS256", "PS384": "PS256", "PS512": "RS512"}
NO_HMAC_KEY_MATCHES = ("unknown_key", "bad_signature")
KEYS_SQL = "SELECT kid, alg, state, can_sign, created_at FROM token_store.keys ORDER BY kid"


@pytest.fixture(scope="module")
def keys(ts):
    """alg -> kid: one key per asymmetric alg (PKCS#8 PEM of variant 0), and an HS256 key."""
    ts.fresh_db(DB)
    conn = ts.connect(DB)
    out = {alg: ak.create_key(ts, conn, f"a-{alg}", alg, ak.material(ak.signing_key(alg), "pkcs8"))
           for alg in ak.ASYM_ALGS}
    out["HS256"] = ak.create_key(ts, conn, "a-HS256", "HS256", ak.hmac_secret("HS256"))
    yield out
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, keys):
    return ts.connect(DB)


def hmac_with_public_pem(alg, form, kid):
    """HS256 keyed with the text of the asymmetric key's public PEM: what a verifier that lets the
    header pick the algorithm would accept."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    return ak.hand_token(header, ak.claims_now(), "HS256", ak.material(ak.signing_key(alg), form))


def attack(name: str, alg: str, kid: str):
    """(token, reasons it may be refused with) for attack `name` on the key `kid` of `alg`."""
    key = ak.signing_key(alg)
    now = int(time.time())
    good = ak.claims_now()
    hdr = {"alg": alg, "typ": "JWT", "kid": kid}
    no_kid = {"alg": alg, "typ": "JWT"}

    def signed(header=hdr, claims=good, sign_as=alg, with_key=key):
        return ak.hand_token(header, claims, sign_as, with_key)

    other = OTHER_ALG[alg]
    return {
        "alg_none": lambda: (signed({**hdr, "alg": "none"}), ("algorithm_not_allowed",)),
        "alg_none_no_kid": lambda: (signed({**no_kid, "alg": "none"}), ("algorithm_not_allowed",)),
        "alg_lowercase": lambda: (signed({**hdr, "alg": alg.lower()}), ("algorithm_not_allowed",)),
        "hs256_public_pem_kid": lambda: (hmac_with_public_pem(alg, "spki", kid), ("algorithm_not_allowed",)),
        "hs256_public_pem_no_kid": lambda: (hmac_with_public_pem(alg, "spki", None), NO_HMAC_KEY_MATCHES),
        "hs256_pkcs1_pem_kid": lambda: (hmac_with_public_pem(alg, "pkcs1-public", kid), ("algorithm_not_allowed",)),
        "hs256_pkcs1_pem_no_kid": lambda: (hmac_with_public_pem(alg, "pkcs1-public", None), NO_HMAC_KEY_MATCHES),
        "kid_of_other_alg": lambda: (
            signed({**hdr, "alg": other}, sign_as=other, with_key=ak.signing_key(other)), ("algorithm_not_allowed",)),
        "signed_as_sibling": lambda: (signed(sign_as=SIBLING[alg]), ("bad_signature",)),
        "unknown_kid": lambda: (signed({**hdr, "kid": "no-such-key"}), ("unknown_key",)),
        "kid_path": lambda: (signed({**hdr, "kid": "../../etc/passwd"}), ("unknown_key",)),
        "kid_sql": lambda: (signed({**hdr, "kid": "' OR 1=1 --"}), ("unknown_key",)),
        "kid_sql_union": lambda: (
            signed({**hdr, "kid": f"{kid}' UNION SELECT kid FROM token_store.keys --"}), ("unknown_key",)),
        "wrong_key": lambda: (signed(with_key=ak.signing_key(alg, variant=1)), ("bad_signature",)),
        "wrong_key_no_kid": lambda: (signed(no_kid, with_key=ak.signing_key(alg, variant=1)), ("bad_signature",)),
        "tampered_header": lambda: (ak.tamper(signed(), "header"), ("bad_signature",)),
        "tampered_payload": lambda: (ak.tamper(signed(), "payload"), ("bad_signature",)),
        "tampered_signature": lambda: (ak.tamper(signed(), "signature"), ("bad_signature",)),
        "tampered_no_kid": lambda: (ak.tamper(signed(no_kid), "payload"), ("bad_signature",)),
        "nbf_in_future": lambda: (signed(claims={**good, "nbf": now + 600}), ("not_yet_valid",)),
        "expired": lambda: (signed(claims={**good, "iat": now - 900, "exp": now - 120}), ("expired",)),
        "missing_exp": lambda: (signed(claims={k: v for k, v in good.items() if k != "exp"}), ("missing_exp",)),
    }[name]()


def attacks_on(alg):
    names = [
        "alg_none", "alg_none_no_kid", "alg_lowercase", "hs256_public_pem_kid", "hs256_public_pem_no_kid",
        "kid_of_other_alg", "unknown_kid", "kid_path", "kid_sql", "kid_sql_union", "wrong_key", "wrong_key_no_kid",
        "tampered_header", "tampered_payload", "tampered_signature", "tampered_no_kid", "nbf_in_future", "expired",
        "missing_exp",
    ]
    if alg in SIBLING:
        names += ["hs256_pkcs1_pem_kid", "hs256_pkcs1_pem_no_kid", "signed_as_sibling"]
    return names


ATTACK_CASES = [pytest.param(alg, name, id=f"{alg}-{name}") for alg in ak.ASYM_ALGS for name in attacks_on(alg)]


@pytest.mark.parametrize("alg,name", ATTACK_CASES)
def test_attack_refused(ts, conn, keys, alg, name):
    token, reasons = attack(name, alg, keys[alg])
    rows_before = ts.one(conn, "SELECT count(*) FROM token_store.tokens")
    keys_before = ts.rows(conn, KEYS_SQL)
    for require_stored in ("on", "off"):  # allow-list and deny-list mode alike
        ts.set_guc(conn, "token_store.require_stored", require_stored)
        ak.assert_refused(ts, conn, token, reasons)
        with ts.expect_error("28000", "token rejected: "):
            ts.store(conn, token)
    assert ts.one(conn, "SELECT count(*) FROM token_store.tokens") == rows_before, "a refused token was stored"
    assert ts.rows(conn, KEYS_SQL) == keys_before, "the keys changed"


@pytest.mark.parametrize("alg", ak.ASYM_ALGS)
def test_the_honest_token_of_each_attack_verifies(ts, conn, keys, alg):
    """The control for test_attack_refused: the same key, header and claims, unaltered, verify."""
    claims = ak.claims_now()
    for header in ({"alg": alg, "typ": "JWT", "kid": keys[alg]}, {"alg": alg, "typ": "JWT"}):
        token = ak.hand_token(header, claims, alg, ak.signing_key(alg))
        ts.store(conn, token)
        assert ts.verify(conn, token) == claims


def test_unsigned_alg_none_is_malformed(ts, conn, keys):
    """PyJWT's own alg=none output has an empty signature: refused before any key lookup."""
    for headers in ({"kid": keys["RS256"]}, None):
        token = jwt.encode(ak.claims_now(), None, algorithm="none", headers=headers)
        assert token.endswith(".")
        for require_stored in ("on", "off"):
            ts.set_guc(conn, "token_store.require_stored", require_stored)
            ts.assert_malformed(conn, token)


@pytest.mark.parametrize("alg", ak.ASYM_ALGS)
def test_audience_and_issuer(ts, conn, keys, alg):
    claims = {**ak.claims_now(), "aud": ["svc-a", "svc-x"], "iss": "https://idp-a.example"}
    token = ak.hand_token({"alg": alg, "typ": "JWT", "kid": keys[alg]}, claims, alg, ak.signing_key(alg))
    ts.store(conn, token)
    assert ts.verify(conn, token, "svc-x", "https://idp-a.example") == claims
    ts.assert_rejected(conn, token, "wrong_audience", audience="svc-b")
    ts.assert_rejected(conn, token, "wrong_issuer", issuer="https://idp-b.example")
    ts.set_guc(conn, "token_store.audience", "svc-b")
    ts.assert_rejected(conn, token, "wrong_audience")
    ts.set_guc(conn, "token_store.audience", "svc-a")
    ts.set_guc(conn, "token_store.issuer", "https://idp-b.example")
    ts.assert_rejected(conn, token, "wrong_issuer")
    ts.set_guc(conn, "token_store.issuer", "https://idp-a.example")
    assert ts.verify(conn, token) == claims


@pytest.mark.parametrize("alg", ak.ASYM_ALGS)
def test_retired_key(ts, conn, keys, alg):
    """A retired key verifies nothing: tokens naming it are unknown_key, here and in a new
    session; one without kid finds no live key that fits; it cannot sign."""
    kid = f"retired-{alg}"
    key = ak.signing_key(alg, variant=1)  # not a-{alg}'s key, which stays live
    ak.create_key(ts, conn, kid, alg, ak.material(key, "jwk"))
    claims = ak.claims_now()
    token = ak.hand_token({"alg": alg, "typ": "JWT", "kid": kid}, claims, alg, key)
    no_kid = ak.hand_token({"alg": alg, "typ": "JWT"}, claims, alg, key)
    ts.store(conn, token)
    ts.store(conn, no_kid)
    assert ts.verify(conn, token) == claims and ts.verify(conn, no_kid) == claims

    conn.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    ts.assert_rejected(conn, token, "unknown_key")
    ts.assert_rejected(ts.connect(DB), token, "unknown_key")
    ts.assert_rejected(conn, no_kid, "bad_signature")  # a-{alg} is tried, and does not fit
    with ts.expect_error("55000"):
        ts.issue(conn, {"sub": "x"}, kid=kid)
    assert ak.key_row(conn, kid) == (alg, "retired", True)


# ---- key material that does not fit --------------------------------------------------------------

def unfit(for_alg, kind, form, **jwk_extra):
    extra = "".join(f"-{m}={v}" for m, v in jwk_extra.items())
    return pytest.param(for_alg, kind, form, jwk_extra, id=f"{kind}-{form}{extra}-for-{for_alg}")


UNFIT = [
    # an RSA PEM (or any asymmetric key) as an HMAC secret
    *[unfit(hs, "RSA", form) for hs in ak.HMAC_ALGS for form in ("spki", "pkcs1-public", "pkcs8", "pkcs1")],
    unfit("HS256", "P-256", "spki"), unfit("HS256", "Ed25519", "pkcs8"), unfit("HS256", "RSA", "jwk-public"),
    # RSA below 2048 bits
    *[unfit("RS256", "RSA-1024", form) for form in ak.FORMS["RSA"]],
    unfit("PS512", "RSA-1024", "pkcs8"),
    # the wrong curve or key type for the alg
    *[unfit("ES256", "P-384", form) for form in ak.FORMS["P-384"]],
    unfit("ES384", "P-256", "pkcs8"), unfit("ES384", "P-256", "jwk-public"),
    *[unfit("ES256", "Ed25519", form) for form in ak.FORMS["Ed25519"]],
    unfit("ES256", "RSA", "pkcs8"), unfit("RS256", "P-256", "sec1"), unfit("RS256", "P-256", "jwk"),
    unfit("PS256", "Ed25519", "spki"), unfit("EdDSA", "RSA", "spki"), unfit("EdDSA", "P-256", "jwk"),
    unfit("RS256", "oct", "jwk"),
    # a JWK whose own alg (or use) disagrees
    unfit("RS256", "RSA", "jwk", alg="RS384"), unfit("RS256", "RSA", "jwk-public", alg="PS256"),
    unfit("PS384", "RSA", "jwk-public", alg="RS384"), unfit("ES256", "P-256", "jwk", alg="ES384"),
    unfit("ES384", "P-384", "jwk-public", alg="ES256"), unfit("EdDSA", "Ed25519", "jwk", alg="ES256"),
    unfit("HS256", "oct", "jwk", alg="HS512"), unfit("RS256", "RSA", "jwk-public", alg="HS256"),
    unfit("RS256", "RSA", "jwk", use="enc"),
]


@pytest.mark.parametrize("alg,kind,form,jwk_extra", UNFIT)
def test_unfit_key_material_is_refused(ts, conn, alg, kind, form, jwk_extra):
    text = ak.material(ak.key_of_kind(kind), form, **jwk_extra)
    kid = f"unfit-{uuid.uuid4()}"
    private_parts = ak.secret_fragments(text)
    ts.secrets.update(private_parts)
    with ts.expect_error("22023", "invalid key material") as info:
        conn.execute("SELECT token_store.create_key(%s, %s, %s)", (kid, alg, text))
    assert ak.key_row(conn, kid) is None
    diag = info.value.diag
    said = " ".join(filter(None, (diag.message_primary, diag.message_detail, diag.message_hint)))
    assert [p for p in private_parts if p in said] == [], "the error quotes the private key material"


BAD_TEXT = {
    "plain-text": lambda: "not a key at all",
    "empty": lambda: "",
    "pem-without-body": lambda: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    "truncated-pem": lambda: ak.material(ak.signing_key("RS256"), "pkcs8")[:200] + "\n-----END PRIVATE KEY-----\n",
    "certificate-label": lambda: ak.material(ak.signing_key("ES256"), "spki").replace("PUBLIC KEY", "CERTIFICATE"),
    "jwk-without-members": lambda: '{"kty": "RSA", "n": "AQAB"}',
    "json-without-kty": lambda: '{"no": "kty"}',
}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_bad_key_material_is_refused(ts, conn, case, alg):
    kid = f"bad-{case}-{alg}"
    with ts.expect_error("22023", "invalid key material"):
        conn.execute("SELECT token_store.create_key(%s, %s, %s)", (kid, alg, BAD_TEXT[case]()))
    assert ak.key_row(conn, kid) is None


# ---- import_jwks ----------------------------------------------------------------------------------

def jwks_entry(key_alg, variant=0, **members):
    """The public JWK of algkit's key for `key_alg` as a JWKS entry, with `members` on top."""
    return {**ak.public_jwk(key_alg, variant), "alg": key_alg, "use": "sig", **members}


BAD_JWKS = {
    # another key type under a kid that exists (a-RS256 is an RSA key)
    "other_kty_existing_kid": lambda kids: [jwks_entry("ES256", kid=kids["RS256"])],
    "other_curve_existing_kid": lambda kids: [jwks_entry("ES384", kid=kids["ES256"])],
    "ed25519_existing_kid": lambda kids: [jwks_entry("EdDSA", variant=1, kid=kids["PS256"])],
    # the same key type, other material
    "other_rsa_existing_kid": lambda kids: [jwks_entry("RS256", variant=1, kid=kids["RS256"])],
    # the same key under another alg
    "same_key_other_alg": lambda kids: [jwks_entry("PS256", kid=kids["RS256"])],
    # two different keys under one new kid
    "duplicate_kid_in_set": lambda kids: [jwks_entry("ES256", kid="dup"), jwks_entry("ES256", 1, kid="dup")],
    "alg_does_not_fit_key": lambda kids: [jwks_entry("ES256", kid="misfit", alg="ES384")],
    "rsa_1024": lambda kids: [{**ak.jwk_of(ak.private_key("RSA-1024"), False), "kid": "small", "alg": "RS256"}],
    "oct_secret": lambda kids: [{**ak.jwk_of(ak.hmac_secret("HS256"), True), "kid": "hmac", "alg": "HS256"}],
    "no_alg": lambda kids: [{**ak.public_jwk("ES256", 1), "kid": "no-alg"}],
    "use_enc": lambda kids: [jwks_entry("ES256", 1, kid="enc", use="enc")],
}


@pytest.mark.parametrize("case", sorted(BAD_JWKS))
def test_bad_jwks_is_refused_whole(ts, conn, keys, case):
    """22023 'invalid JWKS', and nothing of it is added: not even the valid entry before the bad
    one. The existing keys are untouched and still verify."""
    fresh = jwks_entry("EdDSA", variant=1, kid=f"fresh-{case}")
    keys_before = ts.rows(conn, KEYS_SQL)
    for entry in BAD_JWKS[case](keys):
        ts.secrets.update(v for m, v in entry.items() if m in ak.PRIVATE_JWK_MEMBERS)
    with ts.expect_error("22023", "invalid JWKS"):
        conn.execute("SELECT token_store.import_jwks(%s)", (Jsonb({"keys": [fresh, *BAD_JWKS[case](keys)]}),))
    assert ts.rows(conn, KEYS_SQL) == keys_before
    for alg in ("RS256", "ES256", "PS256"):
        claims = ak.claims_now()
        token = ak.hand_token({"alg": alg, "typ": "JWT", "kid": keys[alg]}, claims, alg, ak.signing_key(alg))
        ts.store(conn, token)
        assert ts.verify(conn, token) == claims


def test_jwks_of_existing_keys_is_a_no_op(ts, conn, keys):
    """The control for test_bad_jwks_is_refused_whole: the same kids with their own public keys
    import as nothing new."""
    same = [jwks_entry(alg, kid=keys[alg]) for alg in ("RS256", "ES256", "PS256")]
    assert ts.one(conn, "SELECT token_store.import_jwks(%s)", (Jsonb({"keys": same}),)) == 0
    assert ak.key_row(conn, keys["RS256"]) == ("RS256", "active", True)


# ---- ECDSA signature malleability -----------------------------------------------------------------
# (r, s) and (r, n - s) are both valid ECDSA signatures of the same content (PyJWT and jwcrypto
# accept either), so whoever holds an ES256/ES384 token can make a second token text with the same
# header and claims without the key. The token's identity is the SHA-256 of its text.

CURVE_ORDER = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
}


def ecdsa_twin(token: str, alg: str) -> str:
    """`token` with the other valid signature (r, n - s) of the same header and claims."""
    header, payload, sig = token.split(".")
    raw = ak.b64url_decode(sig)
    half = len(raw) // 2
    s = int.from_bytes(raw[half:], "big")
    return f"{header}.{payload}.{ak.b64url(raw[:half] + (CURVE_ORDER[alg] - s).to_bytes(half, 'big'))}"


# Revocation is keyed on the token's identity, with an ECDSA signature's s in its low form, so the
# twin (r, n - s) that anyone holding a revoked token can compute is the same revoked token.
@pytest.mark.parametrize("mode", ["deny-list", "allow-list"])
@pytest.mark.parametrize("alg", ak.EC_ALGS)
def test_ecdsa_twin_of_a_revoked_token_is_refused(ts, conn, keys, alg, mode):
    claims = ak.claims_now(sub=f"twin-{mode}")
    token = ak.hand_token({"alg": alg, "typ": "JWT", "kid": keys[alg]}, claims, alg, ak.signing_key(alg))
    twin = ecdsa_twin(token, alg)
    assert twin != token
    for lib in ak.LIBS:  # the twin is a correctly signed token of the same claims
        assert ak.decode(lib, twin, alg, ak.public_jwk(alg)) == claims

    if mode == "allow-list":
        ts.store(conn, token)
    else:
        ts.set_guc(conn, "token_store.require_stored", "off")
    assert ts.revoke(conn, token, "stolen") is True
    ts.assert_rejected(conn, token, "revoked")

    assert ts.valid(conn, twin) is False, "the twin of a revoked token is accepted"
    with ts.expect_error("28000", "token rejected: "):
        ts.store(conn, twin)
