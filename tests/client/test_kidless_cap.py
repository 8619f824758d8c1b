"""A token without `kid` is tried against the non-retired keys of its alg, but only while there are
at most jwt::MAX_KIDLESS_CANDIDATES (16) of them; beyond that it is refused as unknown_key without
trying any, so one call cannot be made to run hundreds of signature checks."""

import jwt
import pytest
from psycopg.types.json import Jsonb

import algkit as ak

DB = "ts_t_kidless_cap"
CAP = 16  # jwt::MAX_KIDLESS_CANDIDATES


@pytest.fixture
def conn(ts):
    ts.fresh_db(DB)
    yield ts.connect(DB)
    ts.close_all()
    ts.drop_db(DB)


def no_kid_token(ts, secret: str, alg: str = "HS256") -> str:
    return jwt.encode(ts.claims("kidless"), secret, algorithm=alg)


def test_kidless_tokens_are_refused_beyond_the_cap(ts, conn):
    ts.set_guc(conn, "token_store.require_stored", "off")
    secrets = [ts.create_key(conn, f"h{i:02}", "HS256") for i in range(CAP)]
    oldest, newest = no_kid_token(ts, secrets[0]), no_kid_token(ts, secrets[-1])
    # at the cap: every key is tried, whichever signed it
    for token in (oldest, newest):
        assert ts.verify(conn, token)["sub"] == "kidless"

    extra = ts.create_key(conn, "h-extra", "HS256")
    for token in (oldest, newest, no_kid_token(ts, extra)):
        ts.assert_rejected(conn, token, "unknown_key")
        with ts.expect_error("28000", "token rejected: unknown_key"):
            ts.store(conn, token)
        with ts.expect_error("28000", "token rejected: unknown_key"):
            ts.revoke(conn, token)
    # a kid still selects its key
    with_kid = jwt.encode(ts.claims("kid"), secrets[0], algorithm="HS256", headers={"kid": "h00"})
    assert ts.verify(conn, with_kid)["sub"] == "kid"

    # verify_only keys count; retired ones do not
    conn.execute("SELECT token_store.set_key_state('h01', 'verify_only')")
    ts.assert_rejected(conn, oldest, "unknown_key")
    conn.execute("SELECT token_store.set_key_state('h05', 'retired')")
    assert ts.verify(conn, oldest)["sub"] == "kidless"
    assert ts.verify(conn, no_kid_token(ts, extra))["sub"] == "kidless"


def test_the_cap_counts_keys_of_the_token_alg_only(ts, conn):
    ts.set_guc(conn, "token_store.require_stored", "off")
    for i in range(CAP + 4):
        ts.create_key(conn, f"many-{i}", "HS256")
    hs384 = ts.create_key(conn, "one-384", "HS384")
    assert ts.verify(conn, no_kid_token(ts, hs384, "HS384"))["sub"] == "kidless"
    ed = ak.signing_key("EdDSA")
    ak.create_key(ts, conn, "ed", "EdDSA", ak.material(ed, "pkcs8"))
    token = ak.hand_token({"alg": "EdDSA", "typ": "JWT"}, ak.claims_now(), "EdDSA", ed)
    assert ts.verify(conn, token)["sub"] == "mallory"


def test_imported_jwks_keys_count_too(ts, conn):
    """Keys added by import_jwks (verify_only) are candidates like any other."""
    ts.set_guc(conn, "token_store.require_stored", "off")
    keys = [ak.private_key("RSA", variant=i) for i in range(CAP + 1)]
    entries = [{**ak.jwk_of(k, False), "kid": f"r{i}", "alg": "RS256", "use": "sig"} for i, k in enumerate(keys)]
    claims = ak.claims_now()
    token = ak.hand_token({"alg": "RS256", "typ": "JWT"}, claims, "RS256", keys[3])
    conn.execute("SELECT token_store.import_jwks(%s)", (Jsonb({"keys": entries[:CAP]}),))
    assert ts.verify(conn, token) == claims
    conn.execute("SELECT token_store.import_jwks(%s)", (Jsonb({"keys": entries}),))
    ts.assert_rejected(conn, token, "unknown_key")
