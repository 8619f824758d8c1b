"""Sender-constrained tokens (DPoP, RFC 9449; CONTRACT.md "Sender-constrained tokens"): proofs made
here by another implementation (jwcrypto) for ES256, ES384, RS256, PS256 and EdDSA, checked by
dpop_verify and jwt_verify_dpop against a real cluster: valid proofs, replays (same and other
connection, two transactions racing), iat windows, htm/htu and their normalisation, ath, typ, alg,
jwk, binding of tokens and sessions, the purge worker, privileges and a hot standby."""

import base64
import hashlib
import json
import threading
import time
import uuid

import psycopg
import pytest
from jwcrypto import jwk, jws
from jwcrypto.common import json_encode
from psycopg.types.json import Jsonb

from throwaway_cluster import clusters

DB = "ts_dpop"
KID = "k-dpop"
HTU = "https://api.example.com/v1/orders"
STANDBY_PORTS = (54462, 54463)
ALGS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]


def new_key(alg: str) -> jwk.JWK:
    if alg == "ES256":
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if alg == "ES384":
        return jwk.JWK.generate(kty="EC", crv="P-384")
    if alg in ("RS256", "PS256"):
        return jwk.JWK.generate(kty="RSA", size=2048)
    return jwk.JWK.generate(kty="OKP", crv="Ed25519")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def proof(key, alg="ES256", htm="GET", htu=HTU, *, token=None, iat=None, jti=None, nonce=None,
          typ="dpop+jwt", header_jwk="public", signer=None, drop=()):
    """A DPoP proof made by jwcrypto: signed by `signer` (default `key`), with `key`'s jwk."""
    header = {"typ": typ, "alg": alg}
    if header_jwk == "public":
        header["jwk"] = json.loads(key.export_public())
    elif header_jwk == "private":
        header["jwk"] = json.loads(key.export_private())
    header = {k: v for k, v in header.items() if v is not None}
    claims = {"jti": jti or str(uuid.uuid4()), "htm": htm, "htu": htu,
              "iat": int(time.time()) if iat is None else iat}
    if token is not None:
        claims["ath"] = ath(token)
    if nonce is not None:
        claims["nonce"] = nonce
    for k in drop:
        claims.pop(k, None)
    t = jws.JWS(json_encode(claims))
    t.add_signature(signer or key, alg=alg, protected=json_encode(header))
    return t.serialize(compact=True)


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        ts.create_key(ts.connect(DB), KID, "HS256")
        yield DB


@pytest.fixture
def conn(ts, db):
    return ts.connect(db)


def dpop_verify(conn, p, htm="GET", htu=HTU, token=None, nonce=None):
    return conn.execute("SELECT token_store.dpop_verify(%s, %s, %s, %s, %s)",
                        (p, htm, htu, token, nonce)).fetchone()[0]


def verify_dpop(conn, token, p, htm="GET", htu=HTU):
    return conn.execute("SELECT token_store.jwt_verify_dpop(%s, %s, %s, %s)", (token, p, htm, htu)).fetchone()[0]


def refused(ts, reason, fn, *args, **kwargs):
    with ts.expect_error("28000", f"token rejected: {reason}") as info:
        fn(*args, **kwargs)
    assert info.value.diag.message_primary == f"token rejected: {reason}"
    return info.value


def bound_token(ts, conn, key, sub="dpop-alice", **extra):
    claims = ts.claims(sub, **extra) | {"cnf": {"jkt": key.thumbprint()}}
    return ts.issue(conn, claims, kid=KID)


# ---- proofs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_valid_proof_of_each_algorithm(ts, conn, alg):
    key = new_key(alg)
    jti = f"jti-{uuid.uuid4()}"
    iat = int(time.time()) - 2
    got = dpop_verify(conn, proof(key, alg, jti=jti, iat=iat))
    # the thumbprint is jwcrypto's own RFC 7638 thumbprint of the key
    assert got == {"jkt": key.thumbprint(), "jti": jti, "iat": iat}
    # with an access token, its ath; with a nonce, the nonce
    got = dpop_verify(conn, proof(key, alg, token="tok.en.x", nonce="n-1"), token="tok.en.x", nonce="n-1")
    assert got["jkt"] == key.thumbprint()


def test_replay_on_the_same_and_another_connection(ts, conn, db):
    key = new_key("ES256")
    p = proof(key)
    dpop_verify(conn, p)
    refused(ts, "dpop_replayed", dpop_verify, conn, p)
    refused(ts, "dpop_replayed", dpop_verify, ts.connect(db), p)
    # the same jti under another key is another proof
    other = new_key("ES256")
    jti = json.loads(base64.urlsafe_b64decode(p.split(".")[1] + "=="))["jti"]
    assert dpop_verify(conn, proof(other, jti=jti))["jti"] == jti
    assert ts.one(conn, "SELECT count(*) FROM token_store.dpop_proofs WHERE jti = %s", (jti,)) == 2


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_transactions_race_with_one_proof(ts, db, first_commits):
    """Two app instances get the same proof at once: the second waits on the first's insert, and
    is refused if it commits, accepted if it rolls back."""
    key = new_key("ES256")
    p = proof(key)
    a, b = ts.connect(db), ts.connect(db)
    a.autocommit = False
    dpop_verify(a, p)
    result = {}

    def second():
        try:
            result["ok"] = dpop_verify(b, p)
        except psycopg.Error as e:
            result["err"] = e

    t = threading.Thread(target=second)
    t.start()
    pid_b = b.info.backend_pid
    ts.wait_for(lambda: ts.one(ts.connect(db), "SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                                               "WHERE pid = %s", (pid_b,)), 10, "the second insert to wait")
    (a.commit if first_commits else a.rollback)()
    t.join(10)
    if first_commits:
        assert result["err"].sqlstate == "28000"
        assert result["err"].diag.message_primary == "token rejected: dpop_replayed"
    else:
        assert result["ok"]["jkt"] == key.thumbprint()


def test_many_connections_one_acceptance(ts, db):
    key = new_key("ES256")
    p = proof(key)
    conns = [ts.connect(db) for _ in range(6)]
    barrier = threading.Barrier(len(conns))
    outcomes = []

    def run(c):
        barrier.wait()
        try:
            dpop_verify(c, p)
            outcomes.append("ok")
        except psycopg.Error as e:
            outcomes.append(e.diag.message_primary)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok"] + ["token rejected: dpop_replayed"] * 5


def test_iat_window(ts, conn):
    key = new_key("ES256")
    now = int(time.time())
    # default dpop_max_age 60s and leeway 30s
    dpop_verify(conn, proof(key, iat=now - 80))
    dpop_verify(conn, proof(key, iat=now + 20))
    e = refused(ts, "dpop_stale", dpop_verify, conn, proof(key, iat=now - 100))
    assert "older" in e.diag.message_detail
    e = refused(ts, "dpop_stale", dpop_verify, conn, proof(key, iat=now + 40))
    assert "future" in e.diag.message_detail
    conn.execute("SET token_store.dpop_max_age = '5min'")
    try:
        dpop_verify(conn, proof(key, iat=now - 300))
    finally:
        conn.execute("RESET token_store.dpop_max_age")


def test_htm_and_htu(ts, conn):
    key = new_key("ES256")
    refused(ts, "dpop_htm_mismatch", dpop_verify, conn, proof(key, htm="POST"))
    refused(ts, "dpop_htm_mismatch", dpop_verify, conn, proof(key, htm="get"))
    for other in ("https://api.example.com/v1/order", "https://evil.example.com/v1/orders",
                  "http://api.example.com/v1/orders", "https://api.example.com:8443/v1/orders",
                  "https://api.example.com/V1/orders"):
        refused(ts, "dpop_htu_mismatch", dpop_verify, conn, proof(key, htu=other))
    # equal once normalised (RFC 9449 section 4.3: no query, no fragment; RFC 3986 section 6)
    for same in ("HTTPS://API.EXAMPLE.COM/v1/orders", "https://api.example.com:443/v1/orders",
                 "https://api.example.com/v1/orders?page=2", "https://api.example.com/v1/orders#x",
                 "https://api.example.com/v1/%6Frders", "https://api.example.com/v1/a/../orders"):
        dpop_verify(conn, proof(key, htu=same))
        dpop_verify(conn, proof(key), htu=same)
    # the app's own htu or htm unusable: its error, 22023
    for htu in ("/v1/orders", "ftp://api.example.com/x", "https://api.example.com/%zz"):
        with ts.expect_error("22023", "htu must be"):
            dpop_verify(conn, proof(key, htu=HTU), htu=htu)
    with ts.expect_error("22023", "htm must be"):
        dpop_verify(conn, proof(key), htm="")


def test_ath_and_nonce(ts, conn):
    key = new_key("ES256")
    token = "some.access.token"
    refused(ts, "dpop_ath_mismatch", dpop_verify, conn, proof(key), token=token)
    refused(ts, "dpop_ath_mismatch", dpop_verify, conn, proof(key, token=token + "x"), token=token)
    dpop_verify(conn, proof(key, token=token), token=token)
    refused(ts, "dpop_nonce_mismatch", dpop_verify, conn, proof(key), nonce="n1")
    refused(ts, "dpop_nonce_mismatch", dpop_verify, conn, proof(key, nonce="n2"), nonce="n1")
    dpop_verify(conn, proof(key, nonce="n1"), nonce="n1")


def test_malformed_proofs_are_dpop_invalid(ts, conn):
    key = new_key("ES256")
    other = new_key("ES256")
    secret = jwk.JWK.generate(kty="oct", size=256)
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": json.loads(key.export_public())}).encode())
    body = b64(json.dumps({"jti": "x", "htm": "GET", "htu": HTU, "iat": int(time.time())}).encode())
    hs256 = jws.JWS(json_encode({"jti": "y", "htm": "GET", "htu": HTU, "iat": int(time.time())}))
    hs256.add_signature(secret, alg="HS256", protected=json_encode(
        {"typ": "dpop+jwt", "alg": "HS256", "jwk": json.loads(secret.export())}))
    cases = {
        "typ missing": (proof(key, typ=None), "typ"),
        "typ JWT": (proof(key, typ="JWT"), "typ"),
        "alg none": (f"{header}.{body}.", "not a JWS"),
        "HS256": (hs256.serialize(compact=True), "asymmetric"),
        "private key in jwk": (proof(key, header_jwk="private"), "private member"),
        "jwk missing": (proof(key, header_jwk=None), "no jwk"),
        "signed by another key": (proof(key, signer=other), "signature"),
        "jti missing": (proof(key, drop=("jti",)), "jti"),
        "jti too long": (proof(key, jti="j" * 257), "jti"),
        "iat missing": (proof(key, drop=("iat",)), "iat"),
        "not a JWT": ("garbage", "not a JWS"),
    }
    for name, (p, detail) in cases.items():
        e = refused(ts, "dpop_invalid", dpop_verify, conn, p)
        assert detail in e.diag.message_detail, (name, e.diag.message_detail)
    # nothing refused was remembered
    assert ts.one(conn, "SELECT count(*) FROM token_store.dpop_proofs WHERE jti IN ('x', 'y')") == 0


# ---- bound tokens ----------------------------------------------------------------------------


def test_bound_token_needs_its_proof(ts, conn):
    key, other = new_key("ES256"), new_key("EdDSA")
    token = bound_token(ts, conn, key, role="reader")
    # jwt_issue kept the cnf given
    assert ts.one(conn, "SELECT token_store.jwt_payload(id)->'cnf' FROM token_store.tokens "
                        "WHERE token_hash = sha256(%s::bytea)", (token.encode(),)) == {"jkt": key.thumbprint()}
    ts.assert_rejected(conn, token, "dpop_required")
    claims = verify_dpop(conn, token, proof(key, token=token))
    assert claims["role"] == "reader" and claims["cnf"] == {"jkt": key.thumbprint()}
    e = refused(ts, "dpop_mismatch", verify_dpop, conn, token, proof(other, "EdDSA", token=token))
    assert "another key" in e.diag.message_detail
    # a proof made for another token, or for no token
    refused(ts, "dpop_ath_mismatch", verify_dpop, conn, token, proof(key, token=token + "x"))
    refused(ts, "dpop_ath_mismatch", verify_dpop, conn, token, proof(key))
    p = proof(key, token=token)
    verify_dpop(conn, token, p)
    refused(ts, "dpop_replayed", verify_dpop, conn, token, p)
    # an unbound token presented with a proof is no bound token
    plain = ts.issue(conn, ts.claims("dpop-plain"), kid=KID)
    e = refused(ts, "dpop_mismatch", verify_dpop, conn, plain, proof(key, token=plain))
    assert "not bound" in e.diag.message_detail
    # the token's own checks come first, and cost no write
    revoked = bound_token(ts, conn, key, sub="dpop-revoked")
    ts.revoke(conn, revoked)
    p = proof(key, token=revoked)
    refused(ts, "revoked", verify_dpop, conn, revoked, p)
    assert ts.one(conn, "SELECT count(*) FROM token_store.dpop_proofs WHERE jti = %s",
                  (json.loads(base64.urlsafe_b64decode(p.split(".")[1] + "=="))["jti"],)) == 0
    with ts.expect_error("22P02", "invalid token:"):
        verify_dpop(conn, "not-a-token", proof(key))
    # dpop_enforce off: the bound token is a bearer token again for jwt_verify
    conn.execute("SET token_store.dpop_enforce = off")
    try:
        assert ts.verify(conn, token)["role"] == "reader"
        assert ts.valid(conn, token) is True
    finally:
        conn.execute("RESET token_store.dpop_enforce")
    assert ts.valid(conn, token) is False


def test_outcomes_are_counted(ts, conn):
    key = new_key("ES256")
    token = bound_token(ts, conn, key)
    before = ts.stats(conn)["verifications"]
    verify_dpop(conn, token, proof(key, token=token))
    ts.valid(conn, token)
    p = proof(key, token=token, iat=int(time.time()) - 1000)
    with pytest.raises(psycopg.Error):
        verify_dpop(conn, token, p)
    after = ts.stats(conn)["verifications"]
    for outcome in ("ok", "dpop_required", "dpop_stale"):
        assert after[outcome] > before[outcome], outcome


# ---- bound sessions --------------------------------------------------------------------------


def session_start(conn, sub, jkt):
    return conn.execute("SELECT token_store.session_start(%s, dpop_jkt => %s)",
                        (Jsonb({"sub": sub}), jkt)).fetchone()[0]


def session_refresh(conn, rt, jkt=None):
    return conn.execute("SELECT token_store.session_refresh(%s, NULL, %s)", (rt, jkt)).fetchone()[0]


def test_bound_session(ts, conn):
    key, other = new_key("ES256"), new_key("ES256")
    jkt = key.thumbprint()
    s = session_start(conn, f"dpop-sess-{uuid.uuid4()}", jkt)
    access = s["access_token"]
    ts.assert_rejected(conn, access, "dpop_required")
    claims = verify_dpop(conn, access, proof(key, token=access))
    assert claims["cnf"] == {"jkt": jkt} and claims["sid"] == s["session_id"]
    # without the key's thumbprint, or with another, the refresh token is refused and not spent
    for given in (None, other.thumbprint()):
        assert session_refresh(conn, s["refresh_token"], given) == {"error": "invalid_grant",
                                                                   "reason": "dpop_mismatch"}
    pair = session_refresh(conn, s["refresh_token"], jkt)
    assert pair["session_id"] == s["session_id"]
    assert verify_dpop(conn, pair["access_token"], proof(key, token=pair["access_token"]))["cnf"]["jkt"] == jkt
    # the reuse rules are the same: the spent token, used again past the grace, ends the session
    conn.execute("SET token_store.refresh_reuse_interval = 0")
    try:
        assert session_refresh(conn, s["refresh_token"], jkt) == {"error": "invalid_grant",
                                                                 "reason": "refresh_reused"}
    finally:
        conn.execute("RESET token_store.refresh_reuse_interval")
    refused(ts, "session_ended", verify_dpop, conn, pair["access_token"], proof(key, token=pair["access_token"]))
    # a bearer session is not turned into a bound one by a refresh
    bearer = session_start(conn, "dpop-bearer", None)
    assert "cnf" not in ts.verify(conn, bearer["access_token"])
    assert session_refresh(conn, bearer["refresh_token"], jkt) == {"error": "invalid_grant",
                                                                  "reason": "dpop_mismatch"}
    assert "access_token" in session_refresh(conn, bearer["refresh_token"])


def test_session_arguments(ts, conn):
    for bad in ("short", "x" * 43 + "=", "!" * 43):
        with ts.expect_error("22023", "dpop_jkt must be a JWK thumbprint"):
            session_start(conn, "dpop-bad", bad)
        with ts.expect_error("22023", "dpop_jkt must be a JWK thumbprint"):
            session_refresh(conn, "tsr_x", bad)
    with ts.expect_error("22023", 'claims of a session cannot contain "cnf"'):
        conn.execute("SELECT token_store.session_start(%s)", (Jsonb({"sub": "x", "cnf": {"jkt": "y"}}),))


# ---- the replay cache's purge, privileges, standby -------------------------------------------


def test_worker_purges_remembered_proofs(ts):
    settings = {"token_store.purge_interval": "1s"}
    ts.configure(ts.connect(), settings, {"token_store.purge_interval": "1s"})
    try:
        c = ts.connect("ts_client")
        c.execute("CREATE EXTENSION IF NOT EXISTS token_store")
        c.execute("SET token_store.dpop_max_age = 1")
        c.execute("SET token_store.leeway = 0")
        key = new_key("ES256")
        kept = proof(key, iat=int(time.time()) + 0)
        jti = dpop_verify(c, kept)["jti"]
        jkt = base64.urlsafe_b64decode(key.thumbprint() + "=")
        count = "SELECT count(*) FROM token_store.dpop_proofs WHERE jkt = %s"
        assert ts.one(c, count, (jkt,)) == 1
        # kept past its time for the largest leeway any role or database sets (30 s by default)
        ts.wait_for(lambda: ts.one(c, count, (jkt,)) == 0, 90, "the purge worker to delete the proof")
        # gone from the cache, the proof is still refused: it is too old now
        refused(ts, "dpop_stale", dpop_verify, c, kept)
        assert jti
    finally:
        conn = ts.wait_for(lambda: ts.connect(), 60, "a connection to restore the settings")
        ts.configure(conn, {k: None for k in settings}, {"token_store.purge_interval": "1min"})


def test_purge_function_deletes_expired_proofs(ts, conn):
    conn.execute("SET token_store.dpop_max_age = 1")
    conn.execute("SET token_store.leeway = 0")
    try:
        key = new_key("ES256")
        dpop_verify(conn, proof(key))
        jkt = base64.urlsafe_b64decode(key.thumbprint() + "=")
        time.sleep(2.2)
        assert ts.one(conn, "SELECT token_store.purge()") >= 1
        assert ts.one(conn, "SELECT count(*) FROM token_store.dpop_proofs WHERE jkt = %s", (jkt,)) == 0
    finally:
        conn.execute("RESET token_store.dpop_max_age")
        conn.execute("RESET token_store.leeway")


def test_privileges(ts, db):
    for role, groups in (("dpop_app", ["token_store_app"]), ("dpop_admin", ["token_store_admin"]),
                         ("dpop_nobody", [])):
        ts.ensure_role(role, *groups)
    try:
        key = new_key("ES256")
        token = bound_token(ts, ts.connect(db), key)
        for role in ("dpop_app", "dpop_admin"):
            c = ts.connect(db, user=role)
            assert dpop_verify(c, proof(key))["jkt"] == key.thumbprint()
            assert verify_dpop(c, token, proof(key, token=token))["cnf"]["jkt"] == key.thumbprint()
            with ts.expect_error("42501"):
                c.execute("SELECT * FROM token_store.dpop_proofs")
            with ts.expect_error("42501"):
                c.execute("SET token_store.dpop_enforce = off")
        nobody = ts.connect(db, user="dpop_nobody")
        with ts.expect_error("42501"):
            dpop_verify(nobody, proof(key))
        with ts.expect_error("42501"):
            verify_dpop(nobody, token, proof(key, token=token))
    finally:
        ts.close_all()
        for role in ("dpop_app", "dpop_admin", "dpop_nobody"):
            ts.drop_role(role)


def test_standby_refuses_dpop_verify(ts):
    with clusters("dpop-standby-", ts.pgbin) as make:
        primary = make("primary", STANDBY_PORTS[0])
        primary.init("ts_dpop_rep", {"token_store.purge_interval": "0"})
        primary.start()
        primary.connect().execute("CREATE DATABASE ts_dpop_rep")
        p = primary.connect("ts_dpop_rep")
        p.execute("CREATE EXTENSION token_store")
        ts.create_key(p, KID, "HS256")
        key = new_key("ES256")
        token = bound_token(ts, p, key)
        standby = make("standby", STANDBY_PORTS[1])
        standby.base_backup_of(primary)
        standby.start()
        target = primary.one("SELECT pg_current_wal_lsn()")
        ts.wait_for(lambda: standby.one("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)),
                    30, "the standby to catch up")
        s = standby.connect("ts_dpop_rep")
        with ts.expect_error("25006", "cannot execute dpop_verify on a hot standby"):
            dpop_verify(s, proof(key))
        with ts.expect_error("25006", "cannot execute jwt_verify_dpop on a hot standby"):
            verify_dpop(s, token, proof(key, token=token))
        # the bound token stays refused by plain verification there too
        ts.assert_rejected(s, token, "dpop_required")
