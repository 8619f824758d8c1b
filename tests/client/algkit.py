"""Keys, key texts and tokens for every JWS algorithm, made with the independent implementations
(`cryptography` for keys, PyJWT and jwcrypto for tokens). Shared by test_algorithms.py,
test_algorithm_attacks.py and test_key_states.py; not a test file itself.

A key here is a `cryptography` private key object, or for HS* the secret as text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
import uuid
from contextlib import contextmanager

import jwt
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws
from jwcrypto import jwt as jc_jwt

HMAC_ALGS = ("HS256", "HS384", "HS512")
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = ("ES256", "ES384")
ASYM_ALGS = RSA_ALGS + EC_ALGS + ("EdDSA",)
ALL_ALGS = HMAC_ALGS + ASYM_ALGS
LIBS = ("pyjwt", "jwcrypto")

# The kind of key each alg takes ("oct" for the HMAC secrets).
KIND = {
    **{alg: "oct" for alg in HMAC_ALGS},
    **{alg: "RSA" for alg in RSA_ALGS},
    "ES256": "P-256",
    "ES384": "P-384",
    "EdDSA": "Ed25519",
}
SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# The forms create_key accepts for each kind, private ones first.
FORMS = {
    "oct": ("secret", "jwk"),
    "RSA": ("pkcs8", "pkcs1", "jwk", "spki", "pkcs1-public", "jwk-public"),
    "P-256": ("pkcs8", "sec1", "jwk", "spki", "jwk-public"),
    "P-384": ("pkcs8", "sec1", "jwk", "spki", "jwk-public"),
    "Ed25519": ("pkcs8", "jwk", "spki", "jwk-public"),
}
PRIVATE_FORMS = {"secret", "pkcs8", "pkcs1", "sec1", "jwk"}
PEM_LABEL = {
    "pkcs8": "PRIVATE KEY",
    "pkcs1": "RSA PRIVATE KEY",
    "sec1": "EC PRIVATE KEY",
    "spki": "PUBLIC KEY",
    "pkcs1-public": "RSA PUBLIC KEY",
}
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_json(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


# ---- keys ---------------------------------------------------------------------------------------


@functools.cache
def private_key(kind: str, variant: int = 0):
    """A private key of `kind` (RSA, RSA-1024, P-256, P-384, Ed25519), made once per variant."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "RSA-1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "P-256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "P-384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


@functools.cache
def hmac_secret(alg: str, variant: int = 0) -> str:
    """A random secret of the minimum length for `alg`."""
    return secrets.token_hex(SECRET_BYTES[alg])[: SECRET_BYTES[alg]]


def key_of_kind(kind: str, variant: int = 0):
    """A private key of `kind`, or for "oct" an HS512-sized secret."""
    return hmac_secret("HS512", variant) if kind == "oct" else private_key(kind, variant)


def signing_key(alg: str, variant: int = 0):
    """The key (private key object, or secret) that tokens of `alg` are signed with."""
    kind = KIND[alg]
    return hmac_secret(alg, variant) if kind == "oct" else private_key(kind, variant)


def forms(alg: str) -> tuple[str, ...]:
    return FORMS[KIND[alg]]


def jwk_of(key, private: bool, **extra) -> dict:
    """The JWK of `key` as jwcrypto writes it (private members only when `private`), with `extra`
    members; jwcrypto's thumbprint kid is left out."""
    if isinstance(key, str):
        out = {"kty": "oct", "k": b64url(key.encode())}
    else:
        k = jc_jwk.JWK.from_pyca(key)
        out = k.export_private(as_dict=True) if private else k.export_public(as_dict=True)
        out.pop("kid", None)
    return {**out, **extra}


def public_jwk(alg: str, variant: int = 0) -> dict:
    return jwk_of(signing_key(alg, variant), private=False)


def material(key, form: str, **jwk_extra) -> str:
    """`key` as the text create_key takes in `form` (see FORMS)."""
    if form == "secret":
        assert isinstance(key, str)
        return key
    if form in ("jwk", "jwk-public"):
        return json.dumps(jwk_of(key, private=form == "jwk", **jwk_extra))
    pem = ser.Encoding.PEM
    if form == "pkcs8":
        text = key.private_bytes(pem, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    elif form in ("pkcs1", "sec1"):
        text = key.private_bytes(pem, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    elif form == "spki":
        text = key.public_key().public_bytes(pem, ser.PublicFormat.SubjectPublicKeyInfo)
    elif form == "pkcs1-public":
        text = key.public_key().public_bytes(pem, ser.PublicFormat.PKCS1)
    else:
        raise ValueError(form)
    text = text.decode()
    assert text.startswith(f"-----BEGIN {PEM_LABEL[form]}-----\n"), f"{form} is not {PEM_LABEL[form]}"
    return text


def secret_fragments(text: str) -> set[str]:
    """Parts of a key text that are secret: an HMAC secret, a JWK's private members, the body
    lines of a private PEM (those of 16 characters or more, too long to turn up by chance).
    Registered in ts.secrets, which test_zz_server_log.py looks for in the server log."""
    if "-----BEGIN" in text:
        if "PRIVATE KEY-----" not in text:
            return set()
        parts = {line for line in text.splitlines() if not line.startswith("-----")}
    else:
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            parts = {v for m, v in obj.items() if m in PRIVATE_JWK_MEMBERS and isinstance(v, str)}
        else:
            parts = {text}
    return {p for p in parts if len(p) >= 16}


# ---- registering keys ---------------------------------------------------------------------------


def create_key(ts, conn, kid: str, alg: str, text: str) -> str:
    ts.secrets.update(secret_fragments(text))
    assert ts.one(conn, "SELECT token_store.create_key(%s, %s, %s)", (kid, alg, text)) == kid
    return kid


def key_row(conn, kid: str) -> tuple | None:
    row = conn.execute("SELECT alg, state, can_sign FROM token_store.keys WHERE kid = %s", (kid,)).fetchone()
    return tuple(row) if row else None


@contextmanager
def sole_key_of_its_alg(ts, conn, kid: str, alg: str, text: str):
    """Register a key, insist it is the only non-retired key of its alg (so a token without kid
    can only verify with it), and retire it when the block ends."""
    create_key(ts, conn, kid, alg, text)
    try:
        others = ts.rows(
            conn, "SELECT kid FROM token_store.keys WHERE alg = %s AND state <> 'retired' AND kid <> %s", (alg, kid)
        )
        assert others == [], f"other live {alg} keys: {others}"
        yield kid
    finally:
        conn.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))


# ---- tokens -------------------------------------------------------------------------------------


def claims_now(sub: str = "mallory", ttl: int = 600, **extra) -> dict:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4()), **extra}


def mint(lib: str, claims: dict, alg: str, key, kid: str | None = None) -> str:
    """A token of `claims` signed with `key` by PyJWT or jwcrypto; a kid header only when given."""
    if lib == "pyjwt":
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid is not None else None)
    if lib == "jwcrypto":
        header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid is not None else {})}
        token = jc_jwt.JWT(header=header, claims=claims)
        token.make_signed_token(jc_jwk.JWK(**jwk_of(key, private=True)))
        return token.serialize()
    raise ValueError(lib)


def decode(lib: str, token: str, alg: str, key) -> dict:
    """The claims of `token` as PyJWT or jwcrypto verify it (signature, exp, nbf), allowing `alg`
    only. `key` is an HMAC secret, a public JWK, or a JWKS (the token's kid picks the key)."""
    if isinstance(key, dict) and "keys" in key:
        kid = jwt.get_unverified_header(token)["kid"]
        if lib == "pyjwt":
            key = jwt.PyJWKSet.from_dict(key)[kid]
        else:
            key = jc_jwk.JWKSet.from_json(json.dumps(key)).get_key(kid)
            assert key is not None, f"no key {kid!r} in the JWKS"
    if lib == "pyjwt":
        if isinstance(key, dict):
            key = jwt.PyJWK(key, algorithm=key.get("alg", alg))
        if isinstance(key, jwt.PyJWK):
            assert key.algorithm_name == alg
            key = key.key
        return jwt.decode(token, key, algorithms=[alg], options={"verify_aud": False})
    if lib == "jwcrypto":
        if isinstance(key, str):
            key = jc_jwk.JWK(**jwk_of(key, private=True))
        elif isinstance(key, dict):
            key = jc_jwk.JWK(**key)
        return json.loads(jc_jwt.JWT(jwt=token, key=key, algs=[alg]).claims)
    raise ValueError(lib)


# What each library raises for a token whose signature does not verify.
BAD_SIGNATURE = {"pyjwt": jwt.InvalidSignatureError, "jwcrypto": jc_jws.InvalidJWSSignature}


def signature_only(token: str, alg: str, jwk: dict) -> bytes:
    """jwcrypto's check of the signature alone (no claims); returns the payload."""
    jws = jc_jws.JWS()
    jws.deserialize(token)
    jws.verify(jc_jwk.JWK(**jwk), alg=alg)
    return jws.payload


def sign_raw(alg: str, key, signing_input: bytes) -> bytes:
    """The JWS signature of `signing_input` under `alg` with `key`, computed by PyJWT's algorithm
    objects (HMAC by hand, so that any text, a PEM included, can serve as the secret)."""
    if isinstance(key, str):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(key.encode(), signing_input, digest).digest()
    return jwt.algorithms.get_default_algorithms()[alg].sign(signing_input, key)


def hand_token(header: dict, claims: dict, sign_as: str, key) -> str:
    """A compact JWS of `header` and `claims`, signed as `sign_as` whatever the header says."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    return f"{signing_input}.{b64url(sign_raw(sign_as, key, signing_input.encode()))}"


def tamper(token: str, part: str) -> str:
    """`token` with one part changed and the signature left as it was."""
    header, payload, sig = token.split(".")
    if part == "header":
        header = b64url_json({**json.loads(b64url_decode(header)), "typ": "JOSE"})
    elif part == "payload":
        payload = b64url_json({**json.loads(b64url_decode(payload)), "sub": "admin"})
    elif part == "signature":
        raw = bytearray(b64url_decode(sig))
        raw[len(raw) // 3] ^= 0x01
        sig = b64url(bytes(raw))
    else:
        raise ValueError(part)
    return f"{header}.{payload}.{sig}"


def assert_refused(ts, conn, token: str, reasons: tuple[str, ...]):
    """Like ts.assert_rejected, for a token that may be refused with any of `reasons`."""
    with ts.expect_error("28000", "token rejected: ") as info:
        ts.verify(conn, token)
    said = info.value.diag.message_primary.removeprefix("token rejected: ")
    assert said in reasons, f"rejected as {said}, expected one of {reasons}"
    assert ts.valid(conn, token) is False
    assert ts.introspect(conn, token) == {"active": False, "reason": said}
