"""The purge worker against the owner of a database it purges, on a throwaway cluster (port 54356 or a
spare one, under target/).

The owner (no superuser) shadows what unqualified SQL would resolve to: `ALTER DATABASE ... SET
search_path = public, pg_catalog` and a `public.now()`, a `public.<` (timestamptz) and a `public.=`
(name) that record who ran them and, when that is a superuser, make the owner one. Whatever restarts
the worker (pg_terminate_backend, a server restart, a deadlock the owner provokes with an open
jwt_revoke_subject transaction), none of them may ever run as a superuser, and the worker keeps
purging. The worker acts as the NOLOGIN role token_store_purge: without it, or without its grants,
it waits and says so once. And no application lock stalls a purge: a subject revocation row held by
an open transaction is skipped, by token_store.purge() and by the worker."""

import os
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from throwaway_cluster import clusters

pytestmark = pytest.mark.slow

PORT = 54356
DB, OWNER, PURGE_ROLE = "ts_owned", "ts_owner", "token_store_purge"
INTERVAL = "token_store.purge_interval"
PURGE_DEADLINE = 30
# what the test's own superuser sessions use, so that they never call the owner's shadows themselves
PINNED = "-c search_path=pg_catalog,pg_temp"

SHADOWS = f"""
CREATE TABLE public.shadow_log (
    what  text,
    usr   name,
    super boolean,
    at    timestamptz DEFAULT pg_catalog.clock_timestamp()
);
GRANT INSERT ON public.shadow_log TO PUBLIC;
CREATE FUNCTION public.shadow_hit(what text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE su boolean;
BEGIN
    SELECT r.rolsuper INTO su FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER;
    INSERT INTO public.shadow_log (what, usr, super) VALUES (what, CURRENT_USER, su);
    IF su THEN
        EXECUTE 'ALTER ROLE {OWNER} SUPERUSER';
    END IF;
END
$f$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.shadow_hit('now()'); RETURN pg_catalog.now(); END
$f$;
CREATE FUNCTION public.shadow_lt(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.shadow_hit('<'); RETURN pg_catalog.timestamptz_lt(a, b); END
$f$;
CREATE OPERATOR public.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.shadow_lt);
CREATE FUNCTION public.shadow_eq(a name, b name) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN PERFORM public.shadow_hit('='); RETURN pg_catalog.nameeq(a, b); END
$f$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.shadow_eq);
ALTER DATABASE {DB} SET search_path = public, pg_catalog;
"""

PURGE_FUNCTION = "token_store.purge_expired(text, bigint, double precision)"
# What sql/finalize.sql grants the purge role, to give it back after a test took it away.
PURGE_GRANTS = f"""
GRANT USAGE ON SCHEMA token_store TO {PURGE_ROLE};
GRANT EXECUTE ON FUNCTION {PURGE_FUNCTION} TO {PURGE_ROLE};
"""


@pytest.fixture(scope="module")
def cl(ts):
    with clusters("hardening-", Path(os.environ["TS_PGBIN"])) as make:
        c = make("main", PORT)
        c.init(DB, {INTERVAL: "1s", "token_store.leeway": "0", "token_store.subject_revocation_ttl": "1h"})
        c.start()
        admin = c.connect()
        admin.execute(f"CREATE ROLE {OWNER} LOGIN")
        # the owner's own sessions wait longer than the worker before looking for a deadlock, so that
        # in a deadlock between them the worker is the one that gets the error
        admin.execute(f"ALTER ROLE {OWNER} SET deadlock_timeout = '10s'")
        admin.execute(f"CREATE DATABASE {DB} OWNER {OWNER}")
        su = c.connect(DB)
        su.execute("CREATE EXTENSION token_store")
        ts.create_key(su, "k-owned", "HS256")
        su.execute(f"GRANT token_store_app TO {OWNER}")
        owner(c).execute(SHADOWS)
        check_shadows_work(ts, c)
        c.close_all()
        yield c


@pytest.fixture(autouse=True)
def _fresh(cl):
    """Each test starts with an owner that is no superuser, an empty shadow log, and purging on."""
    yield
    cl.close_all()
    cl.connect().execute(f"ALTER ROLE {OWNER} NOSUPERUSER")
    pinned(cl).execute("DELETE FROM public.shadow_log")
    cl.configure({INTERVAL: "1s"})
    cl.close_all()


def pinned(c):
    """A superuser session in the owner's database that never resolves a name to the shadows."""
    return c.connect(DB, options=PINNED)


def owner(c):
    """A session of the owner in its database (it picks up the database's search_path)."""
    conn = psycopg.connect(host="127.0.0.1", port=c.port, dbname=DB, user=OWNER, autocommit=True,
                           connect_timeout=10)
    c._open.append(conn)
    return conn


def check_shadows_work(ts, c):
    """The shadows are what the owner's database resolves unqualified names to: a session of the
    owner that calls now(), < and = on timestamps and names runs them (as the owner)."""
    conn = owner(c)
    assert ts.one(conn, "SHOW search_path") == "public, pg_catalog"
    conn.execute("SELECT now() < now() + '1s'::interval, 'a'::name = 'a'::name")
    hits = ts.rows(pinned(c), "SELECT DISTINCT what, usr::text, super FROM public.shadow_log ORDER BY 1")
    assert hits == [("<", OWNER, False), ("=", OWNER, False), ("now()", OWNER, False)]
    pinned(c).execute("DELETE FROM public.shadow_log")


def worker_pid(ts, c):
    rows = ts.rows(c.connect(), "SELECT pid FROM pg_stat_activity WHERE backend_type = 'token_store purge' "
                                "AND datname = %s", (DB,))
    return rows[0][0] if len(rows) == 1 else None


def waits_on_a_lock(ts, c, pid) -> bool:
    conn = c.connect()
    return (ts.one(conn, "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)) > 0
            or ts.one(conn, "SELECT coalesce(wait_event_type, '') FROM pg_stat_activity WHERE pid = %s",
                      (pid,)) == "Lock")


def purged_soon(ts, c, n=3):
    """1-second tokens issued now are purged by the worker: it still works."""
    conn = pinned(c)
    sub = f"batch-{uuid.uuid4()}"
    conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second') "
                 "FROM generate_series(1, %s) g", (sub, n))
    ts.wait_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 0,
                PURGE_DEADLINE, "the worker to purge expired rows")


def assert_not_escalated(ts, c, when=""):
    ran = ts.rows(pinned(c), "SELECT what, usr::text, super FROM public.shadow_log ORDER BY at")
    assert ts.one(c.connect(), "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (OWNER,)) is False, \
        f"the database owner became a superuser {when}; the shadows ran as (what, user, superuser): {ran[:6]}"
    assert [r for r in ran if r[2]] == [], f"a shadowing function ran as a superuser {when}: {ran[:6]}"
    assert ran == [], f"the worker resolved a name to the owner's objects {when}: {ran[:6]}"


def old_subject_revocations(c, *subjects):
    """Subject revocations, made old enough (a day) for the purge (subject_revocation_ttl is 1h)."""
    conn = pinned(c)
    for s in subjects:
        conn.execute("SELECT token_store.jwt_revoke_subject(%s)", (s,))
        conn.execute("UPDATE token_store.subject_revocations SET revoked_before = revoked_before - interval '1 day' "
                     "WHERE subject = %s", (s,))


def revocations(ts, c, *subjects):
    return sorted(r[0] for r in ts.rows(pinned(c), "SELECT subject FROM token_store.subject_revocations "
                                                   "WHERE subject = ANY(%s)", (list(subjects),)))


def pause_worker(ts, c):
    """purge_interval = 0, and the worker idle (not in the middle of a round)."""
    c.configure({INTERVAL: "0"})
    ts.wait_for(lambda: ts.one(c.connect(), "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                            "'token_store purge' AND query LIKE 'idle: purging is off%%'") == 1,
                20, "the worker to pause")


@pytest.mark.parametrize("restart", ["pg_terminate_backend", "server restart"])
def test_restarted_worker_never_runs_owner_objects(ts, cl, restart):
    old = ts.wait_for(lambda: worker_pid(ts, cl), 30, "the purge worker")
    if restart == "pg_terminate_backend":
        assert ts.one(cl.connect(), "SELECT pg_terminate_backend(%s)", (old,)) is True
    else:
        cl.stop()
        cl.start()
    # the new worker connects with the owner's search_path, and runs rounds (purging every second)
    ts.wait_for(lambda: (p := worker_pid(ts, cl)) and p != old, 30, "the worker to come back")
    purged_soon(ts, cl)
    purged_soon(ts, cl)
    assert_not_escalated(ts, cl, f"after a {restart}")


def test_worker_in_a_deadlock_never_runs_owner_objects(ts, cl):
    """The owner's open transaction holds one old subject revocation while the worker, deleting old
    ones, waits for it; the same transaction then revokes a subject the worker has just deleted: a
    deadlock, the worker gets the error, and the launcher starts it again 5 s later. Now that the
    worker skips locked rows it never waits, so the owner cannot provoke that deadlock at all; were
    it to wait, the deadlock is carried out, and the restarted worker must still run nothing of the
    owner's."""
    a, c_ = f"held-{uuid.uuid4()}", f"first-{uuid.uuid4()}"
    pause_worker(ts, cl)
    old_subject_revocations(cl, c_, a)  # c_ before a in the table, so the worker deletes c_ first
    app = owner(cl)
    app.execute("BEGIN")
    app.execute("SELECT token_store.jwt_revoke_subject(%s)", (a,))
    pid = worker_pid(ts, cl)
    offset = cl.log_size()
    cl.configure({INTERVAL: "1s"})

    ts.wait_for(lambda: waits_on_a_lock(ts, cl, pid) or revocations(ts, cl, c_) == [], 20,
                "the worker to wait on the held row, or to purge past it")
    waited = waits_on_a_lock(ts, cl, pid)
    print(f"the worker waited on the owner's row lock: {waited}")
    if waited:
        done = threading.Event()

        def revoke_second():
            try:
                app.execute("SELECT token_store.jwt_revoke_subject(%s)", (c_,))
            finally:
                done.set()

        t = threading.Thread(target=revoke_second, daemon=True)
        t.start()
        ts.wait_for(lambda: "deadlock detected" in cl.log_text(offset), 20, "the worker to hit the deadlock")
        assert done.wait(20), "the owner's transaction stayed blocked"
        t.join(5)
        ts.wait_for(lambda: (p := worker_pid(ts, cl)) and p != pid, 30, "the launcher to restart the worker")
    app.execute("COMMIT")
    purged_soon(ts, cl)
    purged_soon(ts, cl)
    assert_not_escalated(ts, cl, "after a deadlock and a restart" if waited else "(the worker never waited)")
    assert not waited, "the worker waited on the row lock of an application transaction"


def test_purge_skips_subject_revocations_locked_by_an_app(ts, cl):
    """An open transaction that revoked a subject long ago holds that row: purge() under a 3 s
    statement_timeout returns, and the worker purges past the row without waiting for it."""
    held, free, later = (f"{k}-{uuid.uuid4()}" for k in ("held", "free", "later"))
    pause_worker(ts, cl)
    old_subject_revocations(cl, held, free)
    app = owner(cl)
    app.execute("BEGIN")
    app.execute("SELECT token_store.jwt_revoke_subject(%s)", (held,))  # holds the row until COMMIT

    conn = pinned(cl)
    conn.execute("SET statement_timeout = '3s'")
    conn.execute("SELECT token_store.purge()")  # 57014 if it waited on the held row
    assert revocations(ts, cl, held, free) == [held]

    # the worker, purging again, skips the held row too: it deletes a later one and never waits
    old_subject_revocations(cl, later)
    pid = worker_pid(ts, cl)
    cl.configure({INTERVAL: "1s"})
    ts.wait_for(lambda: revocations(ts, cl, later) == [] or waits_on_a_lock(ts, cl, pid), PURGE_DEADLINE,
                "the worker to purge an old subject revocation")
    ts.holds_for(lambda: not waits_on_a_lock(ts, cl, pid), 3, "the worker does not wait on the app's lock")
    assert revocations(ts, cl, later) == []
    assert revocations(ts, cl, held) == [held]
    app.execute("COMMIT")  # revoked again just now: no longer old
    purged_soon(ts, cl)
    assert revocations(ts, cl, held) == [held]


def test_worker_acts_as_purge_role(ts, cl):
    """Without its privileges, or without the role, the worker purges nothing and says so once;
    given them back, it purges again (a worker acting as a superuser would not have noticed)."""
    admin, conn = cl.connect(), pinned(cl)
    lacks = f'role "{PURGE_ROLE}" cannot run token_store.purge_expired in database "{DB}"; waiting'
    missing = f'role "{PURGE_ROLE}" does not exist; waiting'

    def stays_unpurged(said, offset):
        sub = f"kept-{uuid.uuid4()}"
        conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text), '1 second')", (sub,))
        ts.wait_for(lambda: said in cl.log_text(offset), 20, f"the worker to say: {said}")
        ts.holds_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 1,
                     4, "nothing is purged meanwhile")
        assert cl.log_text(offset).count(said) == 1, "said more than once"
        return sub

    offset = cl.log_size()
    conn.execute(f"REVOKE EXECUTE ON FUNCTION {PURGE_FUNCTION} FROM {PURGE_ROLE}")
    try:
        stays_unpurged(lacks, offset)
    finally:
        conn.execute(PURGE_GRANTS)
    purged_soon(ts, cl)

    offset = cl.log_size()
    # DROP OWNED, not REVOKE: from PostgreSQL 17 on, the grants of the extension's script are kept as
    # initial privileges (pg_init_privs) that depend on the role, which REVOKE leaves behind.
    conn.execute(f"DROP OWNED BY {PURGE_ROLE}")
    admin.execute(f"DROP ROLE {PURGE_ROLE}")
    try:
        stays_unpurged(missing, offset)
    finally:
        admin.execute(f"CREATE ROLE {PURGE_ROLE} NOLOGIN")
        conn.execute(PURGE_GRANTS)
    purged_soon(ts, cl)
    assert_not_escalated(ts, cl)


# ---- issue 20: a purge role that can only purge, and settings a database owner cannot use -------

PG_AT_LEAST_17 = "SELECT current_setting('server_version_num')::int >= 170000"


def stays_unpurged_saying(ts, c, said, offset, seconds=4):
    """A 1-second token stays while the worker says `said` (once)."""
    conn = pinned(c)
    sub = f"kept-{uuid.uuid4()}"
    conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text), '1 second')", (sub,))
    ts.wait_for(lambda: said in c.log_text(offset), 20, f"the worker to say: {said}")
    ts.holds_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 1,
                 seconds, "nothing is purged meanwhile")
    assert c.log_text(offset).count(said) == 1, "said more than once"


def test_purge_role_can_do_nothing_but_purge(ts, cl):
    """A CREATEROLE holder (no superuser) makes token_store_purge a login role where PostgreSQL lets it
    (15; from 16 on it needs ADMIN on the role, and a superuser does it for the test). Logged in as
    it, nothing un-revokes a token: no privilege on any table; purge_expired deletes only what has
    expired. Meanwhile the worker refuses to act as a role that can log in, or that has members."""
    admin, conn = cl.connect(), pinned(cl)
    admin.execute("DROP ROLE IF EXISTS ts_roles")
    admin.execute("CREATE ROLE ts_roles LOGIN CREATEROLE")
    roles = psycopg.connect(host="127.0.0.1", port=cl.port, dbname=DB, user="ts_roles", autocommit=True)
    cl._open.append(roles)
    try:
        roles.execute(f"ALTER ROLE {PURGE_ROLE} LOGIN")
    except psycopg.errors.InsufficientPrivilege:
        assert ts.one(admin, "SELECT current_setting('server_version_num')::int >= 160000")
        admin.execute(f"ALTER ROLE {PURGE_ROLE} LOGIN")
    offset = cl.log_size()
    try:
        revoked = ts.issue(conn, ts.claims(sub=f"revoked-{uuid.uuid4()}"))
        assert ts.revoke(conn, revoked) is True
        conn.execute("SELECT token_store.jwt_revoke_subject('everyone-out')")
        expired = f"expired-{uuid.uuid4()}"
        conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text), '1 second')", (expired,))
        purge = psycopg.connect(host="127.0.0.1", port=cl.port, dbname=DB, user=PURGE_ROLE, autocommit=True,
                                options=PINNED)
        cl._open.append(purge)
        for attempt in ("DELETE FROM token_store.tokens WHERE revoked_at IS NOT NULL",
                        "UPDATE token_store.tokens SET revoked_at = NULL",
                        "DELETE FROM token_store.subject_revocations",
                        "DELETE FROM token_store.sessions",
                        "DELETE FROM token_store.dpop_proofs",
                        "SELECT count(*) FROM token_store.tokens",
                        "SELECT token_store.purge()"):
            with ts.expect_error("42501"):
                purge.execute(attempt)
        # no privilege on any table or column of the schema, the DPoP replay cache included
        assert ts.rows(conn, """
            SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'token_store'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
               AND (has_table_privilege(%(r)s, c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES')
                    OR has_any_column_privilege(%(r)s, c.oid, 'SELECT,INSERT,UPDATE,REFERENCES'))""",
                       {"r": PURGE_ROLE}) == []
        ts.wait_for(lambda: ts.one(conn, "SELECT now() > max(expires_at) FROM token_store.tokens WHERE subject = %s",
                                   (expired,)), 5, "the 1-second token to expire")
        rows = ts.rows(purge, "SELECT deleted FROM token_store.purge_expired('tokens', 1000000)")
        assert rows and rows[0][0] >= 1
        assert ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (expired,)) == 0
        assert ts.one(conn, "SELECT count(*) FROM token_store.subject_revocations WHERE subject = 'everyone-out'") == 1
        ts.assert_rejected(conn, revoked, "revoked")
        # the worker will not act as it while it can log in
        stays_unpurged_saying(ts, cl, f'role "{PURGE_ROLE}" can log in; refusing to purge as it', offset)
    finally:
        admin.execute(f"ALTER ROLE {PURGE_ROLE} NOLOGIN")
    purged_soon(ts, cl)

    offset = cl.log_size()
    admin.execute(f"GRANT {PURGE_ROLE} TO {OWNER}")
    try:
        stays_unpurged_saying(ts, cl, f'role "{PURGE_ROLE}" has members or administrators; refusing to purge', offset)
    finally:
        admin.execute(f"REVOKE {PURGE_ROLE} FROM {OWNER}")
    purged_soon(ts, cl)
    assert_not_escalated(ts, cl)


# Every setting a database owner may give that could stop or slow a purge, with a value that would.
OWNER_SETTINGS = {
    "default_transaction_read_only": "on",
    "default_transaction_isolation": "serializable",
    "default_transaction_deferrable": "on",
    "statement_timeout": "1",
    "lock_timeout": "1",
    "idle_in_transaction_session_timeout": "1",
    "jit": "on",
    "jit_above_cost": "0",
    "enable_indexscan": "off",
    "enable_bitmapscan": "off",
}
# what the test's own sessions in that database use instead (a serializable default is harmless to them)
OVERRIDES = PINNED + " " + " ".join(
    f"-c {k}={v}" for k, v in {
        "default_transaction_read_only": "off", "statement_timeout": "0", "lock_timeout": "0",
        "idle_in_transaction_session_timeout": "0", "jit": "off"}.items())


def test_database_owner_settings_do_not_stop_the_worker(ts, cl):
    """The owner sets, for its database, a read-only default, 1 ms timeouts, serializable deferrable
    transactions and plans that avoid indexes; the restarted worker (which takes them in at
    connection) still purges, and waits out a table lock instead of failing after 1 ms."""
    settings, opts = dict(OWNER_SETTINGS), OVERRIDES
    if ts.one(cl.connect(), PG_AT_LEAST_17):
        settings["transaction_timeout"] = "1"
        opts += " -c transaction_timeout=0"
    own = owner(cl)
    for k, v in settings.items():
        own.execute(f"ALTER DATABASE {DB} SET {k} = '{v}'")
    mon = cl.connect()  # one connection for the polling (a failing worker comes back slowly)

    def pid():
        rows = ts.rows(mon, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'token_store purge' "
                            "AND datname = %s", (DB,))
        return rows[0][0] if len(rows) == 1 else None

    try:
        old = ts.wait_for(pid, 30, "the purge worker")
        assert ts.one(mon, "SELECT pg_terminate_backend(%s)", (old,)) is True
        ts.wait_for(lambda: (p := pid()) and p != old, 30, "the worker to come back", interval=0.5)
        offset = cl.log_size()  # from the new worker's start on
        conn = cl.connect(DB, options=opts)
        assert ts.one(conn, "SHOW default_transaction_read_only") == "off"
        # a table lock held for 3 s while 1-second tokens expire: the worker waits for it
        sub = f"locked-{uuid.uuid4()}"
        conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second') "
                     "FROM generate_series(1, 3) g", (sub,))
        locker = cl.connect(DB, options=opts)
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE token_store.tokens IN SHARE MODE")
        locker.execute("SELECT pg_sleep(3)")
        locker.execute("COMMIT")
        ts.wait_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (sub,)) == 0,
                    PURGE_DEADLINE, "the worker to purge expired rows")
        for _ in range(2):
            sub = f"batch-{uuid.uuid4()}"
            conn.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text), '1 second')", (sub,))
            ts.wait_for(lambda: ts.one(conn, "SELECT count(*) FROM token_store.tokens WHERE subject = %s",
                                       (sub,)) == 0, PURGE_DEADLINE, "the worker to purge again")
        log = cl.log_text(offset)
        for bad in ("read-only transaction", "lock timeout", "statement timeout", "transaction timeout",
                    "stopped; starting it again"):
            assert bad not in log, f"the worker's log says {bad!r}:\n{log[-2000:]}"
    finally:
        own.execute(f"ALTER DATABASE {DB} RESET ALL")
        own.execute(f"ALTER DATABASE {DB} SET search_path = public, pg_catalog")
        last = pid()
        if last:
            mon.execute("SELECT pg_terminate_backend(%s)", (last,))
        ts.wait_for(lambda: (p := pid()) and p != last, 60, "the worker to come back", interval=0.5)
    assert_not_escalated(ts, cl)
