"""Public key material is never an HMAC secret, in any of the shapes it travels in (JWKS, JWK
without kty, base64 DER, OpenSSH, PEM armour in any case or without its END line); and RSA public
exponents above 2^32 are refused on every import path. Keys are made with `cryptography`."""

import base64
import json
import math
import secrets

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg.types.json import Jsonb

import algkit as ak

DB = "ts_t_key_hardening"
HMAC_ALGS = ("HS256", "HS384", "HS512")


@pytest.fixture(scope="module")
def hard_db(ts):
    ts.fresh_db(DB)
    conn = ts.connect(DB)
    # an asymmetric key of each type, so jwks() has something to print
    for alg in ("RS256", "ES256", "EdDSA"):
        conn.execute("SELECT token_store.generate_key(%s, %s)", (f"pub-{alg}", alg))
    yield DB
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, hard_db):
    return ts.connect(hard_db)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_spki(kind: str) -> bytes:
    return ak.private_key(kind).public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)


def pem_spki(kind: str) -> str:
    return ak.private_key(kind).public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()


def openssh(kind: str) -> str:
    return ak.private_key(kind).public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()


def wrap64(text: str) -> str:
    return "\n".join(text[i:i + 64] for i in range(0, len(text), 64))


def ssh_blob(name: str, *fields: bytes) -> bytes:
    out = b""
    for f in (name.encode(), *fields):
        out += len(f).to_bytes(4, "big") + f
    return out


PUBLIC_SHAPES = {
    # JSON: the server's own JWKS, a JWK without kty, a JWKS array, nested in an array
    "jwks-output": lambda conn: conn.execute("SELECT token_store.jwks()::text").fetchone()[0],
    "jwk-rsa-without-kty": lambda conn: json.dumps({k: v for k, v in ak.public_jwk("RS256").items() if k != "kty"}),
    "jwk-ec-without-kty": lambda conn: json.dumps({k: v for k, v in ak.public_jwk("ES256").items() if k != "kty"}),
    "jwk-okp-without-kty": lambda conn: json.dumps({k: v for k, v in ak.public_jwk("EdDSA").items() if k != "kty"}),
    "json-array-of-jwks": lambda conn: json.dumps([ak.public_jwk("RS256")]),
    "json-object-any": lambda conn: json.dumps({"note": "a JSON object is never a secret", "pad": "x" * 40}),
    # base64 DER, no armour
    "spki-rsa-base64": lambda conn: b64(der_spki("RSA")),
    "spki-rsa-base64-wrapped": lambda conn: wrap64(b64(der_spki("RSA"))),
    "spki-rsa-base64url": lambda conn: b64url(der_spki("RSA")),
    "spki-p256-base64": lambda conn: b64(der_spki("P-256")),
    "spki-p384-base64url": lambda conn: b64url(der_spki("P-384")),
    "spki-ed25519-base64": lambda conn: b64(der_spki("Ed25519")),
    "spki-rsa-hex": lambda conn: der_spki("RSA").hex(),
    "pkcs1-public-base64": lambda conn: b64(
        ak.private_key("RSA").public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1)),
    "pkcs8-private-base64": lambda conn: b64(
        ak.private_key("P-256").private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())),
    "ec-point-base64url": lambda conn: b64url(ak.private_key("P-256").public_key().public_bytes(
        ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)),
    # OpenSSH
    "openssh-rsa": lambda conn: openssh("RSA"),
    "openssh-ed25519": lambda conn: openssh("Ed25519"),
    "openssh-ecdsa": lambda conn: openssh("P-256"),
    "openssh-with-options": lambda conn: 'from="10.0.0.1",no-pty ' + openssh("Ed25519") + " me@host",
    "openssh-sk-ed25519": lambda conn: "sk-ssh-ed25519@openssh.com " + b64(
        ssh_blob("sk-ssh-ed25519@openssh.com", b"\x01" * 32, b"ssh:")) + " key",
    "openssh-sk-ecdsa": lambda conn: "sk-ecdsa-sha2-nistp256@openssh.com " + b64(
        ssh_blob("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"\x04" + b"\x02" * 64, b"ssh:")),
    "openssh-blob-only": lambda conn: openssh("RSA").split()[1],
    "openssh-private-armour": lambda conn: ak.private_key("Ed25519").private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()).decode(),
    "ssh2-rfc4716": lambda conn: "---- BEGIN SSH2 PUBLIC KEY ----\n" + wrap64(openssh("RSA").split()[1])
    + "\n---- END SSH2 PUBLIC KEY ----\n",
    # PEM armour in any case, with or without END
    "pem-without-end": lambda conn: pem_spki("RSA").replace("-----END PUBLIC KEY-----\n", ""),
    "pem-lowercase": lambda conn: pem_spki("RSA").lower(),
    "pem-mixed-case": lambda conn: pem_spki("P-256").replace("BEGIN", "Begin").replace("END", "End"),
    "pem-end-only": lambda conn: pem_spki("RSA").split("\n", 1)[1],
    "pem-inside-text": lambda conn: "my key is:\n" + pem_spki("Ed25519"),
    "certificate-armour": lambda conn: "-----BEGIN CERTIFICATE-----\n" + b64(der_spki("RSA")) + "\n",
}


@pytest.mark.parametrize("alg", HMAC_ALGS)
@pytest.mark.parametrize("shape", sorted(PUBLIC_SHAPES))
def test_public_key_material_is_not_an_hmac_secret(ts, conn, shape, alg):
    text = PUBLIC_SHAPES[shape](conn)
    kid = f"as-hmac-{shape}-{alg}"
    with ts.expect_error("22023", "invalid key material") as info:
        conn.execute("SELECT token_store.create_key(%s, %s, %s)", (kid, alg, text))
    detail = info.value.diag.message_detail or ""
    assert detail[:1].isupper() and detail.endswith("."), f"DETAIL is not a sentence: {detail!r}"
    assert "needs a secret of at least" not in detail, "refused for its length, not for what it is"
    assert ak.key_row(conn, kid) is None


SECRETS = {
    "hex": lambda: secrets.token_hex(32),
    "base64-random": lambda: b64(secrets.token_bytes(64)),
    "base64url-random": lambda: b64url(secrets.token_bytes(64)),
    "passphrase": lambda: "correct horse battery staple, and then some more words to be long enough",
    "json-string": lambda: json.dumps("a quoted secret that is long enough for HS512, honestly, yes, really"),
    "dashes": lambda: "----- not armour ----- " + secrets.token_hex(32),
    "mentions-ssh": lambda: "my-ssh-rsa-password-" + secrets.token_hex(32),
}


@pytest.mark.parametrize("shape", sorted(SECRETS))
def test_ordinary_secrets_are_still_accepted(ts, conn, shape):
    """The control: secrets that merely look random (or mention ssh) are accepted, and work."""
    text = SECRETS[shape]()
    kid = f"ok-{shape}"
    ak.create_key(ts, conn, kid, "HS512", text)
    ts.secrets.add(text)
    assert ak.key_row(conn, kid) == ("HS512", "active", True)
    token = ts.issue(conn, ts.claims("ok"), kid=kid)
    assert ts.verify(conn, token)["sub"] == "ok"


def test_oct_jwk_is_still_the_jwk_form(ts, conn):
    secret = secrets.token_bytes(32)
    jwk = json.dumps({"kty": "oct", "k": b64url(secret)})
    ts.secrets.add(b64url(secret))
    assert ts.one(conn, "SELECT token_store.create_key('oct-ok', 'HS256', %s)", (jwk,)) == "oct-ok"


# ---- F: RSA public exponents ---------------------------------------------------------------------

MAX_E = 2**32


def rsa_with_exponent(e: int) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key with public exponent `e` (primes borrowed from a fresh key)."""
    while True:
        base = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
        p, q = base.p, base.q
        lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
        if math.gcd(e, lam) == 1:
            break
    d = pow(e, -1, lam)
    pub = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), pub).private_key()


def rsa_public_with_exponent(e: int):
    n = ak.private_key("RSA").public_key().public_numbers().n
    return rsa.RSAPublicNumbers(e, n).public_key()


BIG_E = MAX_E + 15  # odd, above 2^32, below the rsa crate's own 2^33 - 1


def big_e_texts():
    private = rsa_with_exponent(BIG_E)
    public = private.public_key()
    pem = ser.Encoding.PEM
    return {
        "spki": public.public_bytes(pem, ser.PublicFormat.SubjectPublicKeyInfo).decode(),
        "pkcs1-public": public.public_bytes(pem, ser.PublicFormat.PKCS1).decode(),
        "pkcs8": private.private_bytes(pem, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode(),
        "pkcs1": private.private_bytes(pem, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()).decode(),
        "jwk-public": json.dumps(ak.jwk_of(private, False)),
        "jwk": json.dumps(ak.jwk_of(private, True)),
    }


@pytest.fixture(scope="module")
def big_e():
    return big_e_texts()


@pytest.mark.parametrize("form", ["spki", "pkcs1-public", "pkcs8", "pkcs1", "jwk-public", "jwk"])
def test_rsa_exponent_above_2_32_is_refused(ts, conn, big_e, form):
    kid = f"big-e-{form}"
    ts.secrets.update(ak.secret_fragments(big_e[form]))
    with ts.expect_error("22023", "invalid key material") as info:
        conn.execute("SELECT token_store.create_key(%s, 'RS256', %s)", (kid, big_e[form]))
    assert "exponent" in (info.value.diag.message_detail or "")
    assert ak.key_row(conn, kid) is None


def test_rsa_exponent_above_2_32_in_a_jwks_is_refused(ts, conn, big_e):
    entry = {**json.loads(big_e["jwk-public"]), "kid": "big-e-jwks", "alg": "RS256"}
    with ts.expect_error("22023", "invalid JWKS") as info:
        conn.execute("SELECT token_store.import_jwks(%s)", (Jsonb({"keys": [entry]}),))
    assert "exponent" in (info.value.diag.message_detail or "")
    assert ak.key_row(conn, "big-e-jwks") is None


@pytest.mark.parametrize("e", [3, 65537, MAX_E - 1])
def test_rsa_exponents_up_to_2_32_are_accepted(ts, conn, e):
    """The control: e = 3, 65537 and 2^32 - 1 (the largest odd value allowed) import, as PEM, JWK and JWKS."""
    public = rsa_public_with_exponent(e)
    pem = public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()
    assert ts.one(conn, "SELECT token_store.create_key(%s, 'RS256', %s)", (f"e-{e}-pem", pem)) == f"e-{e}-pem"
    jwk = ak.jwk_of(ak.private_key("RSA"), False)
    jwk["e"] = b64url(e.to_bytes((e.bit_length() + 7) // 8, "big"))
    assert ts.one(conn, "SELECT token_store.create_key(%s, 'PS256', %s)", (f"e-{e}-jwk", json.dumps(jwk)))
    entry = {**jwk, "kid": f"e-{e}-jwks", "alg": "RS384"}
    assert ts.one(conn, "SELECT token_store.import_jwks(%s)", (Jsonb({"keys": [entry]}),)) == 1


def test_rsa_exponent_2_32_plus_1_is_refused(ts, conn):
    """The first odd value above the limit (F5 = 2^32 + 1)."""
    public = rsa_public_with_exponent(MAX_E + 1)
    pem = public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()
    with ts.expect_error("22023", "invalid key material"):
        conn.execute("SELECT token_store.create_key('e-f5', 'RS256', %s)", (pem,))
