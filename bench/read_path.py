"""The read path's cost, two builds side by side (issue 19): the same jobs against two clusters
that differ only in the token_store library they load (say 0.3.0's and this branch's), in
interleaved rounds on the same machine, medians reported with their ratio.

  batch      one statement verifying N stored HS256 tokens: with kid, and without kid
             (CPU time of the backend per verify, from /proc/<pid>/schedstat)
  request    pgbench -M prepared, one stored token per statement (bench/pgbench/request_jwt_valid.sql),
             1 and 2 clients, TPS
  request+w  the same with a third connection committing a write every millisecond (each
             statement then sees a new snapshot: the key is read again)
  request cpu  the backend's CPU time per request over 20,000 prepared round trips on one
             connection, alone and with that writer (robust where TPS moves with other load)

  .venv/bin/python bench/read_path.py --old-port P1 --new-port P2 --pgbin DIR [--n 100000]

Each cluster must have token_store preloaded and an encryption key set; the script makes a
database `ts_read_path` in each. Tokens are made by PyJWT as bench/run.py makes them (cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402  (bench/run.py: token making, shared with the suite)

DB = "ts_read_path"


def cpu(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def setup(port: int, kid_tokens: list[str], nokid_tokens: list[str]) -> None:
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        c.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={DB}", autocommit=True) as c:
        c.execute("CREATE EXTENSION token_store")
        c.execute("SELECT token_store.create_key(%s, 'HS256', %s)", (run.kid_of("HS256"), run.HS_SECRET))
        c.execute("CREATE SCHEMA bench")
        for name, toks in (("tok", kid_tokens), ("nokid", nokid_tokens)):
            c.execute(f"CREATE TABLE bench.{name} (id int PRIMARY KEY, token text NOT NULL)")
            with c.cursor().copy(f"COPY bench.{name} (id, token) FROM STDIN") as cp:
                for i, t in enumerate(toks, 1):
                    cp.write_row((i, t))
            c.execute(f"SELECT count(token_store.jwt_store(token)) FROM bench.{name}")
        c.execute("CREATE TABLE bench.writes (n int)")
        c.execute("VACUUM ANALYZE bench.tok, bench.nokid, token_store.tokens")
        c.execute("CHECKPOINT")


def batch(port: int, table: str, n: int) -> float:
    """CPU microseconds per verify of one batch statement."""
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={DB}", autocommit=True) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("SELECT token_store.jwt_valid(token) FROM bench.tok LIMIT 10").fetchall()  # warm
        c0 = cpu(pid)
        got = c.execute(f"SELECT count(*) FILTER (WHERE token_store.jwt_valid(token)) FROM bench.{table}").fetchone()[0]
        used = cpu(pid) - c0
    assert got == n, (port, table, got)
    return used / n * 1e6


def request_cpu(port: int, token: str, n: int, writer: bool = False) -> float:
    """CPU microseconds of the backend per request: `n` round trips of one prepared
    `SELECT token_store.jwt_valid($1)` on one connection (CPU time, unlike TPS, hardly moves with
    the machine's other load); with `writer`, a third connection commits a write every millisecond
    meanwhile, so most statements see a new snapshot."""
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={DB}", autocommit=True) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(10):
            assert c.execute("SELECT token_store.jwt_valid(%s)", (token,), prepare=True).fetchone()[0] is True
        ctx = Writer(port) if writer else None
        if ctx:
            ctx.__enter__()
        try:
            c0 = cpu(pid)
            for _ in range(n):
                c.execute("SELECT token_store.jwt_valid(%s)", (token,), prepare=True).fetchone()
            used = cpu(pid) - c0
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
    return used / n * 1e6


def pgbench(pgbin: str, port: int, clients: int, seconds: int, token: str) -> float:
    cmd = [str(Path(pgbin) / "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
           "-T", str(seconds), "-D", f"token={token}", "-f", str(BENCH / "pgbench" / "request_jwt_valid.sql"),
           "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DB]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(next(l for l in out.stdout.splitlines() if l.startswith("tps = ")).split()[2])


class Writer:
    """A connection committing one small INSERT every millisecond while it runs."""

    def __init__(self, port: int):
        self.port, self.stop = port, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={DB}", autocommit=True) as c:
            while not self.stop.is_set():
                c.execute("INSERT INTO bench.writes VALUES (1)")
                time.sleep(0.001)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(10)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-port", type=int, required=True)
    p.add_argument("--new-port", type=int, required=True)
    p.add_argument("--pgbin", required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--requests", type=int, default=20_000, help="round trips of the request cpu jobs")
    p.add_argument("--cache-dir", default=str(run.ROOT / "target" / "bench-cache"))
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args()
    cache = Path(a.cache_dir)
    run.make_keys(cache)
    kid_tokens = run.tokens_for(cache, "HS256", a.n)
    nokid_tokens = run.tokens_for(cache, "HS256", a.n, with_kid=False)
    ports = {"old": a.old_port, "new": a.new_port}
    for port in ports.values():
        setup(port, kid_tokens, nokid_tokens)
    token = kid_tokens[0]
    jobs = {
        "batch kid (us/verify)": lambda port: batch(port, "tok", a.n),
        "batch no kid (us/verify)": lambda port: batch(port, "nokid", a.n),
        "request c1 (tps)": lambda port: pgbench(a.pgbin, port, 1, a.seconds, token),
        "request c2 (tps)": lambda port: pgbench(a.pgbin, port, 2, a.seconds, token),
    }

    def with_writer(port, clients):
        with Writer(port):
            return pgbench(a.pgbin, port, clients, a.seconds, token)

    jobs["request c1 + writer (tps)"] = lambda port: with_writer(port, 1)
    jobs["request cpu (us/request)"] = lambda port: request_cpu(port, token, a.requests)
    jobs["request cpu + writer (us/req)"] = lambda port: request_cpu(port, token, a.requests, True)
    results = {job: {"old": [], "new": []} for job in jobs}
    for r in range(a.rounds):
        for job, f in jobs.items():
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for which in order:
                results[job][which].append(f(ports[which]))
    print(f"{'job':<28} {'old':>10} {'new':>10} {'new/old':>8}   runs old | new")
    summary = {}
    for job, r in results.items():
        old, new = statistics.median(r["old"]), statistics.median(r["new"])
        summary[job] = {"old": old, "new": new, "ratio": new / old, "runs": r}
        print(f"{job:<28} {old:10.2f} {new:10.2f} {new / old:8.3f}   "
              f"{[round(x, 2) for x in r['old']]} | {[round(x, 2) for x in r['new']]}")
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
