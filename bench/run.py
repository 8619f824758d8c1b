#!/usr/bin/env python3
"""The token_store benchmark suite. Run it through `scripts/bench.sh`, which builds and installs
the release build, starts a private cluster and calls this with its address.

In one run it measures, on the same data:
  token_store  jwt_store, jwt_valid / jwt_verify (allow-list and deny-list), jwt_revoke and
               jwt_issue for HS256, RS256, ES256 and EdDSA, as batch SQL over tokens made by PyJWT
  baseline     the same jobs in PL/pgSQL + pgcrypto (bench/baseline.sql)
  floor        the same crate calls in a plain Rust loop (bench/floor/), plus a bare INSERT and
               an index probe of rows of the same shape in SQL
  concurrency  pgbench, 1 and 2 clients: jwt_valid against SELECT 1 (bench/pgbench/)
  per request  one fixed stored token per statement, pgbench -M prepared, 1 and 2 clients:
               jwt_valid, jwt_verify, the baseline, `SELECT 1`, `SELECT length(token)` and the
               plain deny-list lookup (`SELECT revoked_at FROM token_store.tokens WHERE
               token_hash = ...`), beside Redis 7 EXISTS (a private redis-server on a loopback
               port, redis-benchmark with as many client threads as pgbench has clients)
  signatures   token_store_core's signature check per key type (bench/floor) against
               `openssl speed`'s verify of the same key type, interleaved
  no kid       the batch verify again for HS256 tokens without a `kid` header
  sessions     session_refresh per round trip beside jwt_issue and the same rows written by SQL
  dpop         jwt_verify_dpop per round trip (a fresh ES256 proof each) beside jwt_verify and a
               plain INSERT ... ON CONFLICT of the same replay-cache row
  purge        token_store.purge() against one bare DELETE on 1M expired rows, and the latency
               of jwt_valid on a second connection while each runs
  memory       a backend's RSS before and after 1M jwt_valid calls
and writes bench/results.json, bench/results.svg and a table on stdout. Ratios matter more than
times: the machine may be shared, and absolute times drift between runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

HS_SECRET = "bench-hs256-secret-0123456789abcdef-0123456789"
ASYM = ("RS256", "ES256", "EdDSA")
ALGS = ("HS256",) + ASYM
ISSUER = "https://auth.example.com"
# Cached tokens are made again when older than this (they expire a week after they are made).
CACHE_MAX_AGE_S = 2 * 86400
TOKEN_LIFETIME_S = 7 * 86400

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def kid_of(alg: str) -> str:
    return f"bench-{alg.lower()}"


def table_of(alg: str) -> str:
    return f"bench.tok_{alg.lower()}"


# ------------------------------------------------------------------------------------------------
# tokens and keys, made once with PyJWT and cached under target/

def make_keys(cache: Path) -> None:
    """Write the benchmark's keys: the HS256 secret and a PKCS#8/SPKI PEM pair per asymmetric alg."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "hs256.secret").write_text(HS_SECRET)
    makers = {
        "rs256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "es256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "eddsa": ed25519.Ed25519PrivateKey.generate,
    }
    for name, make in makers.items():
        if (cache / f"{name}.key.pem").exists():
            continue
        key = make()
        (cache / f"{name}.key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (cache / f"{name}.pub.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def signing_key(cache: Path, alg: str):
    if alg == "HS256":
        return HS_SECRET
    return serialization.load_pem_private_key(
        (cache / f"{alg.lower()}.key.pem").read_bytes(), password=None)


def tokens_for(cache: Path, alg: str, n: int, with_kid: bool = True) -> list[str]:
    """n tokens of alg made by PyJWT, from the cache when it holds enough fresh ones; without a
    `kid` header when with_kid is false (the common case of HS256 apps)."""
    name = alg.lower() + ("" if with_kid else "_nokid")
    path = cache / f"tokens_{name}.txt"
    meta_path = cache / f"tokens_{name}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["n"] >= n and time.time() - meta["made_at"] < CACHE_MAX_AGE_S:
            return path.read_text().split("\n")[:n]
    log(f"making {n} {alg} tokens with PyJWT {jwt.__version__} (cached in {cache})")
    key = signing_key(cache, alg)
    now = int(time.time())
    out = []
    for i in range(n):
        claims = {"sub": f"user-{i}", "iss": ISSUER, "iat": now, "exp": now + TOKEN_LIFETIME_S,
                  "jti": str(uuid.uuid4()), "role": "reader", "scope": "read write"}
        out.append(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid_of(alg)} if with_kid else None))
    path.write_text("\n".join(out))
    meta_path.write_text(json.dumps({"n": n, "made_at": now, "pyjwt": jwt.__version__}))
    return out


# ------------------------------------------------------------------------------------------------
# helpers

def median(xs):
    return statistics.median(xs)


class Run(NamedTuple):
    wall: float  # seconds
    cpu: float  # CPU seconds of the process that did the work


class Bench:
    def __init__(self, args):
        self.args = args
        self.dsn = f"host={args.host} port={args.port} user=postgres dbname={args.dbname}"
        self.results: dict = {"measurements": {}, "config": {}, "targets": []}
        self.m = self.results["measurements"]
        self.cache = Path(args.cache_dir)
        self.conn: psycopg.Connection | None = None

    # -- database -----------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def q(self, sql, params=None):
        return self.conn.execute(sql, params)

    def one(self, sql, params=None):
        return self.q(sql, params).fetchone()[0]

    def backend_cpu(self, pid=None) -> float:
        """CPU seconds a backend has run (/proc/<pid>/schedstat, nanoseconds); read while it
        waits for its client, so it is up to date."""
        return int(Path(f"/proc/{pid or self.pid}/schedstat").read_text().split()[0]) / 1e9

    def timed(self, sql, params=None, expect=None, what="") -> Run:
        """Wall time and the backend's CPU time of one one-row statement; checks its first
        column."""
        c0, t = self.backend_cpu(), time.perf_counter()
        row = self.q(sql, params).fetchone()
        run = Run(time.perf_counter() - t, self.backend_cpu() - c0)
        if expect is not None and row[0] != expect:
            raise SystemExit(f"{what or sql}: got {row[0]}, expected {expect}")
        return run

    def record(self, key, runs, n, **extra):
        """Keep the median of one or more runs. us_per_op is CPU time of the process doing the
        work (the backend, or the floor program), the figure the ratios use: other load on a
        shared machine inflates it far less than wall time, kept as wall_us_per_op."""
        runs = runs if isinstance(runs, list) else [runs]
        wall, cpu = median([r.wall for r in runs]), median([r.cpu for r in runs])
        self.m[key] = {"n": n, "s": wall, "cpu_s": cpu, "us_per_op": cpu / n * 1e6,
                       "wall_us_per_op": wall / n * 1e6, "runs_s": [r.wall for r in runs],
                       "runs_cpu_s": [r.cpu for r in runs], **extra}
        log(f"  {key:<34} n={n:<8} {wall:8.3f} s  cpu {cpu / n * 1e6:9.2f} us/op  "
            f"wall {wall / n * 1e6:9.2f} us/op")

    def settle(self, *tables):
        """Untimed: vacuum/analyze what the next step reads, and checkpoint, so every contender
        starts from the same state."""
        for t in tables:
            self.q(f"VACUUM ANALYZE {t}")
        self.q("CHECKPOINT")

    def backend_pid(self, conn=None):
        return (conn or self.conn).execute("SELECT pg_backend_pid()").fetchone()[0]

    def check_library(self):
        """The backend must run the library this run built (scripts/bench.sh copies it into the
        cluster's own directory, so another install of token_store.so cannot swap it)."""
        pid = self.backend_pid()
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        # by file name: the private copy of PostgreSQL itself lives under /tmp/token_store-run.*
        paths = {line.split()[-1] for line in maps if line.split()[-1].endswith("/token_store.so")}
        self.results["config"]["library_mapped"] = sorted(paths)
        if self.args.lib:
            want = str(Path(self.args.lib).resolve())
            if paths != {want}:
                raise SystemExit(f"backend maps {sorted(paths)}, expected only {want}")
            self.results["config"]["library_sha256"] = hashlib.sha256(
                Path(want).read_bytes()).hexdigest()

    # -- stages -------------------------------------------------------------------------------

    def setup(self):
        a = self.args
        log("setup: keys, tokens, schema")
        make_keys(self.cache)
        self.tokens = {"HS256": tokens_for(self.cache, "HS256", a.n),
                       "HS256_nokid": tokens_for(self.cache, "HS256", a.n, with_kid=False)}
        for alg in ASYM:
            self.tokens[alg] = tokens_for(self.cache, alg, a.n_asym)
        with psycopg.connect(f"host={a.host} port={a.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {a.dbname}")
            c.execute(f"CREATE DATABASE {a.dbname}")
        self.conn = self.connect()
        self.pid = self.backend_pid()
        self.q("CREATE EXTENSION token_store")
        self.check_library()
        self.q((BENCH / "baseline.sql").read_text())
        assert self.one("SELECT octet_length(baseline.aes_key())") == 32
        self.q("SELECT token_store.create_key(%s, 'HS256', %s)", (kid_of("HS256"), HS_SECRET))
        self.q("INSERT INTO baseline.keys VALUES (%s, 'HS256', %s)", (kid_of("HS256"), HS_SECRET))
        for alg in ASYM:
            pem = (self.cache / f"{alg.lower()}.key.pem").read_text()
            self.q("SELECT token_store.create_key(%s, %s, %s)", (kid_of(alg), alg, pem))
        self.q("CREATE SCHEMA bench")
        for alg in ALGS + ("HS256_nokid",):
            t = table_of(alg)
            self.q(f"CREATE TABLE {t} (id int PRIMARY KEY, token text NOT NULL)")
            with self.conn.cursor().copy(f"COPY {t} (id, token) FROM STDIN") as cp:
                for i, tok in enumerate(self.tokens[alg], 1):
                    cp.write_row((i, tok))
            self.q(f"VACUUM ANALYZE {t}")
        # rows of the same shape as the stored tokens, precomputed, for the bare INSERT / probe
        self.q("""
            CREATE TABLE bench.floor_src AS
            SELECT gen_random_uuid() AS id, sha256(convert_to(token, 'UTF8')) AS token_hash,
                   c->>'jti' AS jti, c->>'sub' AS subject, c->>'iss' AS issuer,
                   'bench-hs256'::text AS kid, to_timestamp((c->>'iat')::float8) AS issued_at,
                   to_timestamp((c->>'nbf')::float8) AS not_before,
                   to_timestamp((c->>'exp')::float8) AS expires_at,
                   gen_random_bytes(12 + octet_length(p) + 16) AS payload,
                   '0123456789abcdef'::text AS key_fingerprint
              FROM (SELECT token, p, convert_from(p, 'UTF8')::jsonb AS c
                      FROM (SELECT token, baseline.url_decode(split_part(token, '.', 2)) AS p
                              FROM bench.tok_hs256) d) s""")
        self.q("CREATE TABLE bench.floor_tokens (LIKE token_store.tokens INCLUDING ALL)")
        self.q("VACUUM ANALYZE bench.floor_src")
        self.results["config"]["server_version"] = self.one("SHOW server_version")
        self.results["config"]["settings"] = dict(self.q(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'jit', "
            "'autovacuum', 'synchronous_commit', 'fsync', 'max_parallel_workers_per_gather', "
            "'token_store.purge_interval', 'token_store.purge_batch_size', 'wal_level', "
            "'dynamic_library_path')").fetchall())

    def floor(self):
        a = self.args
        log("floor: crate calls in a plain Rust loop (bench/floor)")
        out = subprocess.run([a.floor_bin, str(self.cache), str(a.n_issue), str(a.n_issue_asym),
                              "3"], check=True, capture_output=True, text=True)
        self.floor_rust = json.loads(out.stdout)
        self.results["floor_rust"] = self.floor_rust
        for alg in ALGS:
            f = self.floor_rust[alg]
            log(f"  {alg}: decode+verify {f['decode_verify_cpu_s'] / f['n'] * 1e6:.2f} us, "
                f"signature only {f['verify_signature_cpu_s'] / f['n_verify_signature'] * 1e6:.2f} us, "
                f"sign {f['sign_cpu_s'] / max(f['n_sign'], 1) * 1e6:.2f} us (CPU)")
        sha, aes = self.floor_rust["sha256"], self.floor_rust["aes_gcm_seal"]
        log(f"  sha256 {sha['cpu_s'] / sha['n'] * 1e6:.3f} us, "
            f"aes-gcm seal {aes['cpu_s'] / aes['n'] * 1e6:.3f} us (CPU)")

    def floor_verify(self, alg):
        """One pass of token_store_core's parse+verify+claims over the tokens of alg (bench/floor), in seconds."""
        n = self.args.n if alg == "HS256" else self.args.n_asym
        out = subprocess.run([self.args.floor_bin, str(self.cache), "verify", alg, str(n)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout)
        assert r["n"] == n, r
        return Run(r["decode_verify_s"], r["decode_verify_cpu_s"])

    def store(self):
        n, a = self.args.n, self.args
        rounds = a.write_rounds
        log(f"store: {n} HS256 tokens into empty tables, {rounds} interleaved rounds")
        cols = ("id, token_hash, jti, subject, issuer, kid, issued_at, not_before, expires_at, "
                "payload, key_fingerprint")
        runs = {"floor.insert": [], "ts.store.HS256": [], "baseline.store_aes": []}
        for r in range(rounds):
            if r:
                self.q("TRUNCATE bench.floor_tokens, token_store.tokens, baseline.tokens")
            self.settle()
            runs["floor.insert"].append(self.timed(
                f"WITH i AS (INSERT INTO bench.floor_tokens ({cols}) SELECT {cols} "
                "FROM bench.floor_src RETURNING 1) SELECT count(*) FROM i", expect=n,
                what="bare INSERT"))
            self.settle()
            runs["ts.store.HS256"].append(self.timed(
                "SELECT count(DISTINCT token_store.jwt_store(token)) FROM bench.tok_hs256",
                expect=n, what="token_store.jwt_store"))
            self.settle()
            runs["baseline.store_aes"].append(self.timed(
                "SELECT count(DISTINCT baseline.jwt_store(token)) FROM bench.tok_hs256",
                expect=n, what="baseline.jwt_store"))
        for k, v in runs.items():
            self.record(k, v, n)
        self.settle()
        self.record("baseline.store_pgp", self.timed(
            "SELECT count(DISTINCT baseline.jwt_store_pgp(token)) FROM bench.tok_hs256 "
            "WHERE id <= %s", (a.n_pgp,), expect=a.n_pgp, what="baseline.jwt_store_pgp"), a.n_pgp)
        # storing again returns the same ids (and costs a verification and a lookup)
        self.settle("token_store.tokens", "baseline.tokens", "bench.floor_tokens")

    def verify(self):
        n = self.args.n
        log(f"verify: {n} stored HS256 tokens, 3 runs each, interleaved")
        ts, base, probe, crate = [], [], [], []
        self.q("SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off")
        probe_sql = ("SELECT count(*) FILTER (WHERE t.revoked_at IS NULL) FROM bench.floor_src s "
                     "JOIN token_store.tokens t ON t.token_hash = s.token_hash")
        plan = "\n".join(r[0] for r in self.q("EXPLAIN " + probe_sql).fetchall())
        if "Index Scan" not in plan or "Nested Loop" not in plan:
            raise SystemExit(f"the index probe floor is not a nested loop of index scans:\n{plan}")
        self.results["config"]["probe_plan"] = plan
        nokid = []
        self.timed("SELECT count(DISTINCT token_store.jwt_store(token)) FROM bench.tok_hs256_nokid",
                   expect=n, what="token_store.jwt_store of the kid-less tokens")
        self.settle("token_store.tokens")
        for _ in range(3):
            ts.append(self.timed("SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) "
                                 "FROM bench.tok_hs256", expect=n, what="token_store.jwt_valid"))
            nokid.append(self.timed("SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) "
                                    "FROM bench.tok_hs256_nokid", expect=n,
                                    what="token_store.jwt_valid, tokens without kid"))
            base.append(self.timed("SELECT count(*) FILTER (WHERE baseline.jwt_valid(token)) "
                                   "FROM bench.tok_hs256", expect=n, what="baseline.jwt_valid"))
            probe.append(self.timed(probe_sql, expect=n, what="index probe"))
            crate.append(self.floor_verify("HS256"))
        self.q("RESET enable_hashjoin; RESET enable_mergejoin; RESET enable_memoize")
        self.record("ts.valid.HS256", ts, n)
        self.record("ts.valid_nokid.HS256", nokid, n)
        self.record("baseline.valid", base, n)
        self.record("floor.probe", probe, n)
        self.record("floor.crate_decode.HS256", crate, n)
        self.record("ts.verify.HS256", self.timed(
            "SELECT count(token_store.jwt_verify(token)) FROM bench.tok_hs256", expect=n), n)
        self.record("baseline.verify", self.timed(
            "SELECT count(baseline.jwt_verify(token)) FROM bench.tok_hs256", expect=n), n)
        self.q("SET token_store.require_stored = off")
        self.record("ts.valid_denylist.HS256", self.timed(
            "SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) FROM bench.tok_hs256",
            expect=n), n)
        self.q("RESET token_store.require_stored")
        self.record("baseline.valid_denylist", self.timed(
            "SELECT count(*) FILTER (WHERE baseline.jwt_valid(token, false)) FROM bench.tok_hs256",
            expect=n), n)
        if self.args.profile:
            self.profile()

    def profile(self):
        """perf record on this backend while it verifies the stored HS256 tokens."""
        n = self.args.n
        out_data = ROOT / "target" / "bench-perf.data"
        pid = self.backend_pid()
        log(f"profile: perf record -p {pid} during 2 x {n} jwt_valid")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000",
                                 "--call-graph", "dwarf,16384", "-p", str(pid),
                                 "-o", str(out_data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        for _ in range(2):
            self.timed("SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) "
                       "FROM bench.tok_hs256", expect=n)
        perf.send_signal(signal.SIGINT)
        perf.wait()
        tables = {}
        for mode in ("--children", "--no-children"):
            rep = subprocess.run(["perf", "report", "-i", str(out_data), mode, "--stdio",
                                  "--percent-limit", "0.5", "-g", "none", "--sort", "symbol"],
                                 capture_output=True, text=True)
            rows = []
            for line in rep.stdout.splitlines():
                mt = re.match(r"\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[[.k]\] (.+?)\s*(?:-\s+-\s*)?$", line)
                if mt and not mt.group(3).startswith("0x0000"):
                    rows.append((float(mt.group(1)), mt.group(3).strip()))
            tables[mode] = rows
        inclusive = {}
        for pct, sym in tables["--children"]:
            inclusive.setdefault(sym, pct)

        def incl(*names):
            return max((inclusive.get(nm, 0.0) for nm in names), default=0.0)
        parts = [
            ("token_store.jwt_valid (the whole call)", incl("jwt_valid_wrapper")),
            ("  engine::tokens::verify", incl("token_store::engine::tokens::verify")),
            ("    token + subject probes (engine::tokens::token_status)",
             incl("token_store::engine::tokens::token_status")),
            ("    issuer lookup by iss (engine::issuers::rules_for)", incl("token_store::engine::issuers::rules_for")),
            ("    key row for the kid (engine::tokens::candidates)", incl("token_store::engine::tokens::candidates")),
            ("    relations opened and locked, all probes (storage::probe::open)",
             incl("token_store::storage::probe::open")),
            ("    btree descents, all probes (_bt_first)", incl("_bt_first")),
            ("    one-pass parse (token_store_core::jws::parse)", incl("token_store_core::jws::parse")),
            ("    signature check (LoadedKey::verify)", incl("token_store_core::keys::LoadedKey::verify")),
            ("    token identity hash (jws::token_hash)", incl("token_store_core::jws::token_hash")),
        ]
        lines = ["# HS256 stored verify: token_store.jwt_valid over the stored tokens, one backend,",
                 "# perf record -e cpu-clock --call-graph dwarf (scripts/bench.sh --profile)", "",
                 "## where the time goes (inclusive share of the backend's samples)"]
        lines += [f"{pct:6.1f}%  {name}" for name, pct in parts]
        lines += ["", "## hottest functions, self time"]
        lines += [f"{pct:6.2f}%  {sym}" for pct, sym in tables["--no-children"][:30]]
        lines += ["", "## inclusive time (children)"]
        lines += [f"{pct:6.2f}%  {sym}" for pct, sym in tables["--children"][:70]]
        (BENCH / "profile.txt").write_text("\n".join(lines) + "\n")
        self.results["profile"] = {name.strip(): pct for name, pct in parts}
        log("  wrote bench/profile.txt")

    def asym(self):
        n = self.args.n_asym
        for alg in ASYM:
            log(f"{alg}: store and verify {n} tokens")
            self.settle()
            self.record(f"ts.store.{alg}", self.timed(
                f"SELECT count(DISTINCT token_store.jwt_store(token)) FROM {table_of(alg)}",
                expect=n, what=f"jwt_store {alg}"), n)
        self.settle("token_store.tokens")
        runs = {alg: [] for alg in ASYM}
        crate = {alg: [] for alg in ASYM}
        for _ in range(3):
            for alg in ASYM:
                crate[alg].append(self.floor_verify(alg))
                runs[alg].append(self.timed(
                    f"SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) "
                    f"FROM {table_of(alg)}", expect=n, what=f"jwt_valid {alg}"))
        for alg in ASYM:
            self.record(f"ts.valid.{alg}", runs[alg], n)
            self.record(f"floor.crate_decode.{alg}", crate[alg], n)

    def issuer(self):
        """Issue 21: a registered issuer's RS256 token with a known kid against a stored token of
        our own RS256 key, jwt_valid in batch, 3 interleaved rounds. The issuer's JWKS is served
        by a thread on 127.0.0.1 (plain http, allowed for that host by the settings set here)."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        n = self.args.n_asym
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        pub.update({"kid": "bench-idp-1", "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": [pub]}).encode()

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            self.q("ALTER SYSTEM SET token_store.issuer_allow_http = on")
            self.q("ALTER SYSTEM SET token_store.issuer_allowed_hosts = '127.0.0.1'")
            self.q("SELECT pg_reload_conf()")
            time.sleep(1)
            iss = "https://bench-idp.example"
            uri = f"http://127.0.0.1:{server.server_address[1]}/jwks"
            row = self.one("SELECT token_store.issuer_add(%s, %s)", (iss, uri))
            assert row["key_count"] == 1, row
            log(f"issuer: {n} RS256 tokens of a registered issuer")
            now = int(time.time())
            self.q("CREATE TABLE bench.issuer_rs256 (token text NOT NULL)")
            with self.conn.cursor().copy("COPY bench.issuer_rs256 (token) FROM STDIN") as cp:
                for i in range(n):
                    cp.write_row((jwt.encode({"iss": iss, "sub": f"idp-user-{i}", "iat": now,
                                              "exp": now + 86400, "jti": uuid.uuid4().hex}, key,
                                             algorithm="RS256", headers={"kid": "bench-idp-1"}),))
            self.settle("bench.issuer_rs256", table_of("RS256"))
            ours, theirs = [], []
            for _ in range(3):
                ours.append(self.timed(
                    f"SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) FROM {table_of('RS256')}",
                    expect=n, what="jwt_valid RS256 (own key)"))
                theirs.append(self.timed(
                    "SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) FROM bench.issuer_rs256",
                    expect=n, what="jwt_valid RS256 (issuer)"))
            self.record("ts.valid.issuer.RS256", theirs, n)
            self.record("ts.valid.own.RS256", ours, n)
        finally:
            server.shutdown()

    def signatures(self):
        """token_store_core's signature check per key type (bench/floor `signatures`: a fresh key,
        CPU time per check, key set-up excluded) against `openssl speed`'s verify column for the
        same key type (CPU time too, its default), interleaved in 3 rounds; PS256 is set against
        OpenSSL's RSA-2048 verify, which is PKCS#1 v1.5 (the RSA operation is the same)."""
        a = self.args
        version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
        self.results["config"]["openssl_version"] = version
        log(f"signatures: token_store_core against {version} (openssl speed -seconds {a.openssl_seconds})")
        kinds = {"rsa 2048 bits": "rsa2048", "256 bits ecdsa (nistp256)": "ecdsap256",
                 "384 bits ecdsa (nistp384)": "ecdsap384", "253 bits EdDSA (Ed25519)": "ed25519"}
        of_alg = {"RS256": "rsa2048", "PS256": "rsa2048", "ES256": "ecdsap256",
                  "ES384": "ecdsap384", "EdDSA": "ed25519"}
        ours, theirs = {}, {}
        for _ in range(3):
            out = subprocess.run([a.floor_bin, "-", "signatures", str(a.openssl_seconds)],
                                 check=True, capture_output=True, text=True)
            for alg, r in json.loads(out.stdout).items():
                ours.setdefault(alg, []).append(r["cpu_us"])
            out = subprocess.run(["openssl", "speed", "-seconds", str(a.openssl_seconds),
                                  *kinds.values()], check=True, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                for label, kind in kinds.items():
                    if line.strip().startswith(label):
                        # "<label> <sign s> <verify s> <sign/s> <verify/s>"
                        verify_per_s = float(line.split()[-1])
                        theirs.setdefault(kind, []).append(1e6 / verify_per_s)
        res = self.m["signatures"] = {}
        for alg, us in ours.items():
            row = {"token_store_us": median(us), "runs_us": us}
            kind = of_alg.get(alg)
            if kind:
                row.update({"openssl": kind, "openssl_us": median(theirs[kind]),
                            "openssl_runs_us": theirs[kind],
                            "ratio_to_openssl": median([o / t for o, t in zip(us, theirs[kind])])})
            res[alg] = row
            log(f"  {alg:<6} {row['token_store_us']:8.2f} us"
                + (f"   openssl {kind} {row['openssl_us']:8.2f} us, ratio {row['ratio_to_openssl']:.2f}"
                   if kind else ""))

    def run_pgbench(self, script: str, clients: int, define: str | list[str]) -> float:
        """One pgbench -M prepared run of bench/pgbench/<script> for pgbench_seconds; its TPS."""
        a = self.args
        defines = [define] if isinstance(define, str) else define
        cmd = [str(Path(a.pgbin) / "pgbench"), "-n", "-M", "prepared",
               "-c", str(clients), "-j", str(clients), "-T", str(a.pgbench_seconds),
               *[x for d in defines for x in ("-D", d)], "-f", str(BENCH / "pgbench" / script),
               "-h", a.host, "-p", str(a.port), "-U", "postgres", a.dbname]
        out = subprocess.run(cmd, capture_output=True, text=True)
        failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
        if out.returncode != 0 or (failed and int(failed.group(1))):
            raise SystemExit(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
        return float(re.search(r"tps = ([\d.]+) \(without initial", out.stdout).group(1))

    def pgbench(self):
        """Each script runs `rounds` times for `seconds`, the scripts interleaved, so that load
        from elsewhere on the machine hits all of them alike; a ratio is taken within each round
        (runs seconds apart) and the median of the rounds' ratios is reported."""
        a = self.args
        log(f"pgbench: {a.pgbench_rounds} interleaved rounds of {a.pgbench_seconds} s per script, "
            "-M prepared, scripts in bench/pgbench/")
        scripts = {"select1": "select1.sql", "ts": "jwt_valid.sql", "baseline": "baseline_valid.sql"}
        res = self.m["pgbench"] = {}
        for clients in (1, 2):
            runs = {name: [] for name in scripts}
            for _ in range(a.pgbench_rounds):
                for name, script in scripts.items():
                    runs[name].append(self.run_pgbench(script, clients, f"ntok={a.n // 2}"))
            for name, tps in runs.items():
                res[f"{name}.c{clients}"] = {
                    "tps": median(tps), "runs_tps": tps, "clients": clients,
                    "seconds": a.pgbench_seconds, "rounds": a.pgbench_rounds,
                    "ratio_to_select1": median([t / s for t, s in zip(tps, runs["select1"])])}
                log(f"  {name:<9} clients={clients}  tps median {median(tps):9.0f}  "
                    f"runs {[round(t) for t in tps]}")

    def per_request(self):
        """One statement per round trip with one fixed stored token, as an app verifies once per
        HTTP request: pgbench -M prepared (the token a bind parameter), 1 and 2 clients, against
        the same round trip doing `length(token)`, the PL/pgSQL baseline, and Redis 7 `EXISTS` on
        a private redis-server (redis-benchmark, no pipelining). Rounds interleaved as in pgbench()."""
        a = self.args
        token = self.tokens["HS256"][0]
        assert self.one("SELECT token_store.jwt_valid(%s)", (token,)) is True
        # the deny-list lookup's key: an HS256 token's identity is the SHA-256 of its text
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        assert self.one("SELECT count(*) FROM token_store.tokens WHERE token_hash = %s",
                        (bytes.fromhex(token_hash),)) == 1
        defines = [f"token={token}", f"hash=\\x{token_hash}"]
        scripts = {"select1": "request_select1.sql", "length": "request_length.sql",
                   "denylist": "request_denylist.sql", "jwt_valid": "request_jwt_valid.sql",
                   "jwt_verify": "request_jwt_verify.sql", "baseline": "request_baseline.sql"}
        log(f"per request: {a.pgbench_rounds} interleaved rounds of {a.pgbench_seconds} s, "
            f"-M prepared, one stored token; Redis EXISTS on port {a.redis_port}")
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(a.redis_port),
                                  "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(a.redis_port)]
            for _ in range(100):
                if subprocess.run(cli + ["PING"], capture_output=True, text=True).stdout.strip() == "PONG":
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("redis-server did not answer PING")
            subprocess.run(cli + ["SET", "k", token], check=True, capture_output=True)
            version = subprocess.run(cli + ["INFO", "server"], capture_output=True, text=True).stdout
            self.results["config"]["redis_version"] = re.search(r"redis_version:(\S+)", version).group(1)
            res = self.m["per_request"] = {}
            for clients in (1, 2):
                runs = {name: [] for name in list(scripts) + ["redis_exists"]}
                for _ in range(a.pgbench_rounds):
                    for name, script in scripts.items():
                        runs[name].append(self.run_pgbench(script, clients, defines))
                    # about as many requests as the pgbench runs make in their seconds
                    n_req = max(20_000, int(median(runs["length"]) * a.pgbench_seconds))
                    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(a.redis_port),
                                          "-c", str(clients), "--threads", str(clients),
                                          "-n", str(n_req), "-P", "1", "--csv",
                                          "EXISTS", "k"], capture_output=True, text=True)
                    rows = [r for r in out.stdout.splitlines() if r.startswith('"EXISTS')]
                    if out.returncode != 0 or not rows:
                        raise SystemExit(f"redis-benchmark failed:\n{out.stdout}\n{out.stderr}")
                    runs["redis_exists"].append(float(rows[-1].split(",")[1].strip('"')))
                for name, tps in runs.items():
                    res[f"{name}.c{clients}"] = {
                        "tps": median(tps), "runs_tps": tps, "clients": clients,
                        "ratio_to_length": median([t / r for t, r in zip(tps, runs["length"])]),
                        "ratio_to_denylist": median([t / r for t, r in zip(tps, runs["denylist"])]),
                        "ratio_to_redis": median([t / r for t, r in zip(tps, runs["redis_exists"])])}
                    log(f"  {name:<12} clients={clients}  per second, median {median(tps):9.0f}  "
                        f"runs {[round(t) for t in tps]}")
        finally:
            redis.terminate()
            redis.wait(timeout=30)

    def sessions(self):
        """session_refresh per round trip (pgbench -M prepared, 1 and 2 clients, each client
        rotating its own session's refresh token) beside jwt_issue and the floor: the rows a
        refresh writes, by plain SQL into same-shape tables (bench/pgbench/session_*.sql)."""
        a = self.args
        log(f"sessions: {a.pgbench_rounds} interleaved rounds of {a.pgbench_seconds} s, -M prepared")
        self.q("CREATE TABLE bench.sess (client int PRIMARY KEY, sid uuid NOT NULL, rt text NOT NULL)")
        for client in range(2):
            login = self.one("SELECT token_store.session_start(%s::jsonb)",
                             (json.dumps({"sub": "bench-session-user", "role": "reader"}),))
            self.q("INSERT INTO bench.sess VALUES (%s, %s, %s)",
                   (client, login["session_id"], login["refresh_token"]))
        # the floor keeps its own "refresh token" per client: bench.sess holds the real ones
        self.q("CREATE TABLE bench.f_sess (LIKE bench.sess INCLUDING ALL)")
        self.q("INSERT INTO bench.f_sess SELECT * FROM bench.sess")
        self.q("CREATE TABLE bench.f_sessions (LIKE token_store.sessions INCLUDING ALL)")
        self.q("INSERT INTO bench.f_sessions SELECT * FROM token_store.sessions")
        self.q("CREATE TABLE bench.f_refresh (LIKE token_store.refresh_tokens INCLUDING ALL)")
        self.q("INSERT INTO bench.f_refresh SELECT * FROM token_store.refresh_tokens")
        self.q("CREATE TABLE bench.f_tokens (LIKE token_store.tokens INCLUDING ALL)")
        self.q("VACUUM ANALYZE bench.sess, bench.f_sess, bench.f_sessions, bench.f_refresh, bench.f_tokens")
        scripts = {"refresh": "session_refresh.sql", "issue": "session_issue.sql", "floor": "session_floor.sql"}
        res = self.m["sessions"] = {}
        for clients in (1, 2):
            runs = {name: [] for name in scripts}
            for _ in range(a.pgbench_rounds):
                for name, script in scripts.items():
                    runs[name].append(self.run_pgbench(script, clients, "unused=0"))
            for name, tps in runs.items():
                res[f"{name}.c{clients}"] = {
                    "tps": median(tps), "runs_tps": tps, "clients": clients,
                    "ratio_to_floor": median([t / f for t, f in zip(tps, runs["floor"])])}
                log(f"  {name:<8} clients={clients}  tps median {median(tps):9.0f}  "
                    f"runs {[round(t) for t in tps]}")
        # every rotation was a valid one: no session ended on the way
        assert self.one("SELECT count(*) FROM token_store.sessions WHERE ended_at IS NOT NULL") == 0

    def dpop(self):
        """jwt_verify_dpop per request (pgbench -M prepared, 1 and 2 clients): a DPoP-bound token
        and a fresh ES256 proof per request (made here with PyJWT, every one used once, the next
        one taken by a sequence), against jwt_verify of a bearer token on the same round trip and
        against a plain INSERT ... ON CONFLICT DO NOTHING of the same replay-cache row
        (bench/pgbench/dpop_*.sql). Issue 23's target: within 1.5x of that insert."""
        a = self.args
        htu = "https://api.example.com/v1/orders"
        key = ec.generate_private_key(ec.SECP256R1())
        nums = key.public_key().public_numbers()
        b64 = lambda n: jwt.utils.base64url_encode(n.to_bytes(32, "big")).decode()
        pub = {"crv": "P-256", "kty": "EC", "x": b64(nums.x), "y": b64(nums.y)}
        canon = json.dumps(pub, separators=(",", ":"), sort_keys=True).encode()
        jkt = jwt.utils.base64url_encode(hashlib.sha256(canon).digest()).decode()
        # proofs stay acceptable for the whole stage: they are all made now
        self.q(f"ALTER DATABASE {a.dbname} SET token_store.dpop_max_age = '1h'")
        self.q("SET token_store.dpop_max_age = '1h'")  # this connection predates the line above
        token = self.one("SELECT token_store.jwt_issue(%s::jsonb, '1 day')",
                         (json.dumps({"sub": "bench-dpop-user", "cnf": {"jkt": jkt}}),))
        plain = self.one("SELECT token_store.jwt_issue(%s::jsonb, '1 day')",
                         (json.dumps({"sub": "bench-dpop-user"}),))
        ath = jwt.utils.base64url_encode(hashlib.sha256(token.encode()).digest()).decode()
        n = a.dpop_proofs
        log(f"dpop: making {n} ES256 proofs")
        now = int(time.time())
        self.q("CREATE TABLE bench.dpop_in (i bigint PRIMARY KEY, jkt bytea NOT NULL, jti text NOT NULL, "
               "proof text NOT NULL)")
        raw_jkt = hashlib.sha256(canon).digest()
        with self.conn.cursor().copy("COPY bench.dpop_in (i, jkt, jti, proof) FROM STDIN") as cp:
            for i in range(1, n + 1):
                jti = uuid.uuid4().hex
                p = jwt.encode({"jti": jti, "htm": "GET", "htu": htu, "iat": now, "ath": ath}, key,
                               algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": pub})
                cp.write_row((i, raw_jkt, jti, p))
        first = self.one("SELECT proof FROM bench.dpop_in WHERE i = 1")
        claims = self.one("SELECT token_store.jwt_verify_dpop(%s, %s, 'GET', %s)", (token, first, htu))
        assert claims["cnf"]["jkt"] == jkt
        for seq in ("verify", "plain", "insert"):
            self.q(f"CREATE SEQUENCE bench.dpop_seq_{seq} START 2")
        self.q("CREATE TABLE bench.f_dpop (LIKE token_store.dpop_proofs INCLUDING ALL)")
        self.q("VACUUM ANALYZE bench.dpop_in, bench.f_dpop")
        scripts = {"jwt_verify_dpop": "dpop_verify.sql", "jwt_verify": "dpop_jwt_verify.sql",
                   "insert": "dpop_insert.sql"}
        log(f"dpop: {a.pgbench_rounds} interleaved rounds of {a.pgbench_seconds} s, -M prepared")
        res = self.m["dpop"] = {}
        for clients in (1, 2):
            runs = {name: [] for name in scripts}
            for _ in range(a.pgbench_rounds):
                for name, script in scripts.items():
                    runs[name].append(self.run_pgbench(script, clients, [f"token={token}", f"plain={plain}"]))
            for name, tps in runs.items():
                res[f"{name}.c{clients}"] = {
                    "tps": median(tps), "runs_tps": tps, "clients": clients,
                    "ratio_to_insert": median([t / f for t, f in zip(tps, runs["insert"])])}
                log(f"  {name:<16} clients={clients}  tps median {median(tps):9.0f}  "
                    f"runs {[round(t) for t in tps]}")
        used = self.one("SELECT last_value FROM bench.dpop_seq_verify")
        assert used < n, f"the proofs ran out ({used} of {n}): raise --dpop-proofs"
        assert self.one("SELECT count(*) FROM token_store.dpop_proofs") == used

    def memory(self):
        a = self.args
        calls = a.mem_calls
        passes = max(1, calls // a.n)
        log(f"memory: RSS of one backend over {passes * a.n} jwt_valid calls in one statement")
        with self.connect() as c:
            pid = self.backend_pid(c)
            sql = ("SELECT count(*) FILTER (WHERE token_store.jwt_valid(t.token)) "
                   "FROM generate_series(1, %s) g, bench.tok_hs256 t")
            # warm-up: a full pass touches every page and fills the per-backend caches
            c.execute(sql, (1,)).fetchone()
            before = proc_status(pid)
            peak = dict(before)
            stop = threading.Event()

            def sample():
                while not stop.wait(0.1):
                    s = proc_status(pid)
                    for k in s:
                        peak[k] = max(peak[k], s[k])
            th = threading.Thread(target=sample)
            th.start()
            t = time.perf_counter()
            got = c.execute(sql, (passes,)).fetchone()[0]
            took = time.perf_counter() - t
            stop.set()
            th.join()
            after = proc_status(pid)
            if got != passes * a.n:
                raise SystemExit(f"memory: {got} of {passes * a.n} calls returned true")
        self.m["memory"] = {"calls": passes * a.n, "pid": pid, "before_kb": before,
                            "after_kb": after, "peak_kb": peak, "s": took}
        log(f"  VmRSS {before['VmRSS']} -> {after['VmRSS']} kB (peak {peak['VmRSS']}), "
            f"RssAnon {before['RssAnon']} -> {after['RssAnon']} kB, {took:.1f} s")

    def issue(self):
        a = self.args
        claims = ("jsonb_build_object('sub', 'user-' || i, 'iss', 'https://auth.example.com', "
                  "'role', 'reader', 'scope', 'read write')")
        log(f"issue: {a.n_issue} HS256 ({a.write_rounds} interleaved rounds), "
            f"{a.n_issue_asym} of each asymmetric alg")
        ts, base = [], []
        for _ in range(a.write_rounds):
            self.settle()
            ts.append(self.timed(
                f"SELECT count(DISTINCT token_store.jwt_issue({claims}, '1 hour', 'bench-hs256')) "
                "FROM generate_series(1, %s) i", (a.n_issue,), expect=a.n_issue))
            self.settle()
            base.append(self.timed(
                f"SELECT count(DISTINCT baseline.jwt_issue({claims}, '1 hour', 'bench-hs256')) "
                "FROM generate_series(1, %s) i", (a.n_issue,), expect=a.n_issue))
        self.record("ts.issue.HS256", ts, a.n_issue)
        self.record("baseline.issue", base, a.n_issue)
        for alg in ASYM:
            self.settle()
            self.record(f"ts.issue.{alg}", self.timed(
                f"SELECT count(DISTINCT token_store.jwt_issue({claims}, '1 hour', %s)) "
                "FROM generate_series(1, %s) i", (kid_of(alg), a.n_issue_asym),
                expect=a.n_issue_asym), a.n_issue_asym)
        # the issued tokens verify
        tok = self.one(f"SELECT token_store.jwt_issue({claims}) FROM (SELECT 1 AS i) x")
        assert self.one("SELECT token_store.jwt_valid(%s)", (tok,))

    def revoke(self):
        n = self.args.n
        half = n // 2
        rounds = self.args.write_rounds
        size = (n - half) // rounds
        log(f"revoke: tokens {half + 1}..{n} in {rounds} interleaved slices of {size} "
            "(the first half stays valid for the latency probe)")
        self.settle("token_store.tokens", "baseline.tokens")
        ts, base = [], []
        for r in range(rounds):
            lo, hi = half + r * size, half + (r + 1) * size
            self.settle()
            ts.append(self.timed(
                "SELECT count(*) FILTER (WHERE token_store.jwt_revoke(token, 'bench')) "
                "FROM bench.tok_hs256 WHERE id > %s AND id <= %s", (lo, hi), expect=size))
            self.settle()
            base.append(self.timed(
                "SELECT count(*) FILTER (WHERE baseline.jwt_revoke(token, 'bench')) "
                "FROM bench.tok_hs256 WHERE id > %s AND id <= %s", (lo, hi), expect=size))
        self.record("ts.revoke.HS256", ts, size)
        self.record("baseline.revoke", base, size)
        # revoked tokens no longer verify, the others still do
        for fn in ("token_store.jwt_valid", "baseline.jwt_valid"):
            assert self.one(f"SELECT count(*) FILTER (WHERE {fn}(token)) FROM bench.tok_hs256 "
                            "WHERE id > %s - 1000 AND id <= %s", (half, half + rounds * size)) == 1000

    def purge(self):
        a = self.args
        rows = a.purge_rows
        log(f"purge: loading {rows} expired rows into token_store.tokens and a same-shape table")
        self.q("SELECT token_store.purge()")  # what earlier stages left to expire: not counted
        self.q("CREATE TABLE bench.expired_src (LIKE token_store.tokens)")
        fp = self.one("SELECT key_fingerprint FROM token_store.tokens LIMIT 1")
        plen = int(self.one("SELECT avg(octet_length(payload)) FROM token_store.tokens"))
        self.q("""
            INSERT INTO bench.expired_src (id, token_hash, jti, subject, issuer, kid, issued_at,
                                           expires_at, payload, key_fingerprint, created_at)
            SELECT gen_random_uuid(), sha256(convert_to('expired-' || i, 'UTF8')),
                   gen_random_uuid()::text, 'user-' || (i %% 100000), 'https://auth.example.com',
                   'bench-hs256', now() - interval '2 hours',
                   now() - interval '2 hours' + i * interval '1 hour' / %s,
                   gen_random_bytes(%s), %s, now() - interval '2 hours'
              FROM generate_series(1, %s) i""", (rows, plen, fp, rows))
        self.q("CREATE TABLE bench.purge_bare (LIKE token_store.tokens INCLUDING ALL)")
        self.q("INSERT INTO bench.purge_bare SELECT * FROM token_store.tokens")
        self.q("INSERT INTO bench.purge_bare SELECT * FROM bench.expired_src")
        self.q("INSERT INTO token_store.tokens SELECT * FROM bench.expired_src")
        self.q("DROP TABLE bench.expired_src")
        live = self.one("SELECT count(*) FROM token_store.tokens WHERE expires_at >= now()")
        self.settle("token_store.tokens", "bench.purge_bare")
        probe_tokens = self.tokens["HS256"][: a.n // 2]
        log(f"  idle verify latency ({a.latency_seconds} s)")
        idle = Sampler(self.dsn, probe_tokens)
        idle.start()
        time.sleep(a.latency_seconds)
        idle.stop()
        res = {"rows": rows, "live_rows": live, "idle": idle.summary()}

        def run_with_sampler(sql):
            s = Sampler(self.dsn, probe_tokens)
            s.start()
            time.sleep(0.5)
            c0, t = self.backend_cpu(), time.perf_counter()
            got = self.one(sql)
            t1 = time.perf_counter()
            cpu = self.backend_cpu() - c0
            time.sleep(0.2)
            s.stop()
            return got, t1 - t, cpu, s.summary(t, t1)

        got, took, cpu, lat = run_with_sampler(
            "WITH d AS (DELETE FROM bench.purge_bare WHERE expires_at < now() RETURNING 1) "
            "SELECT count(*) FROM d")
        if got != rows:
            raise SystemExit(f"bare DELETE removed {got} rows, expected {rows}")
        res["bare_delete"] = {"s": took, "cpu_s": cpu, "rows_per_s": rows / took,
                              "rows_per_cpu_s": rows / cpu, "latency": lat}
        log(f"  bare DELETE        {took:7.2f} s  {rows / took:10.0f} rows/s  "
            f"verify p50/p99 {lat['p50_us']:.0f}/{lat['p99_us']:.0f} us")
        self.q("CHECKPOINT")
        got, took, cpu, lat = run_with_sampler("SELECT token_store.purge()")
        if got != rows:
            raise SystemExit(f"token_store.purge() removed {got} rows, expected {rows}")
        res["purge"] = {"s": took, "cpu_s": cpu, "rows_per_s": rows / took,
                        "rows_per_cpu_s": rows / cpu, "latency": lat,
                        "batch_size": int(self.one("SHOW token_store.purge_batch_size"))}
        log(f"  token_store.purge  {took:7.2f} s  {rows / took:10.0f} rows/s  "
            f"verify p50/p99 {lat['p50_us']:.0f}/{lat['p99_us']:.0f} us")
        i = res["idle"]
        log(f"  idle verify p50/p99 {i['p50_us']:.0f}/{i['p99_us']:.0f} us ({i['calls']} calls)")
        self.m["purge"] = res

    # -- results ------------------------------------------------------------------------------

    def evaluate(self):
        m, f = self.m, self.floor_rust
        n = self.args.n
        tg = self.results["targets"]
        fl = {}

        def crate(alg):
            # token_store_core's parse+verify+claims, timed right next to the SQL runs it is compared to
            return per(f"floor.crate_decode.{alg}")

        per = lambda k: m[k]["cpu_s"] / m[k]["n"]  # noqa: E731  CPU seconds per operation
        sha = f["sha256"]["cpu_s"] / f["sha256"]["n"]
        aes = f["aes_gcm_seal"]["cpu_s"] / f["aes_gcm_seal"]["n"]
        fl["verify.HS256"] = crate("HS256") + sha + per("floor.probe")
        fl["store.HS256"] = crate("HS256") + sha + aes + per("floor.insert")
        for alg in ASYM:
            fl[f"verify.{alg}"] = crate(alg) + sha + per("floor.probe")
            fl[f"store.{alg}"] = crate(alg) + sha + aes + per("floor.insert")
        for alg in ALGS:
            fl[f"issue.{alg}"] = f[alg]["sign_cpu_s"] / f[alg]["n_sign"] + sha + aes + per("floor.insert")
        self.results["floor_us_per_op"] = {k: v * 1e6 for k, v in fl.items()}

        def target(name, ratio, limit, at_most=True, detail=""):
            met = ratio <= limit if at_most else ratio >= limit
            tg.append({"target": name, "ratio": ratio, "limit": limit,
                       "at_most": at_most, "met": met, "detail": detail})

        target("stored HS256 verify (jwt_valid) / baseline", per("ts.valid.HS256") / per("baseline.valid"),
               1 / 3, detail=f"{n} tokens, allow-list")
        target("stored HS256 verify (jwt_valid) / floor", per("ts.valid.HS256") / fl["verify.HS256"], 1.6,
               detail="floor = crate decode+verify + SHA-256 + index probe")
        target("jwt_store / baseline (raw AES)", per("ts.store.HS256") / per("baseline.store_aes"), 0.4,
               detail=f"{n} HS256 tokens into an empty table")
        target("jwt_store / floor", per("ts.store.HS256") / fl["store.HS256"], 2.0,
               detail="floor = bare INSERT + crate decode+verify + SHA-256 + AES-GCM")
        for alg in ASYM:
            target(f"{alg} verify / crate standalone", per(f"ts.valid.{alg}") / crate(alg), 1.3,
                   detail=f"{self.args.n_asym} tokens; crate = token_store_core parse+verify+claims")
        pg = m["pgbench"]
        for c in (1, 2):
            target(f"pgbench jwt_valid / SELECT 1 TPS, {c} client{'s' if c > 1 else ''}",
                   pg[f"ts.c{c}"]["ratio_to_select1"], 0.85, at_most=False,
                   detail=f"median of {self.args.pgbench_rounds} interleaved rounds of "
                          f"{self.args.pgbench_seconds} s")
        r = m["per_request"]
        detail = (f"per request, pgbench -M prepared, 2 clients, one stored token; median of "
                  f"{self.args.pgbench_rounds} interleaved rounds")
        target("per request: jwt_valid / SELECT length(token), 2 clients", r["jwt_valid.c2"]["ratio_to_length"],
               0.85, at_most=False, detail=detail)
        target("per request: jwt_valid / deny-list lookup, 2 clients", r["jwt_valid.c2"]["ratio_to_denylist"],
               0.9, at_most=False, detail=detail + "; lookup = SELECT revoked_at ... WHERE token_hash = $1")
        target("per request: jwt_valid / Redis EXISTS, 2 clients", r["jwt_valid.c2"]["ratio_to_redis"],
               1.5, at_most=False, detail=detail + f"; redis-benchmark -c 2 --threads 2, Redis {self.results['config'].get('redis_version')}")
        for alg, row in m["signatures"].items():
            if "ratio_to_openssl" in row:
                target(f"{alg} signature check / OpenSSL {row['openssl']} verify", row["ratio_to_openssl"], 1.5,
                       detail=f"CPU time per check, median of 3 interleaved rounds; "
                              f"{self.results['config'].get('openssl_version')}")
        target("issuer RS256 token (known kid) / own RS256 token, jwt_valid",
               per("ts.valid.issuer.RS256") / per("ts.valid.own.RS256"), 1.1,
               detail=f"{self.args.n_asym} tokens each, batch, 3 interleaved rounds; the own tokens are "
                      "stored (require_stored), the issuer's are not (they cannot be)")
        target("per request: jwt_verify / jwt_valid, 2 clients",
               r["jwt_verify.c2"]["tps"] / r["jwt_valid.c2"]["tps"], 0.9, at_most=False, detail=detail)
        target("stored HS256 verify without kid / floor", per("ts.valid_nokid.HS256") / fl["verify.HS256"], 1.6,
               detail=f"{n} tokens without a kid header, allow-list")
        target("stored HS256 verify without kid / with kid", per("ts.valid_nokid.HS256") / per("ts.valid.HS256"),
               1.1, detail="the same tokens' claims, signed by the same key")
        sess = m["sessions"]
        target("session_refresh / its floor TPS, 2 clients", sess["refresh.c2"]["ratio_to_floor"], 0.5,
               at_most=False, detail="pgbench -M prepared; floor = the same rows by plain SQL "
                                     "(bench/pgbench/session_floor.sql)")
        d = m["dpop"]
        target("plain INSERT of the replay row / jwt_verify_dpop TPS, 2 clients",
               1 / d["jwt_verify_dpop.c2"]["ratio_to_insert"], 1.5,
               detail="pgbench -M prepared, a fresh ES256 proof per request; jwt_verify_dpop / jwt_verify "
                      f"{d['jwt_verify_dpop.c2']['tps'] / d['jwt_verify.c2']['tps']:.2f} (bench/pgbench/dpop_*.sql)")
        p = m["purge"]
        target("purge() / bare DELETE rate", p["purge"]["rows_per_s"] / p["bare_delete"]["rows_per_s"],
               0.7, at_most=False,
               detail=f"{p['rows']} expired rows, rows per second; per CPU second: "
                      f"{p['purge']['rows_per_cpu_s'] / p['bare_delete']['rows_per_cpu_s']:.3f}")
        target("verify p99 during purge / idle", p["purge"]["latency"]["p99_us"] / p["idle"]["p99_us"],
               2.0, detail="jwt_valid on a second connection, timed client-side")
        mem = m["memory"]
        grow_kb = mem["after_kb"]["VmRSS"] - mem["before_kb"]["VmRSS"]
        target("backend VmRSS growth over 1M jwt_valid (MiB)", grow_kb / 1024, 1.0,
               detail=f"{mem['before_kb']['VmRSS'] / 1024:.1f} -> {mem['after_kb']['VmRSS'] / 1024:.1f} MiB; "
                      f"RssAnon {mem['before_kb']['RssAnon'] / 1024:.1f} -> {mem['after_kb']['RssAnon'] / 1024:.1f} MiB")

    def rows(self):
        """The comparison table: (job, n, token_store us, baseline us, floor us)."""
        m, fl = self.m, self.results["floor_us_per_op"]
        us = lambda k: m[k]["us_per_op"] if k in m else None  # noqa: E731
        n, na = self.args.n, self.args.n_asym
        out = [
            ("verify HS256, stored (jwt_valid)", n, us("ts.valid.HS256"), us("baseline.valid"), fl["verify.HS256"]),
            ("verify HS256, stored (jwt_verify)", n, us("ts.verify.HS256"), us("baseline.verify"), fl["verify.HS256"]),
            ("verify HS256 without kid (jwt_valid)", n, us("ts.valid_nokid.HS256"), None, fl["verify.HS256"]),
            ("verify HS256, deny-list (jwt_valid)", n, us("ts.valid_denylist.HS256"), us("baseline.valid_denylist"), fl["verify.HS256"]),
            ("store HS256 (jwt_store) vs raw AES", n, us("ts.store.HS256"), us("baseline.store_aes"), fl["store.HS256"]),
            (f"store HS256 vs pgp_sym_encrypt ({self.args.n_pgp})", n, us("ts.store.HS256"), us("baseline.store_pgp"), fl["store.HS256"]),
            ("revoke HS256 (jwt_revoke)", m["ts.revoke.HS256"]["n"], us("ts.revoke.HS256"), us("baseline.revoke"), None),
            ("issue HS256 (jwt_issue)", self.args.n_issue, us("ts.issue.HS256"), us("baseline.issue"), fl["issue.HS256"]),
        ]
        for alg in ASYM:
            out.append((f"verify {alg}, stored (jwt_valid)", na, us(f"ts.valid.{alg}"), None, fl[f"verify.{alg}"]))
            out.append((f"store {alg} (jwt_store)", na, us(f"ts.store.{alg}"), None, fl[f"store.{alg}"]))
            out.append((f"issue {alg} (jwt_issue)", self.args.n_issue_asym, us(f"ts.issue.{alg}"), None, fl[f"issue.{alg}"]))
        out.append(("verify RS256 of a registered issuer (jwt_valid)", na, us("ts.valid.issuer.RS256"),
                    None, fl["verify.RS256"]))
        out.append(("floor: bare INSERT (SQL)", n, None, None, us("floor.insert")))
        out.append(("floor: index probe (SQL)", n, None, None, us("floor.probe")))
        return out

    def table(self) -> str:
        lines = []
        hdr = f"{'job':<40} {'n':>7} {'token_store':>12} {'baseline':>10} {'floor':>9} {'ts/base':>8} {'ts/floor':>8}"
        lines.append("CPU time per operation, microseconds, of the backend (or of the floor program): "
                     "median of 3 interleaved runs (pgp store, asymmetric store/issue: 1 run)")
        lines.append(hdr)
        lines.append("-" * len(hdr))
        fmt = lambda v, w, p=2: (f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}}")  # noqa: E731
        for job, n, ts, base, fl in self.rows():
            r1 = ts / base if ts and base else None
            r2 = ts / fl if ts and fl else None
            lines.append(f"{job:<40} {n:>7} {fmt(ts, 12)} {fmt(base, 10)} {fmt(fl, 9)} "
                         f"{fmt(r1, 8)} {fmt(r2, 8)}")
        lines.append("")
        pg = self.m["pgbench"]
        a = self.args
        lines.append(f"pgbench -M prepared, median TPS of {a.pgbench_rounds} interleaved runs of "
                     f"{a.pgbench_seconds} s (each script: a random stored token by id, then the "
                     "statement); ratios: median of per-round ratios")
        lines.append(f"{'clients':<8} {'SELECT 1':>10} {'jwt_valid':>10} {'baseline':>10} "
                     f"{'ts/SELECT 1':>12} {'base/SELECT 1':>14}")
        for c in (1, 2):
            s, t, b = (pg[f"{k}.c{c}"] for k in ("select1", "ts", "baseline"))
            lines.append(f"{c:<8} {s['tps']:>10.0f} {t['tps']:>10.0f} {b['tps']:>10.0f} "
                         f"{t['ratio_to_select1']:>12.2f} {b['ratio_to_select1']:>14.2f}")
        lines.append("")
        r = self.m["per_request"]
        lines.append(f"per request: one statement per round trip, one stored HS256 token as the bind parameter, "
                     f"pgbench -M prepared; Redis {self.results['config'].get('redis_version')} EXISTS by "
                     f"redis-benchmark (no pipelining); median per second of {a.pgbench_rounds} interleaved runs")
        lines.append(f"{'clients':<8} {'SELECT 1':>10} {'length()':>10} {'deny-list':>10} {'jwt_valid':>10} "
                     f"{'jwt_verify':>10} {'baseline':>10} {'Redis':>10} {'valid/len':>10} "
                     f"{'valid/deny':>10} {'valid/Redis':>12}")
        for c in (1, 2):
            v = {k: r[f"{k}.c{c}"] for k in ("select1", "length", "denylist", "jwt_valid", "jwt_verify",
                                              "baseline", "redis_exists")}
            lines.append(f"{c:<8} {v['select1']['tps']:>10.0f} {v['length']['tps']:>10.0f} "
                         f"{v['denylist']['tps']:>10.0f} {v['jwt_valid']['tps']:>10.0f} "
                         f"{v['jwt_verify']['tps']:>10.0f} {v['baseline']['tps']:>10.0f} "
                         f"{v['redis_exists']['tps']:>10.0f} {v['jwt_valid']['ratio_to_length']:>10.2f} "
                         f"{v['jwt_valid']['ratio_to_denylist']:>10.2f} {v['jwt_valid']['ratio_to_redis']:>12.2f}")
        lines.append("")
        lines.append(f"signature checks, CPU microseconds each: token_store_core (bench/floor) and "
                     f"`openssl speed` verify, {self.results['config'].get('openssl_version')}; "
                     "median of 3 interleaved rounds")
        lines.append(f"{'alg':<8} {'token_store':>12} {'OpenSSL':>10} {'key type':>10} {'ts/OpenSSL':>11}")
        for alg, row in self.m["signatures"].items():
            if "openssl_us" in row:
                lines.append(f"{alg:<8} {row['token_store_us']:>12.2f} {row['openssl_us']:>10.2f} "
                             f"{row['openssl']:>10} {row['ratio_to_openssl']:>11.2f}")
            else:
                lines.append(f"{alg:<8} {row['token_store_us']:>12.2f} {'-':>10} {'-':>10} {'-':>11}")
        lines.append("")
        se = self.m["sessions"]
        lines.append("sessions: one statement per round trip, pgbench -M prepared, median TPS; floor = the rows a "
                     "refresh writes, by plain SQL")
        lines.append(f"{'clients':<8} {'session_refresh':>16} {'jwt_issue':>10} {'floor':>10} {'refresh/floor':>14}")
        for c in (1, 2):
            lines.append(f"{c:<8} {se[f'refresh.c{c}']['tps']:>16.0f} {se[f'issue.c{c}']['tps']:>10.0f} "
                         f"{se[f'floor.c{c}']['tps']:>10.0f} {se[f'refresh.c{c}']['ratio_to_floor']:>14.2f}")
        lines.append("")
        d = self.m["dpop"]
        lines.append("DPoP: one statement per round trip, pgbench -M prepared, median TPS; a fresh ES256 proof per "
                     "request; insert = the replay row by plain INSERT ... ON CONFLICT")
        lines.append(f"{'clients':<8} {'jwt_verify_dpop':>16} {'jwt_verify':>10} {'insert':>10} {'insert/dpop':>12}")
        for c in (1, 2):
            lines.append(f"{c:<8} {d[f'jwt_verify_dpop.c{c}']['tps']:>16.0f} {d[f'jwt_verify.c{c}']['tps']:>10.0f} "
                         f"{d[f'insert.c{c}']['tps']:>10.0f} {1 / d[f'jwt_verify_dpop.c{c}']['ratio_to_insert']:>12.2f}")
        lines.append("")
        p = self.m["purge"]
        lines.append(f"purge of {p['rows']} expired rows ({p['live_rows']} live rows stay), "
                     "jwt_valid latency on a second connection (client-side, us)")
        lines.append(f"{'':<26} {'seconds':>8} {'rows/s':>10} {'p50':>7} {'p99':>7} {'calls':>7}")
        i = p["idle"]
        lines.append(f"{'idle':<26} {'':>8} {'':>10} {i['p50_us']:>7.0f} {i['p99_us']:>7.0f} {i['calls']:>7}")
        for k, label in (("bare_delete", "bare DELETE"), ("purge", "token_store.purge()")):
            r = p[k]
            lines.append(f"{label:<26} {r['s']:>8.2f} {r['rows_per_s']:>10.0f} "
                         f"{r['latency']['p50_us']:>7.0f} {r['latency']['p99_us']:>7.0f} {r['latency']['calls']:>7}")
        lines.append("")
        mem = self.m["memory"]
        lines.append(f"memory: {mem['calls']} jwt_valid calls in one statement: VmRSS "
                     f"{mem['before_kb']['VmRSS']} -> {mem['after_kb']['VmRSS']} kB (peak "
                     f"{mem['peak_kb']['VmRSS']}), RssAnon {mem['before_kb']['RssAnon']} -> "
                     f"{mem['after_kb']['RssAnon']} kB")
        lines.append("")
        load = self.results["environment"].get("loadavg_1min_at_stage_start", {})
        lines.append(f"machine: {self.results['environment']['cpus']} CPUs; 1-min load average at "
                     "stage starts: " + ", ".join(f"{k} {v:.1f}" for k, v in load.items()))
        lines.append("")
        lines.append("targets")
        for t in self.results["targets"]:
            op = "<=" if t["at_most"] else ">="
            lines.append(f"  [{'MET' if t['met'] else 'NOT MET':>7}] {t['target']:<48} "
                         f"{t['ratio']:7.3f} (target {op} {t['limit']:.3g})  {t['detail']}")
        return "\n".join(lines)

    def chart(self, path: Path):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.rcParams["svg.hashsalt"] = "token_store-bench"
        rows = [r for r in self.rows() if r[2] is not None]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 11.5),
                                       gridspec_kw={"height_ratios": [len(rows), 11]})
        labels = [r[0] for r in rows]
        y = list(range(len(rows)))
        h = 0.27
        series = (("token_store", 2, "#1f77b4"), ("baseline (PL/pgSQL + pgcrypto)", 3, "#ff7f0e"),
                  ("floor (Rust crates + bare SQL)", 4, "#7f7f7f"))
        for k, (name, col, color) in enumerate(series):
            xs = [(i + (k - 1) * h, r[col]) for i, r in zip(y, rows) if r[col]]
            ax1.barh([p for p, _ in xs], [v for _, v in xs], height=h, label=name, color=color)
        ax1.set_xscale("log")
        ax1.set_yticks(y, labels, fontsize=8)
        ax1.invert_yaxis()
        ax1.set_xlabel("CPU microseconds per operation (log scale; shorter is faster)")
        ax1.legend(loc="lower right", fontsize=8)
        ax1.grid(axis="x", which="both", alpha=0.3)
        ax1.set_title("token_store benchmark: time per operation")
        tg = self.results["targets"]
        norm = [(t["ratio"] / t["limit"]) if t["at_most"] else (t["limit"] / t["ratio"] if t["ratio"] else 9)
                for t in tg]
        ax2.barh(range(len(tg)), norm, color=["#2ca02c" if t["met"] else "#d62728" for t in tg])
        ax2.axvline(1.0, color="black", lw=1)
        ax2.set_yticks(range(len(tg)), [f"{t['target']}  ({t['ratio']:.2f}, "
                                        f"{'≤' if t['at_most'] else '≥'} {t['limit']:.2g})"
                                        for t in tg], fontsize=8)
        ax2.invert_yaxis()
        ax2.set_xlabel("measured ÷ target (left of the line: met)")
        ax2.set_title("targets (green: met, red: not met)")
        ax2.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format=path.suffix[1:], metadata={"Date": None} if path.suffix == ".svg" else None)
        plt.close(fig)


def proc_status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


class Sampler:
    """A second connection calling jwt_valid on random stored tokens in a loop, timing each call
    client-side (prepared statement, one round trip per call)."""

    def __init__(self, dsn, tokens):
        self.dsn, self.tokens = dsn, tokens
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.bad = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        rng = random.Random(42)
        with psycopg.connect(self.dsn, autocommit=True) as c:
            cur = c.cursor()
            q = "SELECT token_store.jwt_valid(%s)"
            for tok in self.tokens[:200]:
                cur.execute(q, (tok,), prepare=True)
            self._ready.set()
            while not self._stop.is_set():
                tok = rng.choice(self.tokens)
                t = time.perf_counter()
                cur.execute(q, (tok,), prepare=True)
                ok = cur.fetchone()[0]
                self.samples.append((t, time.perf_counter() - t))
                if not ok:
                    self.bad += 1

    def start(self):
        self._thread.start()
        self._ready.wait(30)

    def stop(self):
        self._stop.set()
        self._thread.join()
        if self.bad:
            raise SystemExit(f"latency probe: {self.bad} valid tokens did not verify")

    def summary(self, t0=None, t1=None):
        xs = sorted(d for s, d in self.samples if (t0 is None or s >= t0) and (t1 is None or s <= t1))
        if not xs:
            return {"calls": 0, "p50_us": float("nan"), "p99_us": float("nan")}
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1e6  # noqa: E731
        return {"calls": len(xs), "p50_us": pick(0.50), "p99_us": pick(0.99),
                "max_us": xs[-1] * 1e6, "mean_us": statistics.fmean(xs) * 1e6}


def environment(args) -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "pyjwt": jwt.__version__,
            # TS_BENCH_SOURCE_COMMIT: for a run from an exported tree (git archive) without .git
            "git_commit": git("rev-parse", "HEAD") or os.environ.get("TS_BENCH_SOURCE_COMMIT", ""),
            "git_dirty": bool(git("status", "--porcelain", "--", "src", "sql", "Cargo.toml", "Cargo.lock")),
            "loadavg_start": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=54350)
    p.add_argument("--dbname", default="ts_bench")
    p.add_argument("--pgbin", default="/usr/lib/postgresql/15/bin")
    p.add_argument("--floor-bin", required=True, help="the built bench/floor program")
    p.add_argument("--lib", help="the token_store.so the cluster must have loaded")
    p.add_argument("--cache-dir", default=str(ROOT / "target" / "bench-cache"))
    p.add_argument("--n", type=int, default=100_000, help="HS256 tokens (verify, store, revoke)")
    p.add_argument("--n-asym", type=int, default=10_000, help="tokens per asymmetric alg")
    p.add_argument("--n-pgp", type=int, default=10_000, help="tokens for the pgp_sym_encrypt baseline")
    p.add_argument("--n-issue", type=int, default=20_000, help="HS256 tokens issued")
    p.add_argument("--n-issue-asym", type=int, default=1_000, help="tokens issued per asymmetric alg")
    p.add_argument("--write-rounds", type=int, default=3,
                   help="interleaved runs of store/issue/revoke")
    p.add_argument("--purge-rows", type=int, default=1_000_000)
    p.add_argument("--pgbench-seconds", type=int, default=4, help="length of one pgbench run")
    p.add_argument("--pgbench-rounds", type=int, default=3, help="interleaved runs per script")
    p.add_argument("--redis-port", type=int, default=56379, help="the private redis-server's loopback port")
    p.add_argument("--openssl-seconds", type=int, default=3, help="openssl speed -seconds, and ours per alg")
    p.add_argument("--latency-seconds", type=float, default=3.0)
    p.add_argument("--mem-calls", type=int, default=1_000_000)
    p.add_argument("--profile", action="store_true", help="perf record the HS256 verify path")
    p.add_argument("--dpop-proofs", type=int, default=400_000, help="DPoP proofs made for the dpop stage")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to run (setup first); only a full run writes results")
    p.add_argument("--out", default=str(BENCH))
    args = p.parse_args()

    b = Bench(args)
    b.results["environment"] = environment(args)
    b.results["config"].update({k: v for k, v in vars(args).items() if k not in ("out",)})
    # 1-minute load average as each stage starts: the machine may be shared
    load = b.results["environment"]["loadavg_1min_at_stage_start"] = {}
    stages = ("setup", "floor", "store", "verify", "asym", "issuer", "signatures", "memory", "pgbench",
              "per_request", "sessions", "dpop", "issue", "revoke", "purge")
    chosen = stages if args.stages is None else tuple(args.stages.split(","))
    for stage in chosen:
        load[stage] = os.getloadavg()[0]
        getattr(b, stage)()
    if chosen != stages:
        print(json.dumps({k: b.m[k] for k in b.m}, indent=1, default=str))
        return
    b.evaluate()
    b.results["environment"]["loadavg_end"] = os.getloadavg()
    b.results["environment"]["wall_seconds"] = time.monotonic() - T0
    b.results["table"] = b.table().splitlines()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(b.results, indent=2) + "\n")
    b.chart(out / "results.svg")
    print(b.table())
    print(f"\nwrote {out / 'results.json'} and {out / 'results.svg'} "
          f"({time.monotonic() - T0:.0f} s)")


if __name__ == "__main__":
    main()
