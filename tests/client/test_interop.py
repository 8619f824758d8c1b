"""Interoperability with PyJWT: its tokens verify here, ours verify there, and the classic attacks
on JWT verifiers are refused with the contract's SQLSTATE and reason."""

import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest

DB = "ts_t_interop"
ALGS = ["HS256", "HS384", "HS512"]
# kid_of_other_alg signs e.g. HS512 with a 32-byte secret on purpose
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url_json(obj) -> str:
    return jwt.utils.base64url_encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


def hand_signed(header: dict, claims: dict, secret: str, hash_alg: str) -> str:
    """A compact JWS built by hand, HMAC-signed with `hash_alg` whatever the header says."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    sig = hmac.new(secret.encode(), signing_input.encode(), HASHES[hash_alg]).digest()
    return f"{signing_input}.{jwt.utils.base64url_encode(sig).decode()}"


@pytest.fixture(scope="module")
def keys(ts):
    """alg -> (kid, secret) for one plain-secret key per HMAC algorithm."""
    ts.fresh_db(DB)
    conn = ts.connect(DB)
    out = {alg: (f"k-{alg}", ts.create_key(conn, f"k-{alg}", alg)) for alg in ALGS}
    yield out
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, keys):
    return ts.connect(DB)


def other_alg(alg):
    return ALGS[(ALGS.index(alg) + 1) % len(ALGS)]


@pytest.mark.parametrize("alg", ALGS)
def test_key_material_rules(ts, conn, alg):
    short = "s" * (len(ts.new_secret(alg)) - 1)
    with ts.expect_error("22023"):
        ts.create_key(conn, f"short-{alg}", alg, secret=short)
    with ts.expect_error("22023"):
        ts.create_key(conn, f"short-jwk-{alg}", alg, secret=short, as_jwk=True)
    with ts.expect_error("42710"):
        ts.create_key(conn, f"k-{alg}", alg)
    with ts.expect_error("22023"):
        conn.execute("SELECT token_store.create_key(%s, %s, %s)", (f"bad-{alg}", alg.lower(), ts.new_secret(alg)))
    refused = [f"short-{alg}", f"short-jwk-{alg}", f"bad-{alg}"]
    assert ts.one(conn, "SELECT count(*) FROM token_store.keys WHERE kid = ANY(%s)", (refused,)) == 0


@pytest.mark.parametrize("with_kid", [True, False], ids=["kid", "no-kid"])
@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_token_stores_and_verifies(ts, conn, keys, alg, with_kid):
    kid, secret = keys[alg]
    claims = ts.claims(
        sub=f"user-{uuid.uuid4()}", iss="https://issuer.example", aud=["svc-a", "svc-b"],
        roles=["reader", "writer"], profile={"name": "Zoë Ünïcode ✓", "age": 42, "ratio": 1.5, "ok": True},
        nothing=None,
    )
    token = ts.mint(claims, secret, alg, kid if with_kid else None)
    assert ("kid" in jwt.get_unverified_header(token)) is with_kid

    token_id = ts.store(conn, token)
    assert isinstance(token_id, uuid.UUID)
    assert ts.store(conn, token) == token_id, "storing the same token twice must return the same id"
    assert ts.verify(conn, token) == claims
    assert ts.verify(conn, token, "svc-b", "https://issuer.example") == claims
    assert ts.valid(conn, token) is True
    assert ts.introspect(conn, token) == {"active": True, **claims, "token_id": str(token_id)}
    assert ts.one(conn, "SELECT token_store.jwt_payload(%s)", (token_id,)) == claims
    assert ts.one(conn, "SELECT kid FROM token_store.tokens WHERE id = %s", (token_id,)) == kid


@pytest.mark.parametrize("alg", ALGS)
def test_oct_jwk_key_verifies_pyjwt_tokens(ts, conn, alg):
    kid = f"jwk-{alg}-{uuid.uuid4().hex[:8]}"
    secret = ts.create_key(conn, kid, alg, as_jwk=True)
    claims = ts.claims(sub="jwk-user")
    token = ts.mint(claims, secret, alg, kid)
    ts.store(conn, token)
    assert ts.verify(conn, token) == claims
    issued = ts.issue(conn, {"sub": "from-jwk-key"}, "5 minutes", kid)
    assert jwt.decode(issued, secret, algorithms=[alg])["sub"] == "from-jwk-key"


@pytest.mark.parametrize("alg", ALGS)
def test_issued_tokens_decode_in_pyjwt(ts, conn, keys, alg):
    kid, secret = keys[alg]
    before = int(time.time())
    token = ts.issue(conn, {"sub": "bob", "scope": "read write", "n": 7}, "10 minutes", kid)
    after = int(time.time())

    assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": kid}
    decoded = jwt.decode(token, secret, algorithms=[alg])
    assert {k: decoded[k] for k in ("sub", "scope", "n")} == {"sub": "bob", "scope": "read write", "n": 7}
    assert before <= decoded["iat"] <= after
    assert decoded["exp"] - decoded["iat"] == 600
    assert str(uuid.UUID(decoded["jti"])) == decoded["jti"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, ts.new_secret(alg), algorithms=[alg])
    # issued tokens are stored, so they verify in allow-list mode
    assert ts.verify(conn, token) == decoded

    # claims the caller gives are kept, not overwritten
    own = {"sub": "carol", "iat": before - 5, "exp": before + 120, "jti": "my-jti"}
    token = ts.issue(conn, own, "10 minutes", kid)
    assert jwt.decode(token, secret, algorithms=[alg]) == own


def attack_tokens(ts, keys, alg):
    """name -> (token, expected reason). Every token is otherwise well-formed and fresh."""
    kid, secret = keys[alg]
    o_kid, o_secret = keys[other_alg(alg)]
    now = int(time.time())
    good = ts.claims(sub="mallory")
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    return {
        "alg_none_with_signature": (hand_signed({**header, "alg": "none"}, good, secret, alg), "algorithm_not_allowed"),
        "alg_lowercase": (hand_signed({**header, "alg": alg.lower()}, good, secret, alg), "algorithm_not_allowed"),
        "wrong_secret": (ts.mint(good, ts.new_secret(alg), alg, kid), "bad_signature"),
        "wrong_secret_no_kid": (ts.mint(good, ts.new_secret(alg), alg), "bad_signature"),
        "unknown_kid": (ts.mint(good, secret, alg, "no-such-kid"), "unknown_key"),
        "kid_of_other_alg": (ts.mint(good, o_secret, alg, o_kid), "algorithm_not_allowed"),
        "sql_in_kid": (ts.mint(good, secret, alg, "' OR 1=1 --"), "unknown_key"),
        "sql_in_kid_2": (ts.mint(good, secret, alg, f"{kid}' OR '1'='1"), "unknown_key"),
        "expired": (ts.mint({**good, "iat": now - 900, "exp": now - 120}, secret, alg, kid), "expired"),
        "nbf_in_future": (ts.mint({**good, "nbf": now + 600}, secret, alg, kid), "not_yet_valid"),
        "iat_in_future": (ts.mint({**good, "iat": now + 600}, secret, alg, kid), "not_yet_valid"),
        "missing_exp": (ts.mint({k: v for k, v in good.items() if k != "exp"}, secret, alg, kid), "missing_exp"),
    }


ATTACKS = [
    "alg_none_with_signature", "alg_lowercase", "wrong_secret", "wrong_secret_no_kid", "unknown_kid",
    "kid_of_other_alg", "sql_in_kid", "sql_in_kid_2", "expired", "nbf_in_future", "iat_in_future", "missing_exp",
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("alg", ALGS)
def test_attack_refused(ts, conn, keys, alg, attack):
    token, reason = attack_tokens(ts, keys, alg)[attack]
    rows_before = ts.one(conn, "SELECT count(*) FROM token_store.tokens")
    counted_before = ts.stats(conn)["verifications"][reason]

    ts.assert_rejected(conn, token, reason)
    with ts.expect_error("28000", f"token rejected: {reason}"):
        ts.store(conn, token)
    # the same verdict in deny-list mode, where unstored tokens are otherwise accepted
    ts.set_guc(conn, "token_store.require_stored", "off")
    ts.assert_rejected(conn, token, reason)

    assert ts.one(conn, "SELECT count(*) FROM token_store.tokens") == rows_before, "a refused token was stored"
    assert ts.stats(conn)["verifications"][reason] > counted_before


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_payload_is_bad_signature(ts, conn, keys, alg):
    kid, secret = keys[alg]
    token = ts.mint(ts.claims(sub="alice", role="user"), secret, alg, kid)
    ts.store(conn, token)
    header, payload, sig = token.split(".")
    forged_claims = {**json.loads(jwt.utils.base64url_decode(payload)), "role": "admin"}
    forged = f"{header}.{b64url_json(forged_claims)}.{sig}"
    ts.assert_rejected(conn, forged, "bad_signature")
    # a flipped signature character too
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    ts.assert_rejected(conn, f"{header}.{payload}.{flipped}", "bad_signature")
    assert ts.valid(conn, token) is True


def test_unsigned_alg_none_token_from_pyjwt(ts, conn):
    """PyJWT's own alg=none output has an empty signature: refused before any key lookup."""
    token = jwt.encode(ts.claims(sub="mallory"), None, algorithm="none")
    assert token.endswith(".")
    ts.assert_malformed(conn, token)
    ts.set_guc(conn, "token_store.require_stored", "off")
    ts.assert_malformed(conn, token)


def test_audience_and_issuer(ts, conn, keys):
    kid, secret = keys["HS256"]
    claims = ts.claims(sub="dave", aud=["svc-a", "svc-x"], iss="issuer-a")
    token = ts.mint(claims, secret, "HS256", kid)
    no_aud = ts.mint(ts.claims(sub="dave"), secret, "HS256", kid)
    ts.store(conn, token)
    ts.store(conn, no_aud)

    # via arguments
    assert ts.verify(conn, token, "svc-a", "issuer-a") == claims
    assert ts.verify(conn, token, "svc-x") == claims
    ts.assert_rejected(conn, token, "wrong_audience", audience="svc-b")
    ts.assert_rejected(conn, no_aud, "wrong_audience", audience="svc-a")
    ts.assert_rejected(conn, token, "wrong_issuer", issuer="issuer-b")
    ts.assert_rejected(conn, no_aud, "wrong_issuer", issuer="issuer-a")

    # via the settings: every verification demands them (jwt_valid and jwt_introspect too)
    ts.set_guc(conn, "token_store.audience", "svc-b")
    ts.assert_rejected(conn, token, "wrong_audience")
    assert ts.verify(conn, token, "svc-a") == claims, "an explicit audience argument overrides the setting"
    ts.set_guc(conn, "token_store.audience", "svc-a")
    assert ts.verify(conn, token) == claims
    ts.assert_rejected(conn, no_aud, "wrong_audience")

    ts.set_guc(conn, "token_store.issuer", "issuer-b")
    ts.assert_rejected(conn, token, "wrong_issuer")
    ts.set_guc(conn, "token_store.issuer", "issuer-a")
    assert ts.verify(conn, token) == claims
    assert ts.valid(conn, token) is True

    # another session is not affected by this one's settings
    assert ts.verify(ts.connect(DB), no_aud)["sub"] == "dave"


def test_retired_key(ts, conn):
    kid = f"retire-{uuid.uuid4().hex[:8]}"
    secret = ts.create_key(conn, kid, "HS256")
    claims = ts.claims(sub="erin")
    token = ts.mint(claims, secret, "HS256", kid)
    ts.store(conn, token)
    assert ts.verify(conn, token) == claims

    conn.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    ts.assert_rejected(conn, token, "unknown_key")
    ts.assert_rejected(ts.connect(DB), token, "unknown_key")  # no stale key cache elsewhere
    with ts.expect_error("55000"):
        ts.issue(conn, {"sub": "x"}, kid=kid)

    conn.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (kid,))
    assert ts.verify(conn, token) == claims
    with ts.expect_error("55000"):
        ts.issue(conn, {"sub": "x"}, kid=kid)


@pytest.mark.parametrize("alg", ALGS)
def test_allow_list_refuses_unstored(ts, conn, keys, alg):
    kid, secret = keys[alg]
    for token in (ts.mint(ts.claims(), secret, alg, kid), ts.mint(ts.claims(), secret, alg)):
        ts.assert_rejected(conn, token, "not_stored")
        ts.store(conn, token)
        assert ts.valid(conn, token) is True


@pytest.mark.parametrize("alg", ALGS)
def test_deny_list_then_revoke(ts, conn, keys, alg):
    kid, secret = keys[alg]
    claims = ts.claims(sub="frank")
    token = ts.mint(claims, secret, alg, kid)
    ts.set_guc(conn, "token_store.require_stored", "off")

    assert ts.verify(conn, token) == claims
    assert ts.introspect(conn, token) == {"active": True, **claims, "token_id": None}
    assert ts.revoke(conn, token, "stolen") is True
    assert ts.revoke(conn, token, "again") is False
    ts.assert_rejected(conn, token, "revoked")
    with ts.expect_error("28000", "token rejected: revoked"):
        ts.store(conn, token)
    ts.set_guc(conn, "token_store.require_stored", "on")
    ts.assert_rejected(conn, token, "revoked")
    reason = ts.one(conn, "SELECT revoke_reason FROM token_store.tokens WHERE jti = %s", (claims["jti"],))
    assert reason == "stolen"


def test_revoke_subject(ts, conn, keys):
    kid, secret = keys["HS256"]
    sub = f"subject-{uuid.uuid4()}"
    now = int(time.time())
    old = {**ts.claims(sub=sub), "iat": now - 5}
    stored = [ts.mint({**old, "jti": str(uuid.uuid4())}, secret, "HS256", kid) for _ in range(2)]
    unstored = ts.mint({**old, "jti": str(uuid.uuid4())}, secret, "HS256", kid)
    bystander = ts.mint(ts.claims(sub=f"other-{uuid.uuid4()}", iat=now - 5), secret, "HS256", kid)
    for t in stored + [bystander]:
        ts.store(conn, t)

    assert ts.one(conn, "SELECT token_store.jwt_revoke_subject(%s, %s)", (sub, "logout everywhere")) == 2
    revoked_before = float(ts.one(
        conn, "SELECT extract(epoch FROM revoked_before) FROM token_store.subject_revocations WHERE subject = %s",
        (sub,),
    ))
    ts.set_guc(conn, "token_store.require_stored", "off")
    for t in stored:
        ts.assert_rejected(conn, t, "revoked")
    ts.assert_rejected(conn, unstored, "subject_revoked")
    at_revocation = ts.mint({**old, "iat": int(revoked_before), "jti": "at"}, secret, "HS256", kid)
    ts.assert_rejected(conn, at_revocation, "subject_revoked")
    no_iat = ts.mint({k: v for k, v in old.items() if k != "iat"}, secret, "HS256", kid)
    ts.assert_rejected(conn, no_iat, "subject_revoked")

    # issued after the revocation but within the leeway: a signer whose clock runs ahead by up to
    # the leeway could have minted it before, so it is refused too
    ts.set_guc(conn, "token_store.leeway", "1")
    within = ts.mint({**ts.claims(sub=sub), "iat": int(revoked_before) + 1}, secret, "HS256", kid)
    ts.assert_rejected(conn, within, "subject_revoked")
    # issued after the revocation plus the leeway: accepted
    fresh_claims = {**ts.claims(sub=sub), "iat": int(revoked_before) + 2}
    fresh = ts.mint(fresh_claims, secret, "HS256", kid)
    ts.wait_for(lambda: time.time() >= revoked_before + 1.1, 5, "the clock to pass the token's iat - leeway")
    assert ts.verify(conn, fresh) == fresh_claims
    ts.set_guc(conn, "token_store.require_stored", "on")
    ts.store(conn, fresh)
    assert ts.verify(conn, fresh) == fresh_claims
    assert ts.valid(conn, bystander) is True
