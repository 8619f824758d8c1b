"""A test identity provider: an HTTPS server on 127.0.0.1 with a CA made for the test, serving an
OpenID Connect discovery document and a JWKS, scriptable per test (keys, Cache-Control, ETag, 304,
status, delay, size, redirects, raw bodies) and counting the requests it answers.

Keys are made with `cryptography`, published as JWKs with jwcrypto, and tokens signed with PyJWT.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwk

ALGS = ("RS256", "PS256", "ES256", "ES384", "EdDSA")


def private_key(alg: str):
    if alg in ("RS256", "PS256", "RS384", "RS512", "PS384", "PS512"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


class Key:
    """A provider's signing key: its private half signs, its public JWK is published."""

    def __init__(self, alg: str, kid: str | None = None, publish_alg: bool = True):
        self.alg = alg
        self.kid = kid if kid is not None else f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        self.private = private_key(alg)
        self.publish_alg = publish_alg

    def jwk(self) -> dict:
        d = jwk.JWK.from_pyca(self.private.public_key()).export_public(as_dict=True)
        d["kid"] = self.kid
        d["use"] = "sig"
        if self.publish_alg:
            d["alg"] = self.alg
        return d

    def private_jwk(self) -> dict:
        d = jwk.JWK.from_pyca(self.private).export_private(as_dict=True)
        d["kid"] = self.kid
        d["alg"] = self.alg
        return d

    def sign(self, claims: dict, kid: str | None | bool = True, alg: str | None = None) -> str:
        headers = {}
        if kid is True:
            headers["kid"] = self.kid
        elif kid:
            headers["kid"] = kid
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=headers or None)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert(subject_cn: str, pub, issuer_name, signer, ca: bool, sans=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(issuer_name)
         .public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    return b.sign(signer, hashes.SHA256())


class TLSFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, in a directory postgres can read."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ts-idp-"))
        self.dir.chmod(0o755)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token_store test CA")])
        ca = _cert("token_store test CA", ca_key.public_key(), ca_name, ca_key, True)
        srv_key = ec.generate_private_key(ec.SECP256R1())
        srv = _cert("127.0.0.1", srv_key.public_key(), ca_name, ca_key, False,
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.ca_file.chmod(0o644)
        self.cert_file = self.dir / "server.pem"
        self.cert_file.write_bytes(srv.public_bytes(serialization.Encoding.PEM))
        self.key_file = self.dir / "server.key"
        self.key_file.write_bytes(srv_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        # a second CA the server's certificate does not chain to
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
        other = _cert("another CA", other_key.public_key(), other_name, other_key, True)
        self.other_ca_file = self.dir / "other-ca.pem"
        self.other_ca_file.write_bytes(other.public_bytes(serialization.Encoding.PEM))
        self.other_ca_file.chmod(0o644)


class Provider:
    """The scriptable provider. `issuer` is https://127.0.0.1:<port>/realms/<name>."""

    def __init__(self, tls: TLSFiles | None, name: str = "test", http: bool = False):
        self.keys: list[Key] = []
        self.extra_jwks: list[dict] = []  # raw JWK members published beside the keys
        self.cache_control: str | None = None
        self.etag: str | None = None
        self.honour_etag = True
        self.status: int | None = None  # answer every request with this status
        self.delay = 0.0
        self.body: bytes | None = None  # answer the JWKS with these bytes
        self.redirect: str | None = None  # answer the JWKS with a 302 to this URL
        self.discovery_issuer: str | None = None  # override the discovery's issuer member
        self.requests: list[tuple[float, str, int]] = []  # (time, path, status)
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                provider._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        scheme = "http" if http else "https"
        if not http:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.issuer = f"{self.base}/realms/{name}"
        self.jwks_uri = f"{self.base}/realms/{name}/certs"
        self.name = name
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread = None

    def jwks(self) -> dict:
        return {"keys": [k.jwk() for k in self.keys] + self.extra_jwks}

    def count(self, path_end: str = "/certs", since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t, p, _ in self.requests if p.endswith(path_end) and t >= since)

    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None):
        with self.lock:
            self.requests.append((time.time(), h.path, status))
        try:
            h.send_response(status)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if body:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass

    def _serve(self, h):
        if self.delay:
            time.sleep(self.delay)
        if self.status is not None:
            return self._send(h, self.status, b"boom")
        path = h.path.split("?")[0]
        if path == f"/realms/{self.name}/.well-known/openid-configuration":
            doc = {"issuer": self.discovery_issuer or self.issuer, "jwks_uri": self.jwks_uri,
                   "authorization_endpoint": f"{self.issuer}/auth"}
            return self._send(h, 200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        if path == f"/realms/{self.name}/certs":
            if self.redirect:
                return self._send(h, 302, b"", {"Location": self.redirect})
            headers = {"Content-Type": "application/json"}
            if self.cache_control:
                headers["Cache-Control"] = self.cache_control
            if self.etag:
                headers["ETag"] = self.etag
                if self.honour_etag and h.headers.get("If-None-Match") == self.etag:
                    return self._send(h, 304, b"", headers)
            body = self.body if self.body is not None else json.dumps(self.jwks()).encode()
            return self._send(h, 200, body, headers)
        if path == "/moved/certs":
            return self._send(h, 200, json.dumps(self.jwks()).encode(), {"Content-Type": "application/json"})
        return self._send(h, 404, b"not found")
