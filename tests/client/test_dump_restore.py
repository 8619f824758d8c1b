"""pg_dump -Fc / pg_restore of a database using token_store: keys, tokens, revocations and subject
revocations come back exactly (same rows, same ciphertexts), and everything still works."""

import subprocess
import time

import jwt
import pytest
from psycopg import sql

SRC, DST = "ts_t_dump_src", "ts_t_dump_dst"
TABLES = ("tokens", "signing_keys", "subject_revocations")


@pytest.fixture
def dbs(ts):
    ts.drop_db(DST)
    ts.fresh_db(SRC)
    yield
    ts.close_all()
    ts.drop_db(SRC)
    ts.drop_db(DST)


def run(ts, tool, *args):
    cmd = [str(ts.pgbin / tool), "-h", ts.host, "-p", str(ts.port), "-U", "postgres", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{tool} failed ({done.returncode}): {done.stderr}"
    assert "error" not in done.stderr.lower(), done.stderr


def table_rows(ts, conn, table):
    return ts.rows(conn, f"SELECT * FROM token_store.{table} ORDER BY 1")


def test_dump_and_restore(ts, dbs, tmp_path):
    src = ts.connect(SRC)
    s256 = ts.create_key(src, "k-256", "HS256")
    s512 = ts.create_key(src, "k-512", "HS512", as_jwk=True)
    ts.create_key(src, "k-old", "HS384")
    src.execute("SELECT token_store.set_key_state('k-old', 'retired')")

    live = [ts.issue(src, {"sub": f"user-{n}", "n": n}, "1 hour", "k-256") for n in range(10)]
    live += [ts.mint(ts.claims(sub=f"ext-{n}"), s512, "HS512", "k-512") for n in range(5)]
    ids = {t: ts.store(src, t) for t in live}
    revoked = [live.pop(0), live.pop(0), live.pop()]
    for t in revoked[:2]:
        assert ts.revoke(src, t, "dump test") is True
    assert ts.one(src, "SELECT token_store.jwt_revoke_id(%s, 'by id')", (ids[revoked[2]],)) is True
    never_stored = ts.mint(ts.claims(sub="outsider"), s256, "HS256", "k-256")
    assert ts.revoke(src, never_stored, "deny-list entry") is True
    revoked.append(never_stored)
    old_of_subject = ts.mint({**ts.claims(sub="gone"), "iat": int(time.time()) - 60}, s256, "HS256", "k-256")
    assert ts.one(src, "SELECT token_store.jwt_revoke_subject('gone', 'left')") == 0

    before = {table: table_rows(ts, src, table) for table in TABLES}
    payloads = ts.rows(src, "SELECT id, token_store.jwt_payload(id) FROM token_store.tokens ORDER BY id")
    keys = ts.rows(src, "SELECT * FROM token_store.keys ORDER BY kid")
    assert len(before["tokens"]) == 16 and len(before["signing_keys"]) == 3 and len(before["subject_revocations"]) == 1

    dump = tmp_path / "src.dump"
    run(ts, "pg_dump", "-Fc", "-f", str(dump), SRC)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DST)))
    run(ts, "pg_restore", "-d", DST, str(dump))

    dst = ts.connect(DST)
    for table in TABLES:
        assert table_rows(ts, dst, table) == before[table], f"token_store.{table} differs after restore"
    assert ts.rows(dst, "SELECT id, token_store.jwt_payload(id) FROM token_store.tokens ORDER BY id") == payloads
    assert ts.rows(dst, "SELECT * FROM token_store.keys ORDER BY kid") == keys

    for t in live:
        assert ts.verify(dst, t) == ts.verify(src, t)
        assert ts.introspect(dst, t)["token_id"] == str(ids[t])
    for t in revoked:
        ts.assert_rejected(dst, t, "revoked")
    ts.set_guc(dst, "token_store.require_stored", "off")
    ts.assert_rejected(dst, old_of_subject, "subject_revoked")
    ts.assert_rejected(dst, ts.mint(ts.claims(), ts.new_secret("HS384"), "HS384", "k-old"), "unknown_key")
    ts.set_guc(dst, "token_store.require_stored", "on")

    # the restored keys sign and verify
    fresh = ts.issue(dst, {"sub": "after-restore"}, "5 minutes", "k-256")
    assert jwt.decode(fresh, s256, algorithms=["HS256"])["sub"] == "after-restore"
    fresh_512 = ts.mint(ts.claims(sub="after-restore-512"), s512, "HS512", "k-512")
    ts.store(dst, fresh_512)
    assert ts.valid(dst, fresh_512) is True
    # and the privileges came along
    assert ts.one(dst, "SELECT has_function_privilege('token_store_app', 'token_store.jwt_verify(text,text,text)', "
                       "'EXECUTE')") is True
    assert ts.one(dst, "SELECT has_function_privilege('public', 'token_store.jwt_verify(text,text,text)', "
                       "'EXECUTE')") is False


def test_sessions_survive_dump_and_restore(ts, dbs, tmp_path):
    src = ts.connect(SRC)
    ts.create_key(src, "k-sess", "HS256")
    start = "SELECT token_store.session_start(%s::jsonb, metadata => %s::jsonb)"
    live = ts.one(src, start, ('{"sub": "dumped", "role": "r"}', '{"device": "phone"}'))
    live = ts.one(src, "SELECT token_store.session_refresh(%s)", (live["refresh_token"],))
    ended = ts.one(src, start, ('{"sub": "dumped"}', '{"device": "laptop"}'))
    assert ts.one(src, "SELECT token_store.session_end(%s)", (ended["session_id"],)) is True
    before = {t: table_rows(ts, src, t) for t in ("sessions", "refresh_tokens")}
    assert len(before["sessions"]) == 2 and len(before["refresh_tokens"]) == 3

    dump = tmp_path / "sessions.dump"
    run(ts, "pg_dump", "-Fc", "-f", str(dump), SRC)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DST)))
    run(ts, "pg_restore", "-d", DST, str(dump))

    dst = ts.connect(DST)
    for table, rows in before.items():
        assert table_rows(ts, dst, table) == rows, f"token_store.{table} differs after restore"
    assert ts.rows(dst, "SELECT session_id::text, generation, metadata FROM token_store.sessions('dumped')") == [
        (live["session_id"], 1, {"device": "phone"})]
    assert ts.verify(dst, live["access_token"])["role"] == "r"
    ts.assert_rejected(dst, ended["access_token"], "session_ended")
    pair = ts.one(dst, "SELECT token_store.session_refresh(%s)", (live["refresh_token"],))
    assert ts.verify(dst, pair["access_token"])["sid"] == live["session_id"]
