"""The purge background worker: one per database of token_store.databases (ts_client, ts_client2).

The module runs with purge_interval = 1s and leeway = 0 (ALTER SYSTEM, restored afterwards). Its last
test kills a worker with SIGKILL, which makes the postmaster restart every backend (crash recovery):
it must therefore stay the last test of the module, and no fixture may keep a connection across it."""

import datetime
import os
import signal
import time
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.slow

WORKER_DBS = ("ts_client", "ts_client2")
INTERVAL, LEEWAY = "token_store.purge_interval", "token_store.leeway"
PURGE_DEADLINE = 30  # seconds; a 1-second token is normally gone within 2-3


@pytest.fixture(scope="module")
def fast_purge(ts):
    ts.configure(ts.connect(), {INTERVAL: "1s", LEEWAY: "0"}, {INTERVAL: "1s", LEEWAY: "0"})
    install(ts, WORKER_DBS[0])
    yield
    ts.close_all()
    conn = ts.wait_for(lambda: ts.connect(), 60, "a connection to restore the settings")
    ts.configure(conn, {INTERVAL: None, LEEWAY: None}, {INTERVAL: "1min", LEEWAY: "30s"})


def install(ts, db):
    """(Re)create the extension in `db` with a signing key."""
    conn = ts.connect(db)
    conn.execute("DROP EXTENSION IF EXISTS token_store")
    conn.execute("CREATE EXTENSION token_store")
    ts.create_key(conn, f"k-{db}", "HS256")


def issue_batch(ts, conn, n, ttl):
    """Issue `n` tokens of a fresh subject; returns (subject, tokens)."""
    sub = f"batch-{uuid.uuid4()}"
    tokens = [r[0] for r in ts.rows(
        conn, "SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), %s::interval) "
              "FROM generate_series(1, %s) g", (sub, ttl, n))]
    return sub, tokens


def rows_of(ts, conn, sub):
    return ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,))


def wait_purged(ts, conn, sub, db):
    ts.wait_for(lambda: rows_of(ts, conn, sub) == 0, PURGE_DEADLINE, f"the worker to purge expired rows in {db}")


def worker_pid(ts, conn, db):
    rows = ts.rows(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'token_store purge' AND datname = %s",
                   (db,))
    return rows[0][0] if len(rows) == 1 else None


def test_one_worker_per_database_visible(ts, fast_purge):
    conn = ts.connect(WORKER_DBS[0])
    pids = {db: ts.wait_for(lambda: worker_pid(ts, conn, db), 30, f"the worker of {db}") for db in WORKER_DBS}
    assert sorted(ts.stats(conn)["worker_pids"]) == sorted(pids.values())
    assert ts.one(conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'token_store purge'") == 2


def test_missing_extension_is_logged_once(ts, fast_purge):
    db = WORKER_DBS[1]
    install(ts, db)
    conn = ts.connect(db)
    sub, _ = issue_batch(ts, conn, 3, "1 second")
    wait_purged(ts, conn, sub, db)  # the worker runs here and has seen the extension

    offset = ts.log_size()
    conn.execute("DROP EXTENSION token_store")
    said = f'extension token_store is not installed in database "{db}"'
    ts.wait_for(lambda: said in ts.log_text(offset), 15, "the worker to notice the missing extension")
    # at one round a second, four more seconds would give four more lines if it said it every round
    ts.holds_for(lambda: ts.log_text(offset).count(said) == 1, 4, "the missing extension is logged once")

    install(ts, db)
    sub, _ = issue_batch(ts, conn, 3, "1 second")
    wait_purged(ts, conn, sub, db)


def test_expired_rows_purged_live_rows_stay(ts, fast_purge):
    conns = {db: ts.connect(db) for db in WORKER_DBS}
    for db, conn in conns.items():
        if not ts.one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'token_store'"):
            install(ts, db)
    first = conns[WORKER_DBS[0]]
    purged_before = ts.stats(first)["purged_total"]
    started = datetime.datetime.now(datetime.timezone.utc)
    offset = ts.log_size()

    batches = {db: (issue_batch(ts, c, 5, "1 second")[0], issue_batch(ts, c, 3, "1 hour")) for db, c in conns.items()}
    for db, (short_sub, _) in batches.items():
        wait_purged(ts, conns[db], short_sub, db)
    for db, (_, (live_sub, live_tokens)) in batches.items():
        assert rows_of(ts, conns[db], live_sub) == 3, f"a live token was purged in {db}"
        assert all(ts.valid(conns[db], t) for t in live_tokens)

    st = ts.stats(first)
    assert st["purged_total"] >= purged_before + 10
    assert st["last_purge_at"] is not None and st["last_purge_at"] >= started - datetime.timedelta(seconds=1)
    log = ts.log_text(offset)
    for db in WORKER_DBS:
        assert f'expired rows in database "{db}"' in log, f"no purge line for {db} in the server log"


def test_interval_zero_pauses_purging(ts, fast_purge):
    admin, conn = ts.connect(), ts.connect(WORKER_DBS[0])
    try:
        ts.configure(admin, {INTERVAL: "0"}, {INTERVAL: "0"})
        # every round stamps last_purge_at: wait until no worker has run one for 2.5 s
        seen = {"value": object(), "since": time.monotonic()}

        def quiet():
            value = ts.stats(conn)["last_purge_at"]
            if value != seen["value"]:
                seen.update(value=value, since=time.monotonic())
            return time.monotonic() - seen["since"] >= 2.5

        ts.wait_for(quiet, 20, "the workers to stop their rounds", interval=0.2)
        paused_at = ts.stats(conn)["last_purge_at"]
        sub, _ = issue_batch(ts, conn, 4, "1 second")
        ts.wait_for(
            lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s AND expires_at < now()",
                           (sub,)) == 4,
            10, "the tokens to expire")
        ts.holds_for(lambda: rows_of(ts, conn, sub) == 4, 4, "expired rows stay while purging is off")
        assert ts.stats(conn)["last_purge_at"] == paused_at

        ts.configure(admin, {INTERVAL: "1s"}, {INTERVAL: "1s"})
        wait_purged(ts, conn, sub, WORKER_DBS[0])  # a reload wakes the paused worker
    finally:
        ts.configure(admin, {INTERVAL: "1s"}, {INTERVAL: "1s"})


def test_kill_9_worker_crash_restart(ts, fast_purge):
    db = WORKER_DBS[0]
    conn = ts.connect(db)
    old_pid = ts.wait_for(lambda: worker_pid(ts, conn, db), 30, f"the worker of {db}")
    live = {d: issue_batch(ts, ts.connect(d), 20, "1 hour") for d in WORKER_DBS}
    offset = ts.log_size()

    ts.killed_pids.add(old_pid)
    os.kill(old_pid, signal.SIGKILL)

    def session_ended():
        try:
            conn.execute("SELECT 1")
            return False
        except psycopg.OperationalError:
            return True

    # A worker with shared memory access died: the postmaster ends every session and reinitialises.
    ts.wait_for(session_ended, 30, "the crash restart to end our session")
    ts.wait_for(lambda: "reinitializing" in ts.log_text(offset), 30, "the postmaster to reinitialise")
    conn = ts.wait_for(lambda: ts.connect(db), 60, "the server to accept connections again")
    log = ts.log_text(offset)
    assert f"(PID {old_pid}) was terminated by signal 9" in log

    new_pids = {d: ts.wait_for(lambda: worker_pid(ts, conn, d), 30, f"the worker of {d} to come back")
                for d in WORKER_DBS}
    assert new_pids[db] != old_pid
    assert sorted(ts.stats(conn)["worker_pids"]) == sorted(new_pids.values())

    for d, (sub, tokens) in live.items():
        c = ts.connect(d)
        assert rows_of(ts, c, sub) == len(tokens), f"committed live tokens lost in {d}"
        assert all(ts.valid(c, t) for t in tokens)
        short_sub, _ = issue_batch(ts, c, 3, "1 second")
        wait_purged(ts, c, short_sub, d)
