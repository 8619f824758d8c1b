"""Issuers (issue 21): tokens of other identity providers, verified with the keys of their JWKS,
fetched and rotated by the worker.

A cluster of its own (issuer settings are server-wide) and a test identity provider (idp.py): an
HTTPS server on 127.0.0.1 with a CA made here, scriptable per test. Loopback only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import idp
from throwaway_cluster import clusters

DB = "ts_iss"
PRIMARY_PORT = 54442
STANDBY_PORT = 54443


@pytest.fixture(scope="module")
def tls():
    return idp.TLSFiles()


@pytest.fixture(scope="module")
def cluster(ts, tls):
    with clusters("issuers-", ts.pgbin) as make:
        c = make("primary", PRIMARY_PORT)
        c.init(DB, {
            "token_store.issuer_ca_file": f"'{tls.ca_file}'",
            "token_store.issuer_allowed_hosts": "'127.0.0.1'",
            "token_store.issuer_min_refresh": "'1s'",
            "log_min_messages": "log",
        })
        c.start()
        c.connect().execute(f"CREATE DATABASE {DB}")
        c.connect(DB).execute("CREATE EXTENSION token_store")
        c.make = make
        # the purge worker of the new database starts within the launcher's nap
        ts.wait_for(lambda: c.one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'token_store purge'"),
                    30, "the worker of ts_iss")
        try:
            yield c
        finally:
            # kept for a look after a failure (the cluster's directory goes)
            shutil.copy(c.server_log, Path(tempfile.gettempdir()) / "ts-test-issuers-server.log")


@pytest.fixture
def conn(cluster):
    yield cluster.connect(DB)
    # every test leaves no issuer behind (on a new connection: a test may have restarted the server)
    c = cluster.connect(DB)
    for (iss,) in c.execute("SELECT issuer FROM token_store.issuers").fetchall():
        c.execute("SELECT token_store.issuer_remove(%s)", (iss,))
    cluster.configure({"token_store.issuer_min_refresh": "1s", "token_store.issuer_max_stale": None,
                       "token_store.issuer_allow_http": None})


@pytest.fixture
def provider(tls):
    providers = []

    def make(name=None, keys=("ES256",), **kw):
        p = idp.Provider(tls, name or f"r{uuid.uuid4().hex[:8]}", **kw)
        p.keys = [idp.Key(a) for a in keys]
        providers.append(p)
        return p

    yield make
    for p in providers:
        p.stop()


def claims(p, sub="alice", ttl=600, **extra):
    now = int(time.time())
    return {"iss": p.issuer, "sub": sub, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4()), **extra}


def add(ts, conn, issuer, **kw) -> dict:
    cols = ", ".join(f"{k} => %({k})s" for k in kw)
    q = "SELECT token_store.issuer_add(%(issuer)s" + (", " + cols if cols else "") + ")"
    return ts.one(conn, q, {"issuer": issuer, **kw})


def row(ts, conn, issuer) -> dict:
    return ts.one(conn, "SELECT to_jsonb(i) FROM token_store.issuers i WHERE issuer = %s", (issuer,))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# ---- discovery, keys and verification -------------------------------------------------------


def test_discovery_and_every_algorithm(ts, conn, provider):
    p = provider(keys=idp.ALGS)
    r = add(ts, conn, p.issuer)
    assert r["key_count"] == len(idp.ALGS), r
    assert r["discovery"] is True and r["jwks_uri"] == p.jwks_uri
    assert r["last_error"] is None and r["fetched_at"] is not None
    assert set(r) >= {"issuer", "jwks_uri", "audiences", "algs", "refresh", "key_count", "fetched_at",
                      "next_fetch_at", "last_error", "last_error_at"}
    assert p.count("/openid-configuration") == 1 and p.count("/certs") == 1
    for key in p.keys:
        c = claims(p, sub=f"user-{key.alg}")
        token = key.sign(c)
        # verified with the issuer's key, not stored, and require_stored does not apply
        assert ts.verify(conn, token)["sub"] == c["sub"], key.alg
        assert ts.valid(conn, token) is True
        assert ts.introspect(conn, token)["active"] is True
    assert ts.one(conn, "SELECT count(*) FROM token_store.tokens") == 0
    assert ts.one(conn, "SHOW token_store.require_stored") == "on"
    # a token without kid is tried against the issuer's keys of its alg
    assert ts.valid(conn, p.keys[2].sign(claims(p), kid=False)) is True
    # jwcrypto signs too (an independent implementation)
    from jwcrypto import jwk, jwt as jwjwt
    k = jwk.JWK(**p.keys[0].private_jwk())
    t = jwjwt.JWT(header={"alg": "RS256", "kid": p.keys[0].kid}, claims=claims(p, sub="jwcrypto"))
    t.make_signed_token(k)
    assert ts.verify(conn, t.serialize())["sub"] == "jwcrypto"


def test_direct_jwks_uri_and_keys_without_alg(ts, conn, provider):
    p = provider(keys=("RS256", "ES384"))
    for k in p.keys:
        k.publish_alg = False  # as Entra ID publishes its keys
    r = add(ts, conn, "my-service", jwks_uri=p.jwks_uri)
    assert r["discovery"] is False and r["key_count"] == 2 and r["last_error"] is None
    assert p.count("/openid-configuration") == 0
    c = claims(p, iss="my-service")
    assert ts.valid(conn, p.keys[0].sign(c)) is True
    # an RSA key without alg serves PS256 as well (the issuer allows every asymmetric alg)
    assert ts.valid(conn, p.keys[0].sign(c, alg="PS256")) is True
    assert ts.valid(conn, p.keys[1].sign(c)) is True
    # a key's type decides: an ES384 key cannot verify an ES256 token claiming its kid
    other = idp.Key("ES256", kid=p.keys[1].kid)
    ts.assert_rejected(conn, other.sign(c), "algorithm_not_allowed")


def test_discovery_must_name_the_same_issuer(ts, conn, provider):
    p = provider()
    p.discovery_issuer = "https://evil.example/"
    r = add(ts, conn, p.issuer)
    assert r["key_count"] == 0
    assert r["last_error"].startswith("discovery:") and "another issuer" in r["last_error"], r
    ts.assert_rejected(conn, p.keys[0].sign(claims(p)), "issuer_unavailable")


def test_issuer_keys_only_kid_collision(ts, conn, provider):
    p = provider(keys=())
    p.keys = [idp.Key("ES256", kid="shared")]
    ts.one(conn, "SELECT token_store.generate_key('shared', 'ES256')")
    add(ts, conn, p.issuer, jwks_uri=p.jwks_uri)
    theirs = p.keys[0].sign(claims(p))
    assert ts.valid(conn, theirs) is True
    # our key, same kid, a token claiming the issuer: checked with the issuer's key only
    ours = ts.one(conn, "SELECT token_store.jwt_issue(%s, '5 minutes', 'shared')",
                  (json.dumps({"iss": p.issuer, "sub": "x"}),))
    ts.assert_rejected(conn, ours, "bad_signature")
    # the issuer's key, a token of another iss: checked with our key only
    c = claims(p, iss="https://someone-else.example")
    ts.assert_rejected(conn, p.keys[0].sign(c), "bad_signature")
    c = claims(p)
    del c["iss"]
    ts.assert_rejected(conn, p.keys[0].sign(c), "bad_signature")
    # our own tokens keep working
    mine = ts.one(conn, "SELECT token_store.jwt_issue('{\"sub\": \"me\"}', '5 minutes', 'shared')")
    assert ts.valid(conn, mine) is True


def test_audiences_and_algs_per_issuer(ts, conn, provider):
    p = provider(keys=("ES256", "RS256"))
    r = add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, audiences=["api", "web"], algs=["ES256"])
    assert r["audiences"] == ["api", "web"] and r["algs"] == ["ES256"]
    es, rs = p.keys
    assert ts.valid(conn, es.sign(claims(p, aud="web"))) is True
    assert ts.valid(conn, es.sign(claims(p, aud=["other", "api"]))) is True
    ts.assert_rejected(conn, es.sign(claims(p, aud="other")), "wrong_audience")
    ts.assert_rejected(conn, es.sign(claims(p)), "wrong_audience")
    ts.assert_rejected(conn, rs.sign(claims(p, aud="api")), "algorithm_not_allowed")
    # the token_store.audience setting does not override the issuer's own audiences
    conn.execute("SET token_store.audience = 'not-theirs'")
    assert ts.valid(conn, es.sign(claims(p, aud="api"))) is True
    conn.execute("RESET token_store.audience")
    # without audiences of its own, token_store.audience applies
    add(ts, conn, p.issuer, jwks_uri=p.jwks_uri)
    conn.execute("SET token_store.audience = 'mine'")
    ts.assert_rejected(conn, es.sign(claims(p, aud="api")), "wrong_audience")
    assert ts.valid(conn, es.sign(claims(p, aud="mine"))) is True
    assert ts.valid(conn, rs.sign(claims(p, aud="mine"))) is True
    conn.execute("RESET token_store.audience")
    with ts.expect_error("22023", "algorithm HS256 is not allowed for an issuer"):
        add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, algs=["HS256"])
    with ts.expect_error("22023", "unknown algorithm"):
        add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, algs=["none"])
    with ts.expect_error("22023", "invalid audiences"):
        add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, audiences=[])
    with ts.expect_error("22023", "refresh must be positive"):
        add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, refresh="0 seconds")


def test_hs256_with_the_providers_public_key_is_refused(ts, conn, provider):
    p = provider(keys=("RS256",))
    add(ts, conn, p.issuer)
    key = p.keys[0]
    for secret in (key.public_pem(), json.dumps(key.jwk()).encode()):
        header = b64url(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims(p)).encode())
        sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        ts.assert_rejected(conn, f"{header}.{payload}.{b64url(sig)}", "algorithm_not_allowed")


def test_revocation_applies_to_issuer_tokens(ts, conn, provider):
    p = provider()
    add(ts, conn, p.issuer)
    t = p.keys[0].sign(claims(p, sub="bob"))
    assert ts.revoke(conn, t, "stolen") is True
    ts.assert_rejected(conn, t, "revoked")
    t2 = p.keys[0].sign(claims(p, sub="carol", iat=int(time.time()) - 5))
    assert ts.valid(conn, t2)
    ts.one(conn, "SELECT token_store.jwt_revoke_subject('carol')")
    ts.assert_rejected(conn, t2, "subject_revoked")


def test_dpop_bound_issuer_tokens(ts, conn, provider):
    """A registered issuer's token carrying cnf.jkt (Keycloak and Okta issue them) is bound like
    ours: refused by jwt_verify while dpop_enforce is on, accepted by jwt_verify_dpop with a proof
    of that key only (issue 23, item 3)."""
    from jwcrypto import jwk as jwjwk, jws as jwjws
    from jwcrypto.common import json_encode
    p = provider()
    add(ts, conn, p.issuer)
    client = jwjwk.JWK.generate(kty="EC", crv="P-256")
    jkt = client.thumbprint()
    token = p.keys[0].sign(claims(p, sub="dpop-user", cnf={"jkt": jkt}))
    htu = "https://api.example.com/orders"

    def proof(key, tok):
        payload = {"jti": str(uuid.uuid4()), "htm": "POST", "htu": htu, "iat": int(time.time()),
                   "ath": b64url(hashlib.sha256(tok.encode()).digest())}
        t = jwjws.JWS(json_encode(payload))
        t.add_signature(key, alg="ES256", protected=json_encode(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": json.loads(key.export_public())}))
        return t.serialize(compact=True)

    ts.assert_rejected(conn, token, "dpop_required")
    got = ts.one(conn, "SELECT token_store.jwt_verify_dpop(%s, %s, 'POST', %s)",
                 (token, proof(client, token), htu))
    assert got["sub"] == "dpop-user" and got["cnf"]["jkt"] == jkt
    other = jwjwk.JWK.generate(kty="EC", crv="P-256")
    with ts.expect_error("28000", "token rejected: dpop_mismatch"):
        conn.execute("SELECT token_store.jwt_verify_dpop(%s, %s, 'POST', %s)",
                     (token, proof(other, token), htu))
    # an unbound token of the issuer is no DPoP token
    plain = p.keys[0].sign(claims(p, sub="bearer-user"))
    assert ts.valid(conn, plain) is True
    with ts.expect_error("28000", "token rejected: dpop_mismatch"):
        conn.execute("SELECT token_store.jwt_verify_dpop(%s, %s, 'POST', %s)",
                     (plain, proof(client, plain), htu))


# ---- rotation, schedule and the worker ------------------------------------------------------


def test_rotation_picked_up_by_an_unknown_kid(ts, conn, provider):
    p = provider()
    add(ts, conn, p.issuer, refresh="1 hour")
    old = p.keys[0]
    new = idp.Key("ES256")
    p.keys = [new]  # the provider rotates
    t = new.sign(claims(p))
    ts.assert_rejected(conn, t, "unknown_key")  # at once, never waiting on the network
    start = time.monotonic()
    ts.wait_for(lambda: ts.valid(conn, t), 15, "the new key to be fetched")
    took = time.monotonic() - start
    assert took < 5, took
    # the key that left the JWKS stops verifying after the fetch that saw it go
    ts.assert_rejected(conn, old.sign(claims(p)), "unknown_key")
    r = row(ts, conn, p.issuer)
    assert r["key_count"] == 1 and r["last_error"] is None


def test_flood_of_random_kids_is_bounded(ts, conn, cluster, provider):
    cluster.configure({"token_store.issuer_min_refresh": "3s"})
    p = provider()
    add(ts, conn, p.issuer, refresh="1 hour")
    time.sleep(3.2)  # an early fetch is allowed again
    key = p.keys[0]
    header = lambda: b64url(json.dumps({"alg": "ES256", "kid": uuid.uuid4().hex}).encode())
    body = b64url(json.dumps(claims(p)).encode())
    tokens = [f"{header()}.{body}.{b64url(b'x' * 64)}" for _ in range(10_000)]
    before = p.count()
    start = time.time()
    # five rounds of 2,000 random kids, spread over several seconds
    for i in range(5):
        refused = ts.one(conn, "SELECT count(*) FILTER (WHERE NOT token_store.jwt_valid(t)) FROM unnest(%s::text[]) t",
                         (tokens[i * 2000:(i + 1) * 2000],))
        assert refused == 2000
        time.sleep(1)
    took = time.time() - start
    time.sleep(1.5)
    fetches = p.count() - before
    # at most one fetch per issuer_min_refresh (3 s) over the flood, whatever the number of kids
    bound = int(took // 3) + 2
    print(f"flood: 10000 random kids over {took:.1f} s -> {fetches} JWKS fetches (bound {bound}); "
          f"{fetches / (took + 1.5) * 3600:.0f} per hour at issuer_min_refresh = 3s")
    assert 1 <= fetches <= bound, (fetches, took)
    assert ts.valid(conn, key.sign(claims(p))) is True


def test_schedule_max_age_and_etag(ts, conn, provider):
    p = provider()
    p.etag = '"v1"'
    p.cache_control = "public, max-age=2"
    added = time.time()
    add(ts, conn, p.issuer, jwks_uri=p.jwks_uri, refresh="1 hour")
    fetched = row(ts, conn, p.issuer)["fetched_at"]
    # the worker reads its issuers every 10 s: wait for its first fetch of this one
    ts.wait_for(lambda: p.count(since=added) >= 2, 15, "the worker's first fetch")
    start = time.time()
    time.sleep(7.5)
    n = p.count(since=start)
    statuses = [s for t, path, s in p.requests if t >= start]
    print(f"schedule: max-age=2 -> {n} requests in 7.5 s ({n / 7.5 * 3600:.0f}/h), statuses {statuses}")
    # due every 2 s (max-age under refresh, above issuer_min_refresh = 1s): 3 or 4 in 7.5 s
    assert 2 <= n <= 5, statuses
    # revalidated with If-None-Match: 304s, the keys stay, fetched_at moves
    assert set(statuses) == {304}, statuses
    r = row(ts, conn, p.issuer)
    assert r["key_count"] == 1 and r["fetched_at"] > fetched and r["last_error"] is None
    assert ts.valid(conn, p.keys[0].sign(claims(p)))
    # a new ETag brings the new keys
    new = idp.Key("ES256")
    p.keys = [new]
    p.etag = '"v2"'
    ts.wait_for(lambda: ts.valid(conn, new.sign(claims(p))), 6, "the v2 keys")
    # max-age is bounded below by issuer_min_refresh: max-age=0 does not mean every second
    p.cache_control = "no-cache"
    p.etag = None
    start = time.time()
    time.sleep(4.5)
    n = p.count(since=start)
    assert n <= 6, n


def test_provider_down_keeps_keys_then_issuer_unavailable(ts, conn, cluster, provider):
    # longer than the worker's 10 s between two reads of its issuers, so that its first failed
    # fetch of this new issuer comes while the keys are still usable
    cluster.configure({"token_store.issuer_max_stale": "15s"})
    p = provider()
    add(ts, conn, p.issuer, refresh="2 seconds")
    key = p.keys[0]
    p.status = 500
    # the discovery document is asked first, and fails first
    ts.wait_for(lambda: (row(ts, conn, p.issuer)["last_error"] or "").startswith("discovery: HTTP status 500"),
                20, "a failed fetch")
    # the last good keys are kept
    assert ts.valid(conn, key.sign(claims(p))) is True
    r = row(ts, conn, p.issuer)
    assert r["key_count"] == 1 and r["failures"] >= 1
    # then, past issuer_max_stale after their due time, refused
    ts.wait_for(lambda: not ts.valid(conn, key.sign(claims(p))), 25, "issuer_unavailable")
    ts.assert_rejected(conn, key.sign(claims(p)), "issuer_unavailable")
    # back up: accepted again after the next try (back-off from issuer_min_refresh, capped at refresh)
    p.status = None
    ts.wait_for(lambda: ts.valid(conn, key.sign(claims(p))), 10, "recovery")
    assert row(ts, conn, p.issuer)["failures"] == 0


def test_verify_latency_unchanged_while_the_provider_hangs(ts, conn, provider):
    p = provider()
    add(ts, conn, p.issuer, refresh="1 second")
    token = p.keys[0].sign(claims(p))
    q = "SELECT token_store.jwt_valid(%s)"

    def timed(n=300):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            assert ts.one(conn, q, (token,)) is True
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    base = timed()
    p.delay = 30  # every request hangs past the 10 s limit
    time.sleep(2)  # the worker is now inside a hanging fetch
    hanging = timed()
    print(f"verify median: {base * 1e3:.3f} ms normally, {hanging * 1e3:.3f} ms while the provider hangs")
    assert hanging < base * 3 + 0.002, (base, hanging)
    ts.wait_for(lambda: "timeout" in (row(ts, conn, p.issuer)["last_error"] or ""), 20, "the timeout")
    p.delay = 0


# ---- what fetches refuse ----------------------------------------------------------------------


def test_plain_http_and_credentials_refused(ts, conn, cluster, tls):
    p = idp.Provider(tls, "plain", http=True)
    p.keys = [idp.Key("ES256")]
    try:
        with ts.expect_error("22023", "invalid jwks_uri") as e:
            add(ts, conn, "plain", jwks_uri=p.jwks_uri)
        assert "plain http is refused" in e.value.diag.message_detail.lower()
        with ts.expect_error("22023", "the issuer is not a URL"):
            add(ts, conn, p.issuer)
        with ts.expect_error("22023", "invalid jwks_uri") as e:
            add(ts, conn, "creds", jwks_uri="https://user:hunter2@127.0.0.1/certs")
        assert "credentials" in e.value.diag.message_detail.lower()
        assert ts.one(conn, "SELECT count(*) FROM token_store.issuers") == 0
        cluster.configure({"token_store.issuer_allow_http": "on"})
        assert add(ts, conn, "plain", jwks_uri=p.jwks_uri)["key_count"] == 1
    finally:
        p.stop()
    assert "hunter2" not in cluster.log_text()


def test_private_addresses_refused_unless_allowed(ts, conn, provider):
    p = provider()
    # localhost resolves to 127.0.0.1, but only the host 127.0.0.1 is in issuer_allowed_hosts
    uri = p.jwks_uri.replace("127.0.0.1", "localhost")
    r = add(ts, conn, "by-name", jwks_uri=uri)
    assert r["key_count"] == 0 and "address refused" in r["last_error"] and "loopback" in r["last_error"], r
    assert p.count() == 0  # never connected
    # cloud metadata address: refused before any connection
    r = add(ts, conn, "metadata", jwks_uri="https://169.254.169.254/latest/meta-data")
    assert "link-local" in r["last_error"], r


def test_bad_responses(ts, conn, cluster, provider, tls):
    p = provider()
    cases = [
        ("redirect to another host", lambda: setattr(p, "redirect", p.jwks_uri.replace("127.0.0.1", "localhost")),
         "redirect refused: it leaves the host"),
        ("redirect to http", lambda: setattr(p, "redirect", p.jwks_uri.replace("https", "http")),
         "redirect refused: it leaves the https scheme"),
        ("5 MiB", lambda: setattr(p, "body", b'{"keys": [' + b" " * (5 << 20) + b"]}"), "size:"),
        ("bad JSON", lambda: setattr(p, "body", b'{"keys": [}'), "JSON:"),
        ("private d", lambda: setattr(p, "extra_jwks", [p.keys[0].private_jwk()]), "private member \"d\""),
        ("500", lambda: setattr(p, "status", 500), "HTTP status 500"),
    ]
    for what, script, expected in cases:
        p.redirect = p.body = p.status = None
        p.extra_jwks = []
        script()
        r = add(ts, conn, f"bad-{what}", jwks_uri=p.jwks_uri)
        assert r["key_count"] == 0, what
        assert expected in (r["last_error"] or ""), (what, r["last_error"])
    p.redirect = p.body = p.status = None
    p.extra_jwks = []
    # a redirect within the host is followed
    p.redirect = f"{p.base}/moved/certs"
    assert add(ts, conn, "moved", jwks_uri=p.jwks_uri)["key_count"] == 1
    p.redirect = None
    # a certificate the configured CAs do not vouch for
    cluster.configure({"token_store.issuer_ca_file": str(tls.other_ca_file)})
    try:
        r = add(ts, conn, "untrusted", jwks_uri=p.jwks_uri)
        assert r["last_error"].startswith("JWKS: TLS:"), r
    finally:
        cluster.configure({"token_store.issuer_ca_file": str(tls.ca_file)})
    # the private d of the refused JWKS reached neither the table nor the log
    d = p.keys[0].private_jwk()["d"]
    assert d not in cluster.log_text()
    assert not ts.one(conn, "SELECT count(*) FROM token_store.identity_providers WHERE last_error LIKE %s",
                      (f"%{d}%",))


# ---- administration -----------------------------------------------------------------------------


def test_issuer_remove(ts, conn, provider):
    p = provider()
    add(ts, conn, p.issuer)
    t = p.keys[0].sign(claims(p))
    assert ts.valid(conn, t)
    assert ts.one(conn, "SELECT token_store.issuer_remove(%s)", (p.issuer,)) is True
    assert ts.one(conn, "SELECT count(*) FROM token_store.issuer_keys") == 0
    # its tokens now follow the database's own keys: none has this kid
    ts.assert_rejected(conn, t, "unknown_key")
    assert ts.one(conn, "SELECT token_store.issuer_remove(%s)", (p.issuer,)) is False


def test_issuer_refresh(ts, conn, provider):
    p, q = provider(), provider()
    add(ts, conn, p.issuer)
    add(ts, conn, q.issuer)
    p.keys.append(idp.Key("RS256"))
    rows = ts.one(conn, "SELECT token_store.issuer_refresh(%s)", (p.issuer,))
    assert [r["issuer"] for r in rows] == [p.issuer] and rows[0]["key_count"] == 2
    rows = ts.one(conn, "SELECT token_store.issuer_refresh()")
    assert sorted(r["issuer"] for r in rows) == sorted([p.issuer, q.issuer])
    with ts.expect_error("42704", f'issuer "nobody" is not registered'):
        conn.execute("SELECT token_store.issuer_refresh('nobody')")


def test_privileges(ts, conn, cluster, provider):
    p = provider()
    c = cluster.connect(DB)
    for role in ("iss_app", "iss_admin"):
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    c.execute("CREATE ROLE iss_app LOGIN IN ROLE token_store_app")
    c.execute("CREATE ROLE iss_admin LOGIN IN ROLE token_store_admin")
    app = cluster.connect(DB)
    app.execute("SET ROLE iss_app")
    for q, args in (("SELECT token_store.issuer_add(%s)", (p.issuer,)),
                    ("SELECT token_store.issuer_remove(%s)", (p.issuer,)),
                    ("SELECT token_store.issuer_refresh()", None),
                    ("SELECT * FROM token_store.issuers", None),
                    ("SELECT * FROM token_store.issuer_keys", None),
                    ("SELECT * FROM token_store.identity_providers", None)):
        with ts.expect_error("42501"):
            app.execute(q, args)
    admin = cluster.connect(DB)
    admin.execute("SET ROLE iss_admin")
    assert add(ts, admin, p.issuer)["key_count"] == 1
    assert ts.one(admin, "SELECT count(*) FROM token_store.issuers") == 1
    with ts.expect_error("42501"):
        admin.execute("SELECT material FROM token_store.issuer_keys")
    # the app verifies issuer tokens through the SECURITY INVOKER read path
    assert ts.valid(app, p.keys[0].sign(claims(p))) is True


def test_stats_count_issuer_outcomes(ts, conn, provider):
    p = provider()
    add(ts, conn, p.issuer)
    before = ts.stats(conn)["verifications"]
    assert row(ts, conn, p.issuer)["verifications"]["ok"] == 0
    for _ in range(3):
        assert ts.valid(conn, p.keys[0].sign(claims(p)))
    ts.assert_rejected(conn, p.keys[0].sign(claims(p, ttl=-100)), "expired")
    ts.assert_rejected(conn, p.keys[0].sign(claims(p), kid="nope"), "unknown_key")
    after = ts.stats(conn)["verifications"]
    assert after["ok"] >= before["ok"] + 3
    assert "issuer_unavailable" in after
    v = row(ts, conn, p.issuer)["verifications"]
    # assert_rejected verifies three times (jwt_verify, jwt_valid, jwt_introspect)
    assert (v["ok"], v["expired"], v["unknown_key"], v["bad_signature"]) == (3, 3, 3, 0), v
    assert ts.one(conn, "SELECT token_store.issuer_verifications('never-registered')")["ok"] == 0


# ---- replicas and restarts ----------------------------------------------------------------------


def test_restart_without_network(ts, conn, cluster, provider):
    p = provider()
    add(ts, conn, p.issuer)
    key = p.keys[0]
    p.stop()  # the provider is gone for good
    cluster.stop()
    cluster.start()
    c = cluster.connect(DB)
    assert ts.valid(c, key.sign(claims(p))) is True
    assert row(ts, c, p.issuer)["key_count"] == 1


@pytest.mark.slow
def test_standby_verifies_issuer_tokens(ts, conn, cluster, provider):
    p = provider()
    add(ts, conn, p.issuer)
    standby = cluster.make("standby", STANDBY_PORT)
    standby.base_backup_of(cluster)
    standby.start()
    s = standby.connect(DB)
    key = p.keys[0]
    assert ts.valid(s, key.sign(claims(p))) is True
    # a rotation fetched on the primary replicates; the standby never fetches
    new = idp.Key("ES256")
    p.keys.append(new)
    primary_fetches = p.count()
    ts.one(conn, "SELECT token_store.issuer_refresh(%s)", (p.issuer,))
    ts.wait_for(lambda: ts.valid(s, new.sign(claims(p))), 20, "the standby to verify the new key")
    before = p.count()
    for _ in range(20):
        ts.valid(s, idp.Key("ES256", kid=uuid.uuid4().hex).sign(claims(p)))
    with ts.expect_error("25006"):
        s.execute("SELECT token_store.issuer_refresh()")
    with ts.expect_error("25006"):
        s.execute("SELECT token_store.issuer_add('x', 'https://127.0.0.1/certs')")
    assert ts.one(s, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'token_store purge'") == 0
    assert primary_fetches >= 1 and p.count() - before <= 2  # the primary's own schedule, not the standby's
    standby.stop()


def test_zz_server_log_free_of_secrets(ts, cluster, provider):
    text = cluster.log_text()
    assert "BEGIN PRIVATE KEY" not in text
    assert "hunter2" not in text
    # the worker said what it did, in words
    assert "token_store issuers:" in text
