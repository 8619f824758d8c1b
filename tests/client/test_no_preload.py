"""Without shared_preload_libraries every SQL function works, and the configuration's dangers are
said out loud.

A throwaway cluster runs with token_store in no preload list (token_store.databases is still set,
as a user who forgot the preload would have it):
- key in postgresql.conf: the key sat in a placeholder any role can read (which a role without
  grants indeed can, in a session that has not loaded the library), so it is not used: the first load
  in a session WARNs so (and that no purge worker runs), and every function that needs the key
  refuses (55000) naming the two fixes, preloading or token_store.encryption_key_file;
- key in token_store.encryption_key_file instead: nothing but the path is ever visible, and the
  functions work the same."""

import os
import re
import shutil
from pathlib import Path

import psycopg
import pytest

from throwaway_cluster import clusters

PORT = 54372
KID = "k-nopreload"


@pytest.fixture(scope="module")
def cluster(ts):
    with clusters("nopreload-", Path(os.environ["TS_PGBIN"])) as make:
        c = make("nopreload", PORT)
        c.init("postgres", {"shared_preload_libraries": "''"})
        c.start()
        c.connect().execute("CREATE ROLE nobody LOGIN")
        yield c


def key_text(c) -> str:
    conf = (c.data / "token_store_key.conf").read_text()
    return re.search(r"token_store\.encryption_key\s*=\s*'([^']+)'", conf).group(1)


def nobody_sees(c, setting: str) -> str:
    with psycopg.connect(host="127.0.0.1", port=c.port, dbname="postgres", user="nobody", autocommit=True) as conn:
        return conn.execute(f"SHOW {setting}").fetchone()[0]


def exercise(ts, c, conn):
    """Every kind of function works in this session; returns the WARNINGs it got."""
    secret = ts.create_key(conn, KID, "HS256")
    token = ts.issue(conn, ts.claims(sub="np-alice"), kid=KID)
    assert ts.verify(conn, token)["sub"] == "np-alice"
    assert ts.valid(conn, ts.mint(ts.claims(sub="np-bob"), secret, "HS256", KID)) is False  # not stored
    token_id = ts.one(conn, "SELECT (token_store.jwt_introspect(%s)->>'token_id')::uuid", (token,))
    assert ts.one(conn, "SELECT token_store.jwt_payload(%s)->>'sub'", (token_id,)) == "np-alice"
    assert ts.revoke(conn, token) is True
    ts.assert_rejected(conn, token, "revoked")
    assert ts.one(conn, "SELECT token_store.purge()") == 0
    assert ts.one(conn, "SELECT token_store.reencrypt()") == 0
    stats = ts.stats(conn)
    assert stats["counters_shared"] is False and stats["worker_pids"] == [] and stats["revoked"] == 1
    assert ts.one(conn, "SELECT current_setting('token_store.encryption_key')") in ("", "(hidden)")


def test_key_in_the_configuration_is_not_used(ts, cluster):
    """A key every role can read with SHOW is a key nobody should run with: CREATE EXTENSION warns,
    and every function that needs the key refuses with the two fixes (preload, or the key file)."""
    c = cluster
    key = key_text(c)
    # PostgreSQL's placeholder, before any session loaded the library: what the README warns of
    assert nobody_sees(c, "token_store.encryption_key") == key
    conn = c.connect()
    warnings = []
    conn.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
    conn.execute("CREATE EXTENSION token_store")
    messages = [m for sev, m, _ in warnings if sev == "WARNING"]
    assert any(m.startswith("token_store.encryption_key is configured but token_store is not in "
                            "shared_preload_libraries") for m in messages), warnings
    assert any("no purge worker runs" in m for m in messages), warnings
    assert all(key not in (m or "") + (h or "") for _, m, h in warnings)
    for call in ("SELECT token_store.create_key('k-np-refused', 'HS256', 'a-secret-of-at-least-32-bytes-long!!')",
                 "SELECT token_store.reencrypt()"):
        with ts.expect_error("55000", "token_store.encryption_key is not used because token_store is not in "
                                      "shared_preload_libraries") as info:
            conn.execute(call)
        hint = info.value.diag.message_hint
        assert "shared_preload_libraries" in hint and "token_store.encryption_key_file" in hint, hint
        assert key not in str(info.value) + hint
    assert ts.one(conn, "SELECT count(*) FROM token_store.keys") == 0
    conn.execute("DROP EXTENSION token_store")
    c.close_all()


def test_key_file_keeps_the_key_out_of_every_setting(ts, cluster):
    c = cluster
    key = key_text(c)
    key_file = c.dir / "token_store.key"
    key_file.write_text(key + "\n")
    if os.geteuid() == 0:
        shutil.chown(key_file, "postgres", "postgres")
    key_file.chmod(0o600)
    c.stop()
    c.append_conf({"token_store.encryption_key": "''", "token_store.encryption_key_file": f"'{key_file}'"})
    c.start()
    assert nobody_sees(c, "token_store.encryption_key") == ""
    assert nobody_sees(c, "token_store.encryption_key_file") == str(key_file)
    conn = c.connect()
    warnings = []
    conn.add_notice_handler(lambda d: warnings.append((d.severity_nonlocalized, d.message_primary)))
    conn.execute("CREATE EXTENSION token_store")
    messages = [m for sev, m in warnings if sev == "WARNING"]
    assert not any(m.startswith("token_store.encryption_key is configured") for m in messages), warnings
    assert any("no purge worker runs" in m for m in messages), warnings
    exercise(ts, c, conn)
    assert key not in c.log_text()
