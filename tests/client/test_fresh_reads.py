"""A read path that is never stale (issue 19): jwt_valid and jwt_introspect in a warm session B
answer, at B's next statement, exactly what a plain SELECT of the extension's tables in that
statement of B sees, whatever B's context and however the change was written.

- Inside B's open transaction block: under READ COMMITTED each statement sees what committed before
  it; under REPEATABLE READ and SERIALIZABLE the transaction's snapshot decides for the keys, the
  tokens, the subject revocations and the sessions alike (one rule: what B's own SELECT sees), also
  once B has taken in the other session's invalidations mid-transaction; after COMMIT, B sees the
  change. Changes: a key retired, deleted, created, re-activated; a token revoked, a subject revoked,
  a session ended.
- A cursor fetched across a revocation and a key retirement: each row is judged as the cursor's own
  columns (read under its snapshot) show it.
- `UPDATE t SET ok = token_store.jwt_valid(tok)`: the outer UPDATE completes, every row right.
- Key changes that fire no statement trigger: a writer with session_replication_role = replica
  (what the logical apply worker and data-copy tools run with), `ALTER TABLE ... DISABLE TRIGGER
  ALL`, and pg_restore --data-only of the keys (with --disable-triggers, and under replica role).

B's statements inside a transaction block never raise (jwt_valid and jwt_introspect, not
jwt_verify): an ERROR would end the transaction. B's first statement after the change is jwt_valid
alone: a statement that looks anything up in the catalogs for the first time, or takes a lock B did
not hold yet, makes PostgreSQL take in other sessions' invalidations by itself (and jwt_introspect
happens to do so), which would hide a stale cache. The statement that observes reads every table B
needs, so B holds all its locks from its first observation on.
"""

import os
import subprocess
import uuid
from dataclasses import dataclass, field

import pytest
from psycopg.types.json import Jsonb

DB = "ts_t_fresh"

ISOLATION = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

# One statement: the functions under test first, then the plain reads of the same statement.
OBSERVE = """
SELECT token_store.jwt_valid(%(tok)s) AS valid,
       token_store.jwt_introspect(%(tok)s) AS intro,
       (SELECT k.state FROM token_store.keys k WHERE k.kid = %(kid)s) AS key_state,
       (SELECT t.revoked_at IS NOT NULL FROM token_store.tokens t
         WHERE t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(%(tok)s, 'UTF8'))) AS revoked,
       EXISTS (SELECT 1 FROM token_store.subject_revocations s
                WHERE s.subject = %(sub)s AND s.revoked_before >= pg_catalog.to_timestamp(%(iat)s))
         AS subject_revoked,
       (SELECT s.ended_at IS NOT NULL FROM token_store.sessions s WHERE s.id = %(sid)s::uuid) AS session_ended
"""


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB) as name:
        conn = ts.connect(name)
        # a table B has not touched: reading it takes a new lock, and with it B takes in every
        # invalidation other sessions have committed meanwhile
        conn.execute("CREATE TABLE fresh_other (n int)")
        yield name


@dataclass
class Target:
    """A token B watches, with what the plain reads need to judge it."""
    tok: str
    kid: str
    sub: str
    iat: int
    sid: str | None = None
    require_stored: bool = True
    # tokens that verify before and after the change: B's warm-up
    warm: list = field(default_factory=list)


def observe(ts, conn, t: Target) -> dict:
    cur = conn.execute(OBSERVE, {"tok": t.tok, "kid": t.kid, "sub": t.sub, "iat": t.iat, "sid": t.sid})
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def plain_reason(obs: dict, require_stored: bool):
    """The refusal that the plain reads of the same statement imply (None: the token verifies)."""
    if obs["key_state"] in (None, "retired"):
        return "unknown_key"
    if obs["revoked"] is None and require_stored:
        return "not_stored"
    if obs["revoked"]:
        return "revoked"
    if obs["subject_revoked"]:
        return "subject_revoked"
    if obs["session_ended"]:
        return "session_ended"
    return None


def check(ts, conn, t: Target, expected, when: str):
    """B's next statement (jwt_valid alone), then one with the functions and the plain reads: the
    reads show the `expected` state, and the functions of both statements agree with them. Nothing
    commits between the two, so under READ COMMITTED too the reads are what the first one saw."""
    alone = ts.one(conn, "SELECT token_store.jwt_valid(%s)", (t.tok,))
    obs = observe(ts, conn, t)
    seen = plain_reason(obs, t.require_stored)
    assert seen == expected, f"{when}: B's own SELECT should imply {expected!r}, it implies {seen!r} ({obs})"
    assert alone is (expected is None), (
        f"{when}: B's next statement: jwt_valid {alone} although B's SELECT shows {expected or 'a valid token'}")
    if expected is None:
        assert obs["valid"] is True, f"{when}: jwt_valid false although B's SELECT shows a valid token ({obs})"
        assert obs["intro"]["active"] is True, f"{when}: {obs['intro']}"
    else:
        assert obs["valid"] is False, f"{when}: jwt_valid true although B's SELECT shows {expected} ({obs})"
        assert obs["intro"] == {"active": False, "reason": expected}, f"{when}: {obs['intro']}"


def hs_key(ts, conn, kid):
    return ts.create_key(conn, kid, "HS256")


def token_of(ts, secret, kid, sub, **extra):
    claims = ts.claims(sub=sub, **extra)
    claims["iat"] -= 5  # strictly before any revocation below, whatever the clock's resolution
    return ts.mint(claims, secret, "HS256", kid), claims["iat"]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- the changes A commits: setup(ts, a) -> Target; change(ts, a, t); (before, after) ----------

def setup_key(ts, a, retired=False):
    kid = unique("fr-k")
    secret = hs_key(ts, a, kid)
    tok, iat = token_of(ts, secret, kid, unique("fr-sub"))
    ts.store(a, tok)
    warm_kid = unique("fr-warm")
    warm_secret = hs_key(ts, a, warm_kid)
    warm, _ = token_of(ts, warm_secret, warm_kid, unique("fr-sub"))
    ts.store(a, warm)
    if retired:
        a.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid,))
    return Target(tok, kid, "none", iat, warm=[warm])


def setup_created(ts, a):
    t = setup_key(ts, a)
    t.kid = unique("fr-new")
    t.tok, t.iat = None, None
    return t


def setup_session(ts, a):
    t = setup_key(ts, a)
    pair = ts.one(a, "SELECT token_store.session_start(%s, kid => %s)", (Jsonb({"sub": unique("fr-sess")}), t.kid))
    claims = ts.verify(a, pair["access_token"])
    return Target(pair["access_token"], t.kid, claims["sub"], claims["iat"], sid=pair["session_id"], warm=t.warm)


def setup_subject(ts, a):
    t = setup_key(ts, a)
    secret = ts.new_secret()
    kid = unique("fr-subj")
    ts.create_key(a, kid, "HS256", secret)
    sub = unique("fr-subject")
    tok, iat = token_of(ts, secret, kid, sub)
    # deny-list mode in B: the token is not stored, so the subject revocation alone refuses it
    return Target(tok, kid, sub, iat, require_stored=False, warm=t.warm)


CHANGES = {
    "retire key": (setup_key, lambda ts, a, t: a.execute(
        "SELECT token_store.set_key_state(%s, 'retired')", (t.kid,)), None, "unknown_key"),
    "delete key": (setup_key, lambda ts, a, t: a.execute(
        "DELETE FROM token_store.signing_keys WHERE kid = %s", (t.kid,)), None, "unknown_key"),
    "create key": (setup_created, None, "unknown_key", None),
    "re-activate key": (lambda ts, a: setup_key(ts, a, retired=True), lambda ts, a, t: a.execute(
        "SELECT token_store.set_key_state(%s, 'active')", (t.kid,)), "unknown_key", None),
    "revoke token": (setup_key, lambda ts, a, t: ts.revoke(a, t.tok, "fresh reads"), None, "revoked"),
    "revoke subject": (setup_subject, lambda ts, a, t: a.execute(
        "SELECT token_store.jwt_revoke_subject(%s)", (t.sub,)), None, "subject_revoked"),
    "end session": (setup_session, lambda ts, a, t: a.execute(
        "SELECT token_store.session_end(%s::uuid)", (t.sid,)), None, "session_ended"),
}


def warm_up(ts, b, t: Target):
    if not t.require_stored:
        b.execute("SET token_store.require_stored = off")
    for _ in range(3):
        for w in t.warm:
            assert ts.valid(b, w) is True
        if t.tok is not None:
            ts.valid(b, t.tok)


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("isolation", ISOLATION)
def test_change_seen_inside_open_transaction(ts, db, isolation, change):
    setup, apply, before, after = CHANGES[change]
    a, b = ts.connect(db), ts.connect(db)
    t = setup(ts, a)
    warm_up(ts, b, t)
    if change != "create key":
        check(ts, b, t, before, "autocommit, before the change")

    b.execute(f"BEGIN ISOLATION LEVEL {isolation}")
    if change == "create key":
        # B observes a token of a key that does not exist yet; A commits key and row together
        secret = ts.new_secret()
        t.tok, t.iat = token_of(ts, secret, t.kid, unique("fr-sub"))
        check(ts, b, t, before, f"{isolation}: first statement, before the change")
        with a.transaction():
            ts.create_key(a, t.kid, "HS256", secret)
            ts.store(a, t.tok)
    else:
        check(ts, b, t, before, f"{isolation}: first statement, before the change")
        apply(ts, a, t)

    if isolation == "READ COMMITTED":
        check(ts, b, t, after, f"{isolation}: next statement after A committed")
        b.execute("SELECT count(*) FROM fresh_other")
        check(ts, b, t, after, f"{isolation}: after B took in the invalidations")
    else:
        # the transaction's snapshot: A's commit is not visible to B's SELECTs, nor to the functions
        check(ts, b, t, before, f"{isolation}: next statement after A committed (B's snapshot)")
        b.execute("SELECT count(*) FROM fresh_other")
        check(ts, b, t, before, f"{isolation}: after B took in A's invalidations (still B's snapshot)")
    b.execute("COMMIT")
    check(ts, b, t, after, f"{isolation}: after B's COMMIT")
    for w in t.warm:
        assert ts.valid(b, w) is True


def test_cursor_fetched_across_revocation_and_key_retirement(ts, db):
    """A cursor's query reads under the snapshot of its DECLARE: the rows fetched after A revoked a
    token and retired a key are judged as the cursor's own columns show them (before the change),
    whether or not B took in A's invalidations between two FETCHes; a new statement sees the change."""
    a, b = ts.connect(db), ts.connect(db)
    kid1, kid2 = unique("fr-cur1"), unique("fr-cur2")
    s1, s2 = hs_key(ts, a, kid1), hs_key(ts, a, kid2)
    a.execute("DROP TABLE IF EXISTS fresh_cursor")
    a.execute("CREATE TABLE fresh_cursor (n int PRIMARY KEY, kid text, tok text)")
    toks = {}
    for n in range(1, 9):
        kid, secret = (kid1, s1) if n <= 6 else (kid2, s2)
        toks[n], _ = token_of(ts, secret, kid, f"fr-cursor-{n}")
        ts.store(a, toks[n])
        a.execute("INSERT INTO fresh_cursor VALUES (%s, %s, %s)", (n, kid, toks[n]))
    for _ in range(3):
        assert ts.valid(b, toks[1]) and ts.valid(b, toks[7])

    b.execute("BEGIN")
    b.execute("""
        DECLARE c CURSOR FOR
        SELECT n, token_store.jwt_valid(tok) AS valid, token_store.jwt_introspect(tok) ->> 'reason' AS reason,
               (SELECT t.revoked_at IS NOT NULL FROM token_store.tokens t
                 WHERE t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(tok, 'UTF8'))) AS revoked,
               (SELECT k.state FROM token_store.keys k WHERE k.kid = f.kid) AS key_state
          FROM fresh_cursor f ORDER BY n""")
    rows = b.execute("FETCH 2 FROM c").fetchall()
    assert ts.revoke(a, toks[3], "cursor") is True
    assert ts.revoke(a, toks[5], "cursor") is True
    a.execute("SELECT token_store.set_key_state(%s, 'retired')", (kid2,))
    rows += b.execute("FETCH 2 FROM c").fetchall()
    b.execute("SELECT count(*) FROM fresh_other")  # B takes in A's invalidations
    rows += b.execute("FETCH ALL FROM c").fetchall()
    assert [r[0] for r in rows] == list(range(1, 9))
    for n, valid, reason, revoked, key_state in rows:
        # the cursor's own columns, read under its snapshot, show no change
        assert (revoked, key_state) == (False, "active"), (n, revoked, key_state)
        assert valid is True and reason is None, f"row {n}: {valid} {reason} although its row shows a valid token"
    b.execute("CLOSE c")
    # a new statement of the same READ COMMITTED transaction sees the change
    got = {n: ts.introspect(b, toks[n]).get("reason") for n in toks}
    assert got == {1: None, 2: None, 3: "revoked", 4: None, 5: "revoked", 6: None,
                   7: "unknown_key", 8: "unknown_key"}
    b.execute("COMMIT")
    a.execute("DROP TABLE fresh_cursor")


def test_update_setting_jwt_valid(ts, db):
    """`UPDATE t SET ok = token_store.jwt_valid(tok)` completes and writes the right value into
    every row, also with a row trigger on t and rows revoked and keys retired by another session
    just before; the statement's effects on t are whole (no row updated twice, none skipped)."""
    a, b = ts.connect(db), ts.connect(db)
    kid, gone = unique("fr-upd"), unique("fr-upd-gone")
    secret, gone_secret = hs_key(ts, a, kid), hs_key(ts, a, gone)
    b.execute("DROP TABLE IF EXISTS fresh_upd, fresh_upd_log")
    b.execute("CREATE TABLE fresh_upd (n int PRIMARY KEY, tok text, ok boolean, expected boolean)")
    b.execute("CREATE TABLE fresh_upd_log (n int, ok boolean)")
    b.execute("""
        CREATE FUNCTION pg_temp.fresh_upd_log() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO fresh_upd_log VALUES (NEW.n, NEW.ok);
            RETURN NEW;
        END $$""")
    b.execute("CREATE TRIGGER fresh_upd_log AFTER UPDATE ON fresh_upd FOR EACH ROW EXECUTE FUNCTION pg_temp.fresh_upd_log()")
    rows = []
    for n in range(1, 201):
        kind = n % 5
        if kind == 4:
            tok, _ = token_of(ts, gone_secret, gone, f"fr-upd-{n}")
        else:
            tok, _ = token_of(ts, secret, kid, f"fr-upd-{n}")
        if kind != 3:
            ts.store(a, tok)
        rows.append((n, tok, kind))
    with b.cursor() as cur:
        cur.executemany("INSERT INTO fresh_upd (n, tok) VALUES (%s, %s)", [(n, tok) for n, tok, _ in rows])
    for n, tok, kind in rows:
        assert ts.valid(b, tok) is (kind != 3)  # warm: every key parsed, relations resolved
    for n, tok, kind in rows:
        if kind == 2:
            assert ts.revoke(a, tok) is True
    a.execute("SELECT token_store.set_key_state(%s, 'retired')", (gone,))

    b.execute("BEGIN")
    b.execute("SELECT count(*) FROM fresh_upd")  # B holds its locks: the UPDATE takes no new one
    cur = b.execute("UPDATE fresh_upd SET ok = token_store.jwt_valid(tok), expected = true RETURNING n, ok")
    returned = dict(cur.fetchall())
    assert cur.rowcount == 200 and len(returned) == 200
    b.execute("COMMIT")
    want = {n: kind in (0, 1) for n, _, kind in rows}
    assert returned == want
    assert dict(ts.rows(b, "SELECT n, ok FROM fresh_upd")) == want
    assert ts.one(b, "SELECT count(*) FROM fresh_upd WHERE expected") == 200
    assert sorted(ts.rows(b, "SELECT n, ok FROM fresh_upd_log")) == sorted(want.items())
    # one row version per row: nothing updated twice
    assert ts.one(b, "SELECT count(*) FROM fresh_upd") == 200
    b.execute("DROP TABLE fresh_upd, fresh_upd_log")


VOLATILITY = {"v": "VOLATILE", "s": "STABLE", "i": "IMMUTABLE"}


def test_verify_in_a_writing_statement_reads_as_its_volatility_says(ts, db):
    """What jwt_valid sees of rows its own statement wrote is what a SQL function of the same
    declared volatility sees: a STABLE one reads under the statement's snapshot (not the statement's
    own writes), a VOLATILE one takes a new snapshot after a command-counter increment (the writes
    made so far). Here an UPDATE of token_store.tokens revokes rows and its RETURNING asks both."""
    a = ts.connect(db)
    vol = dict(ts.rows(a, "SELECT p.proname, p.provolatile FROM pg_catalog.pg_proc p "
                          "WHERE p.pronamespace = 'token_store'::regnamespace "
                          "AND p.proname IN ('jwt_verify', 'jwt_valid', 'jwt_introspect')"))
    assert len(set(vol.values())) == 1 and vol["jwt_valid"] in "sv", vol
    a.execute(f"""
        CREATE FUNCTION pg_temp.revoked_as_sql(tok text) RETURNS boolean LANGUAGE sql
        {VOLATILITY[vol["jwt_valid"]]} AS $$
            SELECT t.revoked_at IS NOT NULL FROM token_store.tokens t
             WHERE t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(tok, 'UTF8'))
        $$""")
    kid = unique("fr-vol")
    secret = hs_key(ts, a, kid)
    toks = [token_of(ts, secret, kid, f"fr-vol-{n}")[0] for n in range(6)]
    for t in toks:
        ts.store(a, t)
    a.execute("DROP TABLE IF EXISTS fresh_vol")
    a.execute("CREATE TABLE fresh_vol (n int PRIMARY KEY, tok text)")
    with a.cursor() as cur:
        cur.executemany("INSERT INTO fresh_vol VALUES (%s, %s)", list(enumerate(toks)))
    for t in toks:
        assert ts.valid(a, t) is True
    rows = ts.rows(a, """
        UPDATE token_store.tokens t SET revoked_at = pg_catalog.now()
          FROM fresh_vol v
         WHERE t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(v.tok, 'UTF8')) AND v.n >= 3
        RETURNING v.n, token_store.jwt_valid(v.tok), pg_temp.revoked_as_sql(v.tok)""")
    assert sorted(n for n, _, _ in rows) == [3, 4, 5]
    for n, valid, revoked in rows:
        assert valid is (not revoked), (
            f"row {n}: jwt_valid {valid}, but a {VOLATILITY[vol['jwt_valid']]} SQL function in the same "
            f"statement reads revoked = {revoked}")
    for n, t in enumerate(toks):
        assert ts.valid(a, t) is (n < 3)
    a.execute("DROP TABLE fresh_vol")


# ---- key changes that fire no statement trigger ------------------------------------------------

def key_target(ts, a, prefix):
    kid = unique(prefix)
    secret = hs_key(ts, a, kid)
    tok, iat = token_of(ts, secret, kid, unique("fr-sub"))
    ts.store(a, tok)
    return Target(tok, kid, "none", iat), secret


def warm_sessions(ts, n, t):
    out = [ts.connect(DB) for _ in range(n)]
    for b in out:
        for _ in range(3):
            check(ts, b, t, None, "warm-up")
    return out


def test_replica_role_writer(ts, db):
    """session_replication_role = replica, as the logical apply worker and data-copy tools run: no
    statement trigger fires, yet every warm session honours each key change at its next statement."""
    a = ts.connect(db)
    t, secret = key_target(ts, a, "fr-repl")
    sessions = warm_sessions(ts, 2, t)
    txn = ts.connect(db)  # one warm session sits in an open READ COMMITTED transaction throughout
    for _ in range(3):
        check(ts, txn, t, None, "warm-up")
    txn.execute("BEGIN")
    check(ts, txn, t, None, "in transaction")

    def everyone(expected, what):
        for b in (*sessions, txn):
            check(ts, b, t, expected, what)

    a.execute("SET session_replication_role = replica")
    a.execute("SELECT token_store.set_key_state(%s, 'retired')", (t.kid,))
    everyone("unknown_key", "set_key_state retired (replica role)")
    a.execute("UPDATE token_store.signing_keys SET state = 'active', version = version + 1 WHERE kid = %s", (t.kid,))
    everyone(None, "plain UPDATE back to active (replica role)")
    a.execute("CREATE TEMP TABLE fresh_saved_key AS SELECT * FROM token_store.signing_keys WHERE kid = %s", (t.kid,))
    a.execute("DELETE FROM token_store.signing_keys WHERE kid = %s", (t.kid,))
    everyone("unknown_key", "plain DELETE (replica role)")
    a.execute("INSERT INTO token_store.signing_keys SELECT * FROM fresh_saved_key")
    everyone(None, "plain INSERT of the same row (replica role)")
    a.execute("DELETE FROM token_store.signing_keys WHERE kid = %s", (t.kid,))
    everyone("unknown_key", "deleted again")
    assert ts.one(a, "SELECT token_store.create_key(%s, 'HS256', %s)", (t.kid, secret)) == t.kid
    everyone(None, "create_key (replica role)")
    txn.execute("COMMIT")


def test_disable_trigger_all(ts, db):
    """A superuser's ALTER TABLE token_store.signing_keys DISABLE TRIGGER ALL, then key changes:
    each is honoured at the warm sessions' next statement (the sessions read the keys once more
    after the ALTER, so its own invalidation is spent before the changes come)."""
    a = ts.connect(db)
    t, secret = key_target(ts, a, "fr-dis")
    other, other_secret = key_target(ts, a, "fr-dis-new")
    sessions = warm_sessions(ts, 2, t)
    a.execute("ALTER TABLE token_store.signing_keys DISABLE TRIGGER ALL")
    try:
        for b in sessions:
            for _ in range(2):
                check(ts, b, t, None, "after the ALTER TABLE")
        a.execute("UPDATE token_store.signing_keys SET state = 'retired', version = version + 1 WHERE kid = %s",
                  (t.kid,))
        for b in sessions:
            check(ts, b, t, "unknown_key", "plain UPDATE to retired, triggers disabled")
        a.execute("SELECT token_store.set_key_state(%s, 'verify_only')", (t.kid,))
        for b in sessions:
            check(ts, b, t, None, "set_key_state verify_only, triggers disabled")
        a.execute("DELETE FROM token_store.signing_keys WHERE kid = %s", (t.kid,))
        for b in sessions:
            check(ts, b, t, "unknown_key", "DELETE, triggers disabled")
        ts.create_key(a, t.kid, "HS256", secret)
        for b in sessions:
            check(ts, b, t, None, "create_key, triggers disabled")
        # a kid the sessions never saw: unknown to them, then created
        a.execute("DELETE FROM token_store.signing_keys WHERE kid = %s", (other.kid,))
        for b in sessions:
            check(ts, b, other, "unknown_key", "other key deleted")
        ts.create_key(a, other.kid, "HS256", other_secret)
        for b in sessions:
            check(ts, b, other, None, "other key created, triggers disabled")
    finally:
        a.execute("ALTER TABLE token_store.signing_keys ENABLE TRIGGER ALL")


RESTORE_DB = "ts_t_fresh_restore_src"


@pytest.mark.parametrize("how", ["--disable-triggers", "replica role"])
def test_restore_keys_data_only(ts, db, tmp_path, how):
    """pg_dump of the keys' data from another database (same cluster, same encryption key), then
    pg_restore --data-only into a database with warm sessions: they honour the restored keys at
    their next statement, whether the restore disabled the triggers or ran as replica."""
    ts.fresh_db(RESTORE_DB)
    try:
        src = ts.connect(RESTORE_DB)
        a = ts.connect(db)
        kid = unique("fr-restored")
        secret = hs_key(ts, src, kid)
        tok, iat = token_of(ts, secret, kid, unique("fr-sub"))
        t = Target(tok, kid, "none", iat, require_stored=False)
        warm_t, _ = key_target(ts, a, "fr-restore-warm")
        warm_t.require_stored = False
        sessions = [ts.connect(db) for _ in range(2)]
        for b in sessions:
            b.execute("SET token_store.require_stored = off")
            for _ in range(3):
                check(ts, b, warm_t, None, "warm-up")
                check(ts, b, t, "unknown_key", "before the restore")

        dump = tmp_path / "keys.dump"
        base = ["-h", ts.host, "-p", str(ts.port), "-U", "postgres"]
        done = subprocess.run([str(ts.pgbin / "pg_dump"), *base, "-Fc", "--data-only", "-t", "token_store.signing_keys",
                               "-f", str(dump), RESTORE_DB], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        cmd = [str(ts.pgbin / "pg_restore"), *base, "--data-only", "-d", DB, str(dump)]
        env = None
        if how == "--disable-triggers":
            cmd.insert(-1, "--disable-triggers")
        else:
            env = dict(os.environ, PGOPTIONS="-c session_replication_role=replica")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert ts.one(a, "SELECT count(*) FROM token_store.keys WHERE kid = %s", (kid,)) == 1
        for b in sessions:
            check(ts, b, t, None, f"after pg_restore ({how})")
            check(ts, b, warm_t, None, f"after pg_restore ({how})")
    finally:
        ts.close_all()
        ts.drop_db(RESTORE_DB)
