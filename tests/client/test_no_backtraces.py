"""No Rust backtrace reaches a client or the server log, whatever RUST_BACKTRACE says (issue 20,
item 4); cancels and timeouts that land inside the extension are PostgreSQL's plain errors.

A throwaway cluster is started with RUST_BACKTRACE=1 and RUST_LIB_BACKTRACE=1 in its environment.
An open transaction holds an ACCESS EXCLUSIVE lock on token_store.tokens, so that a jwt_issue (which
writes the table), a jwt_revoke and a jwt_valid (which reads it) wait for the lock inside the
extension; statement_timeout, lock_timeout and pg_cancel_backend then end those waits there."""

import os
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest

from throwaway_cluster import clusters

PORT = 54434
DB = "ts_backtrace"
KID = "k-bt"
# what a Rust backtrace looks like in a DETAIL or in the log: numbered frames and source locations
FRAME = re.compile(r"^\s*\d+: \S|at \S+\.rs:\d+|stack backtrace|std::backtrace|rust_begin_unwind", re.M)


@pytest.fixture(scope="module")
def cl(ts):
    saved = {k: os.environ.get(k) for k in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    os.environ.update(RUST_BACKTRACE="1", RUST_LIB_BACKTRACE="1")
    try:
        with clusters("backtrace-", Path(os.environ["TS_PGBIN"])) as make:
            c = make("bt", PORT)
            c.init(DB, {"token_store.purge_interval": "0"})
            c.start()
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            admin = c.connect()
            admin.execute(f"CREATE DATABASE {DB}")
            su = c.connect(DB)
            su.execute("CREATE EXTENSION token_store")
            ts.create_key(su, KID, "HS256")
            yield c
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def environ_of_postmaster(c) -> str:
    pid = (c.data / "postmaster.pid").read_text().split()[0]
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def hold_lock(c):
    locker = c.connect(DB)
    locker.execute("BEGIN")
    locker.execute("LOCK TABLE token_store.tokens IN ACCESS EXCLUSIVE MODE")
    return locker


CALLS = {
    "jwt_issue": "SELECT token_store.jwt_issue('{\"sub\": \"bt\"}')",
    "jwt_revoke": "SELECT token_store.jwt_revoke(%s)",
    "jwt_valid": "SELECT token_store.jwt_valid(%s)",
}


def no_backtrace(err: psycopg.Error):
    d = err.diag
    text = "\n".join(x or "" for x in (d.message_primary, d.message_detail, d.message_hint, d.context))
    assert not FRAME.search(text), f"a backtrace reached the client:\n{text[:3000]}"
    assert d.message_detail is None, f"unexpected DETAIL: {d.message_detail[:2000]}"


@pytest.mark.parametrize("how", ["statement_timeout", "lock_timeout", "pg_cancel_backend"])
@pytest.mark.parametrize("call", list(CALLS))
def test_cancels_inside_the_extension_are_plain(ts, cl, how, call):
    assert "RUST_BACKTRACE=1" in environ_of_postmaster(cl)
    su = cl.connect(DB)
    token = ts.issue(su, ts.claims(sub="bt-token"), kid=KID)
    offset = cl.log_size()
    locker = hold_lock(cl)
    conn = cl.connect(DB)
    try:
        if how == "statement_timeout":
            conn.execute("SET statement_timeout = '300ms'")
            expected = ("57014", "canceling statement due to statement timeout")
        elif how == "lock_timeout":
            conn.execute("SET lock_timeout = '300ms'")
            expected = ("55P03", "canceling statement due to lock timeout")
        else:
            pid = conn.info.backend_pid

            def cancel():
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    waiting = ts.one(su, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                     (pid,))
                    if waiting:
                        su.execute("SELECT pg_cancel_backend(%s)", (pid,))
                        return
                    time.sleep(0.05)

            threading.Thread(target=cancel, daemon=True).start()
            expected = ("57014", "canceling statement due to user request")
        with pytest.raises(psycopg.Error) as info:
            conn.execute(CALLS[call], None if call == "jwt_issue" else (token,))
        err = info.value
        assert (err.sqlstate, err.diag.message_primary) == expected, str(err)
        no_backtrace(err)
    finally:
        locker.execute("ROLLBACK")
    time.sleep(0.3)
    log = cl.log_text(offset)
    assert expected[1] in log
    assert not FRAME.search(log), f"a backtrace reached the server log:\n{log[-3000:]}"
