"""The launcher and its purge workers, on a throwaway cluster (port 54354 or a spare one, in a
temporary directory) whose token_store.databases names databases that do not exist yet: such a
database is waited on quietly (one LOG line, no FATAL loop) and purged once created, without a
restart; a reload changes the interval (0 pauses); a terminated worker or launcher comes back, and
a restarted launcher adopts the running workers. Last, a million expired rows are purged while
another session keeps verifying: the figures go to target/purge-under-load.json."""

import json
import os
import re
import statistics
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from throwaway_cluster import TARGET, clusters

pytestmark = pytest.mark.slow

PORT = 54354
FIRST, LATE, LOAD = "ts_w1", "ts_late", "ts_load"  # LATE and LOAD do not exist at start
INTERVAL = "token_store.purge_interval"
PURGE_DEADLINE = 30
NOT_THERE = 'database "{}" of token_store.databases does not exist'
LOAD_ROWS = 1_000_000


@pytest.fixture(scope="module")
def cl(ts):
    with clusters("launcher-", Path(os.environ["TS_PGBIN"])) as make:
        c = make("main", PORT)
        c.init(f"{FIRST},{LATE},{LOAD}", {INTERVAL: "1s", "token_store.leeway": "0"})
        c.start()
        c.connect().execute(f"CREATE DATABASE {FIRST}")
        install(ts, c, FIRST)
        yield c


@pytest.fixture(autouse=True)
def _close_sessions(cl):
    """Sessions a test opens on the cluster end with it (a DROP DATABASE WITH (FORCE) would
    otherwise terminate them, with a FATAL line in the log)."""
    yield
    cl.close_all()


def install(ts, c, db):
    conn = c.connect(db)
    conn.execute("CREATE EXTENSION token_store")
    ts.create_key(conn, f"k-{db}", "HS256")


def pids(ts, c, backend_type, db=None):
    conn = c.connect()
    try:
        q = "SELECT pid FROM pg_stat_activity WHERE backend_type = %s"
        args = [backend_type]
        if db is not None:
            q += " AND datname = %s"
            args.append(db)
        return sorted(r[0] for r in ts.rows(conn, q, args))
    finally:
        conn.close()


def worker_pid(ts, c, db):
    found = pids(ts, c, "token_store purge", db)
    return found[0] if len(found) == 1 else None


def launcher_pid(ts, c):
    found = pids(ts, c, "token_store launcher")
    return found[0] if len(found) == 1 else None


def issue_batch(ts, conn, n, ttl):
    sub = f"batch-{uuid.uuid4()}"
    conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), %s::interval) "
                 "FROM generate_series(1, %s) g", (sub, ttl, n))
    return sub


def rows_of(ts, conn, sub):
    return ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,))


def purged_soon(ts, conn, db, n=3):
    """1-second tokens issued now are purged by the worker of `db`."""
    sub = issue_batch(ts, conn, n, "1 second")
    ts.wait_for(lambda: rows_of(ts, conn, sub) == 0, PURGE_DEADLINE, f"the worker to purge expired rows in {db}")


def no_worker_trouble(log: str):
    bad = [line for line in log.splitlines()
           if "FATAL" in line or "ERROR" in line or "exited with exit code" in line or "terminated by signal" in line]
    assert bad == [], "unexpected worker trouble in the server log:\n" + "\n".join(bad)


def test_missing_database_waited_on_quietly(ts, cl):
    launcher = ts.wait_for(lambda: launcher_pid(ts, cl), 30, "the launcher")
    ts.wait_for(lambda: worker_pid(ts, cl, FIRST), 30, f"the worker of {FIRST}")
    for db in (LATE, LOAD):
        ts.wait_for(lambda: NOT_THERE.format(db) in cl.log_text(), 15, f"the launcher to say {db} is missing")
    # purge_interval is 1s: the launcher looks the databases up again every second
    ts.holds_for(lambda: all(cl.log_text().count(NOT_THERE.format(db)) == 1 for db in (LATE, LOAD)), 5,
                 "each missing database is said once")
    assert launcher_pid(ts, cl) == launcher
    assert worker_pid(ts, cl, LATE) is None
    no_worker_trouble(cl.log_text())


def test_database_created_later_is_purged_without_restart(ts, cl):
    started = cl.one("SELECT pg_postmaster_start_time()")
    cl.connect().execute(f"CREATE DATABASE {LATE}")
    ts.wait_for(lambda: worker_pid(ts, cl, LATE), 20, f"a worker in {LATE} once it exists")
    install(ts, cl, LATE)
    purged_soon(ts, cl.connect(LATE), LATE)
    assert cl.one("SELECT pg_postmaster_start_time()") == started
    assert cl.log_text().count(NOT_THERE.format(LATE)) == 1
    workers = {db: worker_pid(ts, cl, db) for db in (FIRST, LATE)}
    assert sorted(ts.stats(cl.connect(LATE))["worker_pids"]) == sorted(workers.values())
    no_worker_trouble(cl.log_text())


def test_dropped_database_is_waited_on_again(ts, cl):
    offset = cl.log_size()
    old = worker_pid(ts, cl, LATE)
    assert old
    # a database with a worker connected is dropped WITH (FORCE), which terminates the worker
    cl.connect().execute(f"DROP DATABASE {LATE} WITH (FORCE)")
    ts.wait_for(lambda: NOT_THERE.format(LATE) in cl.log_text(offset), 20, "the launcher to notice the drop")
    ts.holds_for(lambda: cl.log_text(offset).count(NOT_THERE.format(LATE)) == 1 and not worker_pid(ts, cl, LATE), 3,
                 "the dropped database is said once and has no worker")
    no_worker_trouble(cl.log_text(offset))

    cl.connect().execute(f"CREATE DATABASE {LATE}")
    install(ts, cl, LATE)
    ts.wait_for(lambda: worker_pid(ts, cl, LATE), 20, f"a worker in {LATE} again")
    purged_soon(ts, cl.connect(LATE), LATE)


def test_interval_reload_applies_and_zero_pauses(ts, cl):
    conn = cl.connect(FIRST)
    pid = ts.wait_for(lambda: worker_pid(ts, cl, FIRST), 20, f"the worker of {FIRST}")

    def worker_says(text):
        return ts.one(conn, "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)) == text

    try:
        cl.configure({INTERVAL: "0"})
        ts.wait_for(lambda: worker_says("idle: purging is off (token_store.purge_interval = 0)"), 10,
                    "the worker to apply purge_interval = 0")
        sub = issue_batch(ts, conn, 4, "1 second")
        ts.wait_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens "
                                         "WHERE subject = %s AND expires_at < now()", (sub,)) == 4, 10, "expiry")
        ts.holds_for(lambda: rows_of(ts, conn, sub) == 4, 4, "expired rows stay while purging is off")

        cl.configure({INTERVAL: "1h"})  # on again, but the next round is an hour away
        ts.wait_for(lambda: worker_says("idle: waiting for the next purge round"), 10, "the worker to apply 1h")
        ts.holds_for(lambda: rows_of(ts, conn, sub) == 4, 3, "no round before the hour is up")

        cl.configure({INTERVAL: "1s"})
        ts.wait_for(lambda: rows_of(ts, conn, sub) == 0, PURGE_DEADLINE, "the worker to purge at 1s again")
        assert worker_pid(ts, cl, FIRST) == pid, "the worker was restarted, not reloaded"
    finally:
        cl.configure({INTERVAL: "1s"})


def test_terminated_worker_comes_back(ts, cl):
    offset = cl.log_size()
    old = ts.wait_for(lambda: worker_pid(ts, cl, FIRST), 20, f"the worker of {FIRST}")
    assert cl.one("SELECT pg_terminate_backend(%s)", (old,)) is True
    new = ts.wait_for(lambda: (p := worker_pid(ts, cl, FIRST)) and p != old and p, 20, "the worker to come back")
    assert f'the purge worker of database "{FIRST}" stopped; starting it again in 5 s' in cl.log_text(offset)
    stats_pids = ts.stats(cl.connect(FIRST))["worker_pids"]
    assert new in stats_pids and old not in stats_pids
    purged_soon(ts, cl.connect(FIRST), FIRST)
    assert len(pids(ts, cl, "token_store purge", FIRST)) == 1


def test_restarted_launcher_adopts_running_workers(ts, cl):
    launcher = ts.wait_for(lambda: launcher_pid(ts, cl), 20, "the launcher")
    workers = {db: ts.wait_for(lambda: worker_pid(ts, cl, db), 20, f"the worker of {db}") for db in (FIRST, LATE)}
    assert cl.one("SELECT pg_terminate_backend(%s)", (launcher,)) is True
    ts.wait_for(lambda: (p := launcher_pid(ts, cl)) and p != launcher, 20, "a new launcher (restart time 5 s)")
    ts.holds_for(lambda: {db: pids(ts, cl, "token_store purge", db) for db in workers}
                 == {db: [p] for db, p in workers.items()}, 3, "the same single worker in each database")

    # the adopted worker did not tell this launcher it stops; the launcher still notices
    assert cl.one("SELECT pg_terminate_backend(%s)", (workers[FIRST],)) is True
    ts.wait_for(lambda: (p := worker_pid(ts, cl, FIRST)) and p != workers[FIRST], 20, "the adopted worker to come back")
    purged_soon(ts, cl.connect(FIRST), FIRST)


def percentiles(samples):
    if not samples:
        return {"count": 0}
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"count": len(samples), "p50_ms": round(qs[49] * 1000, 3), "p99_ms": round(qs[98] * 1000, 3),
            "max_ms": round(max(samples) * 1000, 3)}


def test_million_expired_rows_purged_under_verify_load(ts, cl):
    cl.configure({INTERVAL: "0"})  # paused while the rows go in
    cl.connect().execute(f"CREATE DATABASE {LOAD}")
    install(ts, cl, LOAD)
    conn = cl.connect(LOAD)
    live = [r[0] for r in ts.rows(conn, "SELECT token_store.jwt_issue(jsonb_build_object('sub', 'live-' || g), "
                                        "'1 hour') FROM generate_series(1, 200) g")]

    t = time.monotonic()
    # rows as the table holds them, never decrypted: a dummy payload and key fingerprint
    conn.execute("INSERT INTO token_store.tokens (id, token_hash, expires_at, payload, key_fingerprint) "
                 "SELECT gen_random_uuid(), sha256(('load-' || g)::bytea), "
                 "       now() - interval '1 hour' - g * interval '1 millisecond', '\\x00'::bytea, 'load-dummy' "
                 "FROM generate_series(1, %s) g", (LOAD_ROWS,))
    conn.execute("VACUUM ANALYZE token_store.tokens")
    insert_s = time.monotonic() - t

    verifier = cl.connect(LOAD)
    lock = threading.Lock()
    samples = {"idle": [], "purge": []}
    errors = []
    phase = {"name": "idle"}
    stop = threading.Event()

    def verify_loop():
        i = 0
        while not stop.is_set():
            token = live[i % len(live)]
            i += 1
            t0 = time.perf_counter()
            try:
                claims = verifier.execute("SELECT token_store.jwt_verify(%s)", (token,)).fetchone()[0]
                if not claims.get("sub", "").startswith("live-"):
                    raise AssertionError(f"unexpected claims {claims}")
            except Exception as e:  # any failure of a verification counts
                errors.append(repr(e))
                continue
            with lock:
                samples[phase["name"]].append(time.perf_counter() - t0)

    thread = threading.Thread(target=verify_loop, daemon=True)
    thread.start()
    try:
        time.sleep(3)  # idle: nobody purges
        offset = cl.log_size()
        with lock:
            phase["name"] = "purge"
        t = time.monotonic()
        cl.configure({INTERVAL: "1s"})
        line = re.compile(rf'deleted (\d+) expired rows in database "{LOAD}" in ([\d.]+) ms')
        m = ts.wait_for(lambda: line.search(cl.log_text(offset)), 90, "the purge round of the million rows",
                        interval=0.25)
        wall_s = time.monotonic() - t
    finally:
        stop.set()
        thread.join(30)

    deleted, round_ms = int(m.group(1)), float(m.group(2))
    assert ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE key_fingerprint = 'load-dummy'") == 0
    assert deleted == LOAD_ROWS
    assert ts.one(conn, "SELECT count(*) FROM token_store.tokens") == len(live)
    assert errors == [], f"{len(errors)} verifications failed, first: {errors[:3]}"
    assert samples["idle"] and samples["purge"], "no verification in one of the phases"

    figures = {
        "rows": LOAD_ROWS,
        "purge_batch_size": int(cl.one("SELECT current_setting('token_store.purge_batch_size')")),
        "insert_seconds": round(insert_s, 2),
        "purge_round_seconds": round(round_ms / 1000, 2),
        "purge_rows_per_second": round(deleted / (round_ms / 1000)),
        "purge_wall_seconds_from_reload": round(wall_s, 2),
        "verify_idle": percentiles(samples["idle"]),
        "verify_during_purge": percentiles(samples["purge"]),
        "verify_errors": len(errors),
        "note": "client-side round trips of SELECT token_store.jwt_verify over loopback TCP, one session; "
                "purge figures from the worker's LOG line",
    }
    TARGET.mkdir(exist_ok=True)
    (TARGET / "purge-under-load.json").write_text(json.dumps(figures, indent=2) + "\n")
