"""Crash safety on a throwaway cluster: kill -9 in the middle of writes, re-encryption and purge,
and an immediate shutdown under write load. After recovery every committed token is there and
verifies, nothing uncommitted is, and every stored payload still decrypts."""

import secrets
import threading
import time

import psycopg
import pytest
from throwaway_cluster import as_pg, clusters

pytestmark = pytest.mark.slow

DB = "ts_crash"
C = None  # the module's cluster


def connect(dbname=DB) -> psycopg.Connection:
    return C.connect(dbname)




def one(conn, q, params=None):
    return conn.execute(q, params).fetchone()[0]


@pytest.fixture(scope="module")
def cluster(ts):
    global C
    with clusters("crash-", ts.pgbin) as make:
        C = make("crash", 54355)
        C.init(DB, {"token_store.purge_interval": "0"})
        C.start()
        C.connect().execute(f"CREATE DATABASE {DB}")
        c = connect()
        c.execute("CREATE EXTENSION token_store")
        c.execute("SELECT token_store.create_key('k', 'HS256', %s)", (secrets.token_hex(32),))
        yield C
        C = None


def issue(conn, sub):
    return one(conn, "SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text), '1 hour', 'k')", (sub,))


def all_payloads_decrypt(conn) -> int:
    return one(conn, "SELECT count(token_store.jwt_payload(id)) FROM token_store.tokens")


def test_kill_backend_mid_transaction(cluster):
    conn = connect()
    committed = [issue(conn, f"c{i}") for i in range(30)]
    victim = connect()
    victim.autocommit = False
    pending = [issue(victim, f"u{i}") for i in range(10)]
    C.kill9(one(victim, "SELECT pg_backend_pid()"))
    conn = connect()
    assert all(one(conn, "SELECT token_store.jwt_valid(%s)", (t,)) for t in committed)
    assert [one(conn, "SELECT token_store.jwt_introspect(%s)->>'reason'", (t,)) for t in pending] == ["not_stored"] * 10
    assert one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject LIKE 'u%%'") == 0
    assert all_payloads_decrypt(conn) == one(conn, "SELECT count(*) FROM token_store.tokens")


def test_kill_backend_mid_reencrypt(cluster):
    conn = connect()
    tokens = [issue(conn, f"r{i}") for i in range(200)]
    key_conf = (cluster.data / "token_store_key.conf").read_text()
    old_key = key_conf.split("'")[1]
    new_key = secrets.token_hex(32)
    conn.execute(f"ALTER SYSTEM SET token_store.encryption_key = '{new_key}'")
    conn.execute(f"ALTER SYSTEM SET token_store.previous_encryption_keys = '{old_key}'")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    victim = connect()
    victim.autocommit = False
    moved = one(victim, "SELECT token_store.reencrypt(100000)")
    assert moved >= 200
    C.kill9(one(victim, "SELECT pg_backend_pid()"))
    conn = connect()
    per_key = one(conn, "SELECT rows_per_key FROM token_store.stats")
    assert len(per_key) == 1, f"the killed re-encryption left nothing behind: {per_key}"
    assert all_payloads_decrypt(conn) == one(conn, "SELECT count(*) FROM token_store.tokens")
    while one(conn, "SELECT token_store.reencrypt(50)"):
        pass
    assert len(one(conn, "SELECT rows_per_key FROM token_store.stats")) == 1
    assert all(one(conn, "SELECT token_store.jwt_valid(%s)", (t,)) for t in tokens)
    conn.execute("ALTER SYSTEM RESET token_store.previous_encryption_keys")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    assert all_payloads_decrypt(connect()) == one(conn, "SELECT count(*) FROM token_store.tokens")


def test_kill_worker_mid_purge(cluster):
    conn = connect()
    live = [issue(conn, f"live{i}") for i in range(20)]
    fp = one(conn, "SELECT key_fingerprint FROM token_store.tokens LIMIT 1")
    conn.execute("""INSERT INTO token_store.tokens (id, token_hash, subject, expires_at, payload, key_fingerprint)
                    SELECT gen_random_uuid(), sha256(('x' || g)::bytea), 'expired', now() - interval '1 day',
                           '\\x00'::bytea, %s FROM generate_series(1, 300000) g""", (fp,))
    conn.execute("ALTER SYSTEM SET token_store.purge_batch_size = 2000")
    conn.execute("ALTER SYSTEM SET token_store.purge_interval = '1s'")
    conn.execute("SELECT pg_reload_conf()")

    def worker_pid():
        r = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'token_store purge' "
                         "AND query LIKE 'purging%%'").fetchone()
        return r[0] if r else None

    deadline = time.monotonic() + 30
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = worker_pid()
        time.sleep(0.01)
    assert pid, "the worker never started purging"
    C.kill9(pid)
    conn = connect()
    assert all(one(conn, "SELECT token_store.jwt_valid(%s)", (t,)) for t in live), "a live token was lost"
    deadline = time.monotonic() + 60
    while one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = 'expired'") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = 'expired'") == 0, "purging resumed"
    assert all(one(conn, "SELECT token_store.jwt_valid(%s)", (t,)) for t in live)
    conn.execute("ALTER SYSTEM RESET token_store.purge_interval")
    conn.execute("ALTER SYSTEM RESET token_store.purge_batch_size")
    conn.execute("SELECT pg_reload_conf()")


def test_immediate_shutdown_under_write_load(cluster):
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(n):
        try:
            c = connect()
            i = 0
            while not stop.is_set():
                acknowledged.append(issue(c, f"load{n}-{i}"))
                i += 1
        except psycopg.Error:
            pass  # the server went away mid-statement: that token was never acknowledged

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(2)
    as_pg(str(cluster.pgbin / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop")
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acknowledged) > 50
    cluster.start()
    C.wait_ready()
    conn = connect()
    missing = [t for t in acknowledged if not one(conn, "SELECT token_store.jwt_valid(%s)", (t,))]
    assert not missing, f"{len(missing)} acknowledged tokens lost"
    assert all_payloads_decrypt(conn) == one(conn, "SELECT count(*) FROM token_store.tokens")
