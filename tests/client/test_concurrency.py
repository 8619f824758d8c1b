"""Several sessions at once: storing, verifying, revoking and purging in parallel gives no errors
besides the expected rejections, no deadlocks and no duplicate rows; and a committed revocation is
seen at once by every other session."""

import threading
import time

import jwt
import psycopg
import pytest

DB = "ts_t_concurrency"
KID = "k-conc"
THREADS = 4
OPS = 40  # iterations per thread, each a store + verify + shared store, some revokes and purges
SHARED = 30  # tokens every thread stores (and half of them revokes) at the same time
EXPIRED = 40  # rows expired before the threads start, for their purges to race on


@pytest.fixture(scope="module")
def secret(ts):
    ts.fresh_db(DB)
    conn = ts.connect(DB)
    yield ts.create_key(conn, KID, "HS256")
    ts.drop_db(DB)


def test_parallel_store_verify_revoke_purge(ts, secret):
    main = ts.connect(DB)
    expired_sub = "expired-batch"
    main.execute("SELECT token_store.jwt_issue(jsonb_build_object('sub', %s::text, 'n', g), '1 second') "
                 "FROM generate_series(1, %s) g", (expired_sub, EXPIRED))
    ts.wait_for(lambda: ts.one(main, "SELECT count(*) FROM token_store.tokens WHERE subject = %s AND expires_at < now()",
                               (expired_sub,)) == EXPIRED, 10, "the batch to expire")

    shared = [ts.mint(ts.claims(sub="shared"), secret, "HS256", KID) for _ in range(SHARED)]
    own = [[ts.mint(ts.claims(sub=f"own-{i}"), secret, "HS256", KID) for _ in range(OPS)] for i in range(THREADS)]
    conns = [ts.connect(DB) for _ in range(THREADS)]
    for c in conns:
        ts.set_guc(c, "statement_timeout", "30s")
        ts.set_guc(c, "lock_timeout", "20s")
    barrier = threading.Barrier(THREADS)
    results = [{"shared_ids": {}, "revoke_wins": [], "purged": 0, "rejected": 0, "errors": []} for _ in range(THREADS)]

    def work(i):
        try:
            run_ops(i)
        except Exception as e:  # anything else (an assertion, a lost connection) must fail the test too
            results[i]["errors"].append(f"thread {i} died: {e!r}")

    def run_ops(i):
        c, r = conns[i], results[i]

        def attempt(what, fn, allowed=()):
            try:
                return fn()
            except psycopg.Error as e:
                if e.sqlstate == "28000" and e.diag.message_primary in {f"token rejected: {a}" for a in allowed}:
                    r["rejected"] += 1
                else:
                    r["errors"].append(f"thread {i} {what}: {e.sqlstate} {e}")
                return None

        barrier.wait()
        for j in range(OPS):
            t, s = own[i][j], shared[j % SHARED]
            attempt("store own", lambda: ts.store(c, t))
            claims = attempt("verify own", lambda: ts.verify(c, t))
            if claims != jwt.decode(t, options={"verify_signature": False}):
                r["errors"].append(f"thread {i}: verify gave {claims}")
            # another thread may have revoked the shared token already
            sid = attempt("store shared", lambda: ts.store(c, s), allowed=("revoked",))
            if sid is not None:
                r["shared_ids"].setdefault(s, set()).add(sid)
            attempt("verify shared", lambda: ts.verify(c, s), allowed=("revoked",))
            if j % 3 == 0 and attempt("revoke own", lambda: ts.revoke(c, t, "own")) is not True:
                r["errors"].append(f"thread {i}: revoking its own token {j} did not return true")
            if j % 2 == 0:
                won = attempt("revoke shared", lambda: ts.revoke(c, s, f"thread {i}"))
                r["revoke_wins"].append((s, won))
            if j % 10 == 0:
                r["purged"] += attempt("purge", lambda: ts.one(c, "SELECT token_store.purge(5)")) or 0

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung (deadlock?)"
    assert time.monotonic() - started < 120

    errors = [e for r in results for e in r["errors"]]
    assert errors == [], "\n".join(errors[:20])

    # each shared token has one row and one id, whoever stored it
    ids = {}
    for r in results:
        for tok, s_ids in r["shared_ids"].items():
            ids.setdefault(tok, set()).update(s_ids)
    assert all(len(v) == 1 for v in ids.values()), "one token got two row ids"
    assert ts.one(main, "SELECT count(*) FROM token_store.tokens WHERE subject = 'shared'") == SHARED
    # each revoked shared token was revoked by exactly one call
    wins = {}
    for r in results:
        for tok, won in r["revoke_wins"]:
            assert won is not None, "jwt_revoke of a shared token failed"
            wins[tok] = wins.get(tok, 0) + int(won)
    assert wins and all(n == 1 for n in wins.values()), f"revocation winners per token: {sorted(wins.values())}"
    for tok in wins:
        ts.assert_rejected(main, tok, "revoked")

    # own tokens: all stored once, every third revoked
    for i in range(THREADS):
        assert ts.one(main, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (f"own-{i}",)) == OPS
        assert ts.one(main, "SELECT count(*) FROM token_store.tokens WHERE subject = %s AND revoked_at IS NOT NULL",
                      (f"own-{i}",)) == len(range(0, OPS, 3))

    # every expired row was deleted exactly once, by one purge or another; nothing live was
    leftover = ts.one(main, "SELECT token_store.purge()")
    assert sum(r["purged"] for r in results) + leftover == EXPIRED
    assert ts.one(main, "SELECT count(*) FROM token_store.tokens WHERE subject = %s", (expired_sub,)) == 0


def test_revocation_is_seen_at_once_by_every_session(ts, secret):
    revoker, *others = [ts.connect(DB) for _ in range(4)]
    tokens = [r[0] for r in ts.rows(
        revoker, "SELECT token_store.jwt_issue(jsonb_build_object('sub', 'rv', 'n', g)) FROM generate_series(1, 300) g")]
    stale = []
    for n, token in enumerate(tokens):
        watcher = others[n % len(others)]
        assert ts.valid(watcher, token) is True
        assert ts.revoke(revoker, token, "seen everywhere?") is True  # autocommit: committed on return
        stale += [(n, k) for k, o in enumerate(others) if ts.valid(o, token) is not False]
    assert stale == [], f"(token, session) pairs still seeing a revoked token as valid: {stale[:10]}"
