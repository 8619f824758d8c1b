"""Shared fixtures and helpers of the client-level tests.

The suite runs against a live cluster started by scripts/test.sh (or by hand), described by:
TS_PGHOST, TS_PGPORT, TS_CLUSTER_DIR (holds data/ and server.log) and TS_PGBIN. The cluster has
token_store preloaded and token_store.databases = 'ts_client,ts_client2'.

Every helper is reached through the session fixture `ts` (an instance of `TS`), so test files
import nothing from here.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import jwt
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

import throwaway_cluster

REQUIRED_ENV = ("TS_PGHOST", "TS_PGPORT", "TS_CLUSTER_DIR", "TS_PGBIN")

# Databases named in token_store.databases by scripts/test.sh: each has a purge worker.
WORKER_DBS = ("ts_client", "ts_client2")

MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: restarts servers or waits on the purge worker (seconds per test); "
        "`scripts/test.sh --no-fuzz -- -m 'not slow'` leaves them out while developing")
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"client tests need {', '.join(REQUIRED_ENV)} (missing: {', '.join(missing)}); "
            "run them through scripts/test.sh or export them for your own cluster"
        )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TS:
    """The cluster under test and the helpers every test file uses."""

    def __init__(self):
        self.host = os.environ["TS_PGHOST"]
        self.port = int(os.environ["TS_PGPORT"])
        self.cluster_dir = Path(os.environ["TS_CLUSTER_DIR"])
        self.pgbin = Path(os.environ["TS_PGBIN"])
        self.server_log = self.cluster_dir / "server.log"
        # Registry read by test_zz_server_log.py: HMAC secrets the tests used, and the pids the
        # tests killed on purpose.
        self.secrets: set[str] = set()
        self.killed_pids: set[int] = set()
        self.log_offset_at_start = self.log_size()
        self._open: list[psycopg.Connection] = []

    # ---- connections -------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", user: str = "postgres", **kwargs) -> psycopg.Connection:
        """An autocommit connection, closed when the test ends."""
        conn = psycopg.connect(
            host=self.host, port=self.port, dbname=dbname, user=user, autocommit=True,
            connect_timeout=10, **kwargs,
        )
        self._open.append(conn)
        return conn

    def close_all(self):
        while self._open:
            conn = self._open.pop()
            try:
                conn.close()
            except Exception:
                pass

    @staticmethod
    def one(conn, query, params=None):
        """The first column of the first row."""
        row = conn.execute(query, params).fetchone()
        assert row is not None, f"no row from {query!r}"
        return row[0]

    @staticmethod
    def rows(conn, query, params=None):
        return conn.execute(query, params).fetchall()

    @staticmethod
    def set_role(conn, role: str):
        """Act as `role` in this session from now on (SET ROLE)."""
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        assert TS.one(conn, "SELECT current_user") == role

    @staticmethod
    def set_guc(conn, name: str, value: str):
        """Session-level SET with the value bound (SET itself takes no parameters)."""
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))

    # ---- databases and roles -----------------------------------------------------------------

    def admin_conn(self) -> psycopg.Connection:
        return self.connect("postgres")

    def drop_db(self, name: str):
        self.admin_conn().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def fresh_db(self, name: str) -> str:
        """Drop `name` if it exists, create it and CREATE EXTENSION token_store in it."""
        self.drop_db(name)
        self.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.connect(name).execute("CREATE EXTENSION token_store")
        return name

    @contextmanager
    def temporary_db(self, name: str):
        """`fresh_db(name)` for the length of the block (a module's tests, say); afterwards every
        connection is closed and the database dropped."""
        self.fresh_db(name)
        try:
            yield name
        finally:
            self.close_all()
            self.drop_db(name)

    def ensure_db(self, name: str):
        """Create `name` (without the extension) when it does not exist; never drops it."""
        conn = self.admin_conn()
        if not self.one(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def ensure_role(self, name: str, *member_of: str):
        """A LOGIN role (trust auth lets it connect), granted `member_of`."""
        conn = self.admin_conn()
        ident = sql.Identifier(name)
        if not self.one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        for group in member_of:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))

    def drop_role(self, name: str):
        self.admin_conn().execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    # ---- keys and tokens ---------------------------------------------------------------------

    def new_secret(self, alg: str = "HS256") -> str:
        """A random HMAC secret of the minimum length for `alg`, registered for the log check."""
        secret = secrets.token_hex(MIN_SECRET[alg])[: MIN_SECRET[alg]]
        self.secrets.add(secret)
        return secret

    def create_key(self, conn, kid: str, alg: str = "HS256", secret: str | None = None, as_jwk=False) -> str:
        """Register an HMAC key (random secret unless given); returns the secret."""
        secret = secret or self.new_secret(alg)
        self.secrets.add(secret)
        material = secret
        if as_jwk:
            self.secrets.add(b64url(secret.encode()))
            material = '{"kty":"oct","k":"%s"}' % b64url(secret.encode())
        assert self.one(conn, "SELECT token_store.create_key(%s, %s, %s)", (kid, alg, material)) == kid
        return secret

    @staticmethod
    def mint(claims: dict, secret: str, alg: str = "HS256", kid: str | None = None) -> str:
        """A token made by PyJWT (the independent implementation)."""
        headers = {"kid": kid} if kid is not None else None
        return jwt.encode(claims, secret, algorithm=alg, headers=headers)

    @staticmethod
    def claims(sub: str = "alice", ttl: int = 600, **extra) -> dict:
        now = int(time.time())
        return {"sub": sub, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4()), **extra}

    def issue(self, conn, claims: dict, ttl: str = "15 minutes", kid: str | None = None) -> str:
        return self.one(conn, "SELECT token_store.jwt_issue(%s, %s::interval, %s)", (Jsonb(claims), ttl, kid))

    def store(self, conn, token: str) -> uuid.UUID:
        return self.one(conn, "SELECT token_store.jwt_store(%s)", (token,))

    def verify(self, conn, token: str, audience=None, issuer=None) -> dict:
        return self.one(conn, "SELECT token_store.jwt_verify(%s, %s, %s)", (token, audience, issuer))

    def valid(self, conn, token: str) -> bool:
        return self.one(conn, "SELECT token_store.jwt_valid(%s)", (token,))

    def introspect(self, conn, token: str) -> dict:
        return self.one(conn, "SELECT token_store.jwt_introspect(%s)", (token,))

    def revoke(self, conn, token: str, reason: str | None = None) -> bool:
        return self.one(conn, "SELECT token_store.jwt_revoke(%s, %s)", (token, reason))

    def stats(self, conn) -> dict:
        cur = conn.execute("SELECT * FROM token_store.stats()")
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row))

    # ---- assertions --------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def expect_error(sqlstate: str, prefix: str | None = None):
        """The block must raise a server error with this SQLSTATE (and message prefix)."""
        with pytest.raises(psycopg.Error) as info:
            yield info
        err = info.value
        assert err.sqlstate == sqlstate, f"expected SQLSTATE {sqlstate}, got {err.sqlstate}: {err}"
        if prefix is not None:
            msg = err.diag.message_primary or ""
            assert msg.startswith(prefix), f"expected message starting {prefix!r}, got {msg!r}"

    def assert_rejected(self, conn, token: str, reason: str, audience=None, issuer=None):
        """jwt_verify raises 28000 'token rejected: <reason>'. Without explicit audience/issuer
        (which only jwt_verify takes), jwt_valid is false and jwt_introspect gives the reason."""
        with self.expect_error("28000", f"token rejected: {reason}") as info:
            self.verify(conn, token, audience, issuer)
        assert info.value.diag.message_primary == f"token rejected: {reason}"
        if audience is None and issuer is None:
            assert self.valid(conn, token) is False
            assert self.introspect(conn, token) == {"active": False, "reason": reason}

    def assert_malformed(self, conn, token: str):
        """22P02 'invalid token:' from jwt_verify; jwt_valid false; introspect says malformed."""
        with self.expect_error("22P02", "invalid token:"):
            self.verify(conn, token)
        assert self.valid(conn, token) is False
        assert self.introspect(conn, token) == {"active": False, "reason": "malformed"}

    @staticmethod
    def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
        """Poll `predicate` until it returns something truthy (returned), or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        last_exc = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
                last_exc = None
            except psycopg.OperationalError as e:  # server restarting, connection lost
                last_exc = e
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))

    @staticmethod
    def holds_for(predicate, duration: float, what: str, interval: float = 0.2):
        """`predicate` must stay true for `duration` seconds (checked every `interval`)."""
        deadline = time.monotonic() + duration
        while True:
            assert predicate(), f"no longer true: {what}"
            if time.monotonic() >= deadline:
                return
            time.sleep(interval)

    # ---- server configuration ----------------------------------------------------------------

    def configure(self, conn, settings: dict[str, str | None], expect_shown: dict[str, str], timeout=20):
        """ALTER SYSTEM SET (or RESET, for None) each setting, reload, and wait until this session
        shows the values in `expect_shown` (which proves the reload reached the backends)."""
        for name, value in settings.items():
            if value is None:
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
            else:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
        assert self.one(conn, "SELECT pg_reload_conf()") is True

        def shown():
            return all(
                self.one(conn, "SELECT pg_catalog.current_setting(%s)", (n,)) == v for n, v in expect_shown.items()
            )

        self.wait_for(shown, timeout, f"reload to show {expect_shown}")

    def encryption_key_text(self) -> str:
        conf = (self.cluster_dir / "data" / "token_store_key.conf").read_text()
        m = re.search(r"token_store\.encryption_key\s*=\s*'([^']+)'", conf)
        assert m, "no encryption key in token_store_key.conf"
        return m.group(1)

    # ---- server log --------------------------------------------------------------------------

    def log_size(self) -> int:
        return throwaway_cluster.log_size(self.server_log)

    def log_text(self, start: int = 0) -> str:
        return throwaway_cluster.log_text(self.server_log, start)


@pytest.fixture(scope="session")
def ts():
    t = TS()
    # The purge workers of the configured databases connect only once these exist; create them
    # early so the workers are up when test_worker.py runs. ts_client2's extension is left to it.
    t.ensure_db(WORKER_DBS[0])
    t.ensure_db(WORKER_DBS[1])
    t.close_all()
    yield t
    t.close_all()


@pytest.fixture(autouse=True)
def _close_connections(ts):
    """Every connection a test opens through ts.connect is closed when it ends."""
    yield
    ts.close_all()
