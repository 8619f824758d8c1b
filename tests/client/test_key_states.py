"""Key states across sessions, and the published JWKS.

- A key state change made in one session takes effect in every other session at its very next
  verification, however warm that session's key cache is.
- jwks() is an RFC 7517 JWK Set of the non-retired asymmetric keys, without private members, that
  PyJWT and jwcrypto load; another database that imports it verifies the first one's tokens.
"""

import json

import jwt
import pytest
from jwcrypto import jwk as jc_jwk
from psycopg.types.json import Jsonb

import algkit as ak

STATES_DB = "ts_t_alg_states"
JWKS_DB = "ts_t_alg_jwks"
PEER_DB = "ts_t_alg_jwks_peer"


@pytest.fixture(scope="module")
def states_db(ts):
    ts.fresh_db(STATES_DB)
    yield STATES_DB
    ts.drop_db(STATES_DB)


def register(ts, conn, kid, alg, variant=0):
    form = "secret" if alg in ak.HMAC_ALGS else "pkcs8"
    return ak.create_key(ts, conn, kid, alg, ak.material(ak.signing_key(alg, variant), form))


def set_state(conn, kid, state):
    conn.execute("SELECT token_store.set_key_state(%s, %s)", (kid, state))


@pytest.mark.parametrize("alg", ak.ALL_ALGS)
def test_state_change_reaches_other_session_at_once(ts, states_db, alg):
    a, b = ts.connect(states_db), ts.connect(states_db)
    kid = register(ts, a, f"state-{alg}", alg)
    claims = ak.claims_now(sub=f"state-{alg}")
    token = ak.hand_token({"alg": alg, "typ": "JWT", "kid": kid}, claims, alg, ak.signing_key(alg))
    ts.store(a, token)
    for _ in range(3):  # B has the key parsed and cached
        assert ts.verify(b, token) == claims

    set_state(a, kid, "retired")
    assert ts.valid(b, token) is False  # B's very next call
    ts.assert_rejected(b, token, "unknown_key")
    with ts.expect_error("55000"):
        ts.issue(b, {"sub": "b"}, kid=kid)

    set_state(a, kid, "active")
    assert ts.valid(b, token) is True
    assert ts.verify(ts.connect(states_db), ts.issue(b, {"sub": "b"}, kid=kid))["sub"] == "b"

    set_state(a, kid, "verify_only")
    assert ts.valid(b, token) is True
    with ts.expect_error("55000"):
        ts.issue(b, {"sub": "b"}, kid=kid)
    fresh = ak.hand_token({"alg": alg, "typ": "JWT", "kid": kid}, ak.claims_now(), alg, ak.signing_key(alg))
    ts.store(b, fresh)  # a verify_only key still verifies what others signed with it
    assert ts.valid(b, fresh) is True

    set_state(a, kid, "active")
    assert ts.verify(a, ts.issue(b, {"sub": "b2"}, kid=kid))["sub"] == "b2"
    assert ak.key_row(b, kid) == (alg, "active", True)


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
def test_uncommitted_state_change_is_not_seen_then_commit_is(ts, states_db, alg):
    a, b = ts.connect(states_db), ts.connect(states_db)
    kid = register(ts, a, f"txn-{alg}", alg, variant=1)
    token = ts.issue(a, {"sub": "txn"}, kid=kid)
    assert ts.valid(b, token) is True
    with a.transaction():
        set_state(a, kid, "retired")
        # its own session sees it at once (no jwt_verify here: its error would abort the block)
        assert ts.introspect(a, token) == {"active": False, "reason": "unknown_key"}
        assert ts.valid(b, token) is True  # others do not until it commits
    ts.assert_rejected(b, token, "unknown_key")
    with pytest.raises(RuntimeError, match="rolled back on purpose"), a.transaction():
        set_state(a, kid, "active")
        assert ts.valid(a, token) is True
        assert ts.valid(b, token) is False
        raise RuntimeError("rolled back on purpose")
    ts.assert_rejected(b, token, "unknown_key")
    ts.assert_rejected(a, token, "unknown_key")


# ---- jwks() --------------------------------------------------------------------------------------

MEMBERS = {
    "RSA": {"kty", "kid", "alg", "use", "n", "e"},
    "EC": {"kty", "kid", "alg", "use", "crv", "x", "y"},
    "OKP": {"kty", "kid", "alg", "use", "crv", "x"},
}


@pytest.fixture(scope="module")
def published(ts):
    """A database with a key of every alg: asymmetric ones as private PEMs (kid pem-<alg>) and as
    public-only JWKs (kid pub-<alg>), and the HMAC keys. Returns alg -> kid of the private key."""
    ts.fresh_db(JWKS_DB)
    conn = ts.connect(JWKS_DB)
    out = {}
    for alg in ak.ALL_ALGS:
        out[alg] = register(ts, conn, f"pem-{alg}", alg)
        if alg in ak.ASYM_ALGS:
            ak.create_key(ts, conn, f"pub-{alg}", alg, ak.material(ak.signing_key(alg, 1), "jwk-public"))
    yield out
    ts.drop_db(JWKS_DB)
    ts.drop_db(PEER_DB)


def expected_jwks_entry(kid, alg, variant):
    return {**ak.public_jwk(alg, variant), "kid": kid, "alg": alg, "use": "sig"}


def test_jwks_is_a_valid_rfc7517_set(ts, published):
    conn = ts.connect(JWKS_DB)
    jwks = ts.one(conn, "SELECT token_store.jwks()")
    assert set(jwks) == {"keys"}
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert len(by_kid) == len(jwks["keys"]), "a kid appears twice"
    expected = {f"pem-{alg}": expected_jwks_entry(f"pem-{alg}", alg, 0) for alg in ak.ASYM_ALGS}
    expected |= {f"pub-{alg}": expected_jwks_entry(f"pub-{alg}", alg, 1) for alg in ak.ASYM_ALGS}
    assert by_kid == expected  # no HMAC key, nothing but the public members
    for entry in jwks["keys"]:
        assert set(entry) == MEMBERS[entry["kty"]], entry
        assert entry["use"] == "sig"
        assert not ak.PRIVATE_JWK_MEMBERS & set(entry)

    pyjwt_set = jwt.PyJWKSet.from_dict(jwks)
    assert len(pyjwt_set.keys) == len(jwks["keys"])
    assert {k.key_id: k.algorithm_name for k in pyjwt_set.keys} == {kid: e["alg"] for kid, e in by_kid.items()}
    jwcrypto_set = jc_jwk.JWKSet.from_json(json.dumps(jwks))
    assert {k.get("kid") for k in jwcrypto_set["keys"]} == set(by_kid)
    assert all(not k.has_private for k in jwcrypto_set["keys"])

    # the set verifies the tokens each private key issues, in both libraries
    for alg in ak.ASYM_ALGS:
        token = ts.issue(conn, {"sub": f"jwks-{alg}"}, kid=published[alg])
        for lib in ak.LIBS:
            assert ak.decode(lib, token, alg, jwks)["sub"] == f"jwks-{alg}", (alg, lib)


def test_retired_keys_leave_jwks(ts, published):
    conn = ts.connect(JWKS_DB)

    def kids():
        return {k["kid"] for k in ts.one(conn, "SELECT token_store.jwks()")["keys"]}

    everything = kids()
    gone = {"pem-RS384", "pub-ES384", "pem-EdDSA"}
    for kid in gone:
        set_state(conn, kid, "retired")
    set_state(conn, "pem-PS256", "verify_only")
    try:
        assert kids() == everything - gone  # verify_only keys stay published
        assert len(jwt.PyJWKSet.from_dict(ts.one(conn, "SELECT token_store.jwks()")).keys) == len(everything) - 3
    finally:
        for kid in gone | {"pem-PS256"}:
            set_state(conn, kid, "active")
    assert kids() == everything


def test_import_jwks_of_another_database(ts, published):
    first = ts.connect(JWKS_DB)
    ts.fresh_db(PEER_DB)
    peer = ts.connect(PEER_DB)
    jwks = ts.one(first, "SELECT token_store.jwks()")
    tokens = {alg: ts.issue(first, {"sub": f"from-first-{alg}"}, kid=published[alg]) for alg in ak.ALL_ALGS}
    for alg in ak.ALL_ALGS:
        ts.assert_rejected(peer, tokens[alg], "unknown_key")

    assert ts.one(peer, "SELECT token_store.import_jwks(%s)", (Jsonb(jwks),)) == len(jwks["keys"])
    assert ts.rows(peer, "SELECT kid, alg, state, can_sign FROM token_store.keys ORDER BY kid") == sorted(
        (k["kid"], k["alg"], "verify_only", False) for k in jwks["keys"]
    )
    assert ts.one(peer, "SELECT token_store.jwks()") == jwks

    for alg in ak.ASYM_ALGS:
        token = tokens[alg]
        claims = ts.verify(first, token)
        ts.assert_rejected(peer, token, "not_stored")  # allow-list: verified, but not yet stored here
        ts.store(peer, token)
        assert ts.verify(peer, token) == claims
        with ts.expect_error("55000"):
            ts.issue(peer, {"sub": "peer"}, kid=published[alg])
    for alg in ak.HMAC_ALGS:  # shared secrets are not published
        ts.assert_rejected(peer, tokens[alg], "unknown_key")

    assert ts.one(peer, "SELECT token_store.import_jwks(%s)", (Jsonb(jwks),)) == 0
    assert ts.one(peer, "SELECT count(*) FROM token_store.keys") == len(jwks["keys"])

    # a key retired in the first database is not in its JWKS any more; the peer keeps its copy
    # until it retires it too
    set_state(first, published["ES256"], "retired")
    try:
        assert published["ES256"] not in {k["kid"] for k in ts.one(first, "SELECT token_store.jwks()")["keys"]}
        assert ts.valid(peer, tokens["ES256"]) is True
        set_state(peer, published["ES256"], "retired")
        ts.assert_rejected(peer, tokens["ES256"], "unknown_key")
    finally:
        set_state(first, published["ES256"], "active")
