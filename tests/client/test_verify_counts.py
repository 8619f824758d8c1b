"""stats() counts each verification a statement runs once (issue 19, item 5).

The planner may evaluate a STABLE call with constant arguments while it estimates a plan: in
`WHERE owner = jwt_verify('<token>') ->> 'sub'` the selectivity estimate evaluates `jwt_verify`.
Such a plan-time evaluation is not counted; the executor's evaluation is, once. EXPLAIN (which only
plans) counts nothing.
"""

import pytest
from psycopg import sql

DB = "ts_t_verify_counts"


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB) as name:
        yield name


def ok_count(ts, conn) -> int:
    return int(ts.stats(conn)["verifications"].get("ok", 0))


def test_plan_time_evaluation_is_not_counted(ts, db):
    conn = ts.connect(db)
    if not ts.stats(conn)["counters_shared"]:
        pytest.skip("needs the shared counters (preloaded library)")
    ts.create_key(conn, "vc", "HS256")
    token = ts.issue(conn, ts.claims(sub="vc-owner"), kid="vc")
    conn.execute("CREATE TABLE vc_rows (owner text)")
    conn.execute("INSERT INTO vc_rows SELECT 'other-' || g FROM generate_series(1, 100) g")
    conn.execute("INSERT INTO vc_rows VALUES ('vc-owner')")
    conn.execute("ANALYZE vc_rows")
    query = sql.SQL("SELECT count(*) FROM vc_rows WHERE owner = token_store.jwt_verify({}) ->> 'sub'").format(
        sql.Literal(token))

    plan = "\n".join(r[0] for r in ts.rows(conn, sql.SQL("EXPLAIN ") + query))
    before = ok_count(ts, conn)
    ts.rows(conn, sql.SQL("EXPLAIN ") + query)
    assert ok_count(ts, conn) == before, plan  # planning alone counts nothing

    before = ok_count(ts, conn)
    assert ts.one(conn, query) == 1
    # a STABLE call with a constant argument in a filter is evaluated once per row scanned, or
    # once when the plan makes it an InitPlan/Result; the counts equal the executor's evaluations
    executed = ok_count(ts, conn) - before
    analyzed = ts.rows(conn, sql.SQL("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) ") + query)
    assert executed >= 1
    # the same query again: the same count, whatever the planner did while planning
    before = ok_count(ts, conn)
    assert ts.one(conn, query) == 1
    assert ok_count(ts, conn) - before == executed, analyzed


def test_one_verify_counts_one(ts, db):
    conn = ts.connect(db)
    if not ts.stats(conn)["counters_shared"]:
        pytest.skip("needs the shared counters (preloaded library)")
    ts.create_key(conn, "vc1", "HS256")
    token = ts.issue(conn, ts.claims(sub="vc-one"), kid="vc1")
    before = ok_count(ts, conn)
    assert ts.valid(conn, token) is True
    assert ok_count(ts, conn) - before == 1
    # a constant token compared with a column: planned with an estimate, counted once
    conn.execute("CREATE TABLE vc_one (owner text)")
    conn.execute("INSERT INTO vc_one VALUES ('vc-one')")
    conn.execute("ANALYZE vc_one")
    before = ok_count(ts, conn)
    q = sql.SQL("SELECT count(*) FROM vc_one WHERE owner = token_store.jwt_verify({}) ->> 'sub'").format(
        sql.Literal(token))
    assert ts.one(conn, q) == 1
    assert ok_count(ts, conn) - before == 1
