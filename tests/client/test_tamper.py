"""Encryption at rest: tampered or moved ciphertexts are refused with XX001, and the encryption key
settings fail safely (55000 with a hint, bad values refused at once, a loose key file refused).
Every test that changes a server setting restores it, and waits until the restore took effect."""

import os
import pwd
import secrets

import pytest
from psycopg import sql

DB = "ts_t_tamper"
KEY = "token_store.encryption_key"
KEY_FILE = "token_store.encryption_key_file"
PREVIOUS = "token_store.previous_encryption_keys"


@pytest.fixture(scope="module")
def db(ts):
    ts.fresh_db(DB)
    ts.create_key(ts.connect(DB), "k-tamper", "HS256")
    yield DB
    ts.drop_db(DB)


@pytest.fixture
def conn(ts, db):
    return ts.connect(DB)


def issue_row(ts, conn, **claims):
    """Issue a token; returns (token, row id)."""
    token = ts.issue(conn, {"sub": "tamper", **claims})
    token_id = ts.one(conn, "SELECT token_store.jwt_introspect(%s)->>'token_id'", (token,))
    return token, token_id


def payload_of(ts, conn, token_id):
    return ts.one(conn, "SELECT token_store.jwt_payload(%s::uuid)", (token_id,))


def assert_undecryptable(ts, conn, token_id):
    with ts.expect_error("XX001") as info:
        payload_of(ts, conn, token_id)
    diag = info.value.diag
    assert token_id in f"{diag.message_primary} {diag.message_detail}", "the error must name the row"


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_flipped_bit_in_payload(ts, conn, where):
    _, token_id = issue_row(ts, conn, n=1)
    _, untouched = issue_row(ts, conn, n=2)
    assert payload_of(ts, conn, token_id)["n"] == 1
    position = {"nonce": "0", "ciphertext": "14", "tag": "octet_length(payload) - 1"}[where]
    conn.execute(
        sql.SQL("UPDATE token_store.tokens SET payload = set_byte(payload, {p}, get_byte(payload, {p}) # 1) "
                "WHERE id = %s").format(p=sql.SQL(position)),
        (token_id,),
    )
    assert_undecryptable(ts, conn, token_id)
    assert payload_of(ts, conn, untouched)["n"] == 2


def test_swapped_payloads(ts, conn):
    _, a = issue_row(ts, conn, who="a")
    _, b = issue_row(ts, conn, who="b")
    swap = """UPDATE token_store.tokens t SET payload = o.payload
                FROM token_store.tokens o
               WHERE (t.id, o.id) IN ((%(a)s::uuid, %(b)s::uuid), (%(b)s::uuid, %(a)s::uuid))"""
    conn.execute(swap, {"a": a, "b": b})
    assert_undecryptable(ts, conn, a)
    assert_undecryptable(ts, conn, b)
    conn.execute(swap, {"a": a, "b": b})  # swapped back: the row id is what binds them
    assert payload_of(ts, conn, a)["who"] == "a"
    assert payload_of(ts, conn, b)["who"] == "b"


def test_tampered_key_material(ts, conn):
    ts.create_key(conn, "k-flip", "HS256")
    conn.execute("UPDATE token_store.signing_keys SET material = set_byte(material, 20, get_byte(material, 20) # 1) "
                 "WHERE kid = 'k-flip'")
    fresh = ts.connect(DB)  # no parsed key cached in this session
    with ts.expect_error("XX001") as info:
        ts.issue(fresh, {"sub": "x"}, kid="k-flip")
    assert "k-flip" in f"{info.value.diag.message_primary} {info.value.diag.message_detail}"
    assert ts.issue(fresh, {"sub": "x"}, kid="k-tamper")
    # out of the way: as the newest key it would otherwise be the default signer of later tests
    conn.execute("SELECT token_store.set_key_state('k-flip', 'retired')")


def test_no_encryption_key_then_restored(ts, conn):
    _, token_id = issue_row(ts, conn, n=3)
    try:
        ts.configure(conn, {KEY: ""}, {KEY: ""})
        with ts.expect_error("55000") as info:
            ts.issue(conn, {"sub": "x"})
        assert KEY in (info.value.diag.message_hint or ""), "the HINT must name the setting"
        with ts.expect_error("55000"):
            payload_of(ts, conn, token_id)
    finally:
        ts.configure(conn, {KEY: None}, {KEY: "(hidden)"})
    assert ts.issue(conn, {"sub": "x"})
    assert payload_of(ts, conn, token_id)["n"] == 3


BAD_KEYS = {
    "short": "short",
    "hex_31_bytes": "ab" * 31,
    "hex_33_bytes": "ab" * 33,
    "base64_31_bytes": "MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dQ==",
    "not_hex_64": "zz" * 32,
}


@pytest.mark.parametrize("setting", [KEY, PREVIOUS])
@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_key_value_refused_at_alter_system(ts, conn, setting, bad):
    auto_conf = ts.cluster_dir / "data" / "postgresql.auto.conf"
    before = auto_conf.read_text()
    try:
        with ts.expect_error("22023"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(setting), sql.Literal(BAD_KEYS[bad])))
        assert auto_conf.read_text() == before
    finally:
        if auto_conf.read_text() != before:  # accepted after all: undo it for the tests that follow
            ts.configure(conn, {setting: None}, {KEY: "(hidden)", PREVIOUS: ""})
    assert ts.one(conn, "SHOW token_store.encryption_key") == "(hidden)"
    assert ts.issue(conn, {"sub": "still works"})


def test_refused_key_value_is_not_echoed(ts, conn):
    """A mistyped key (one hex digit missing) is still the key: the error must not print it."""
    near_key = secrets.token_hex(32)[:-1]  # not the cluster's key: this test's failure output prints it
    with ts.expect_error("22023") as info:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(KEY), sql.Literal(near_key)))
    diag = info.value.diag
    assert near_key not in f"{diag.message_primary} {diag.message_detail} {diag.message_hint}"


def test_key_change_by_reload_is_not_logged(ts, conn):
    offset = ts.log_size()
    try:
        ts.configure(conn, {KEY: ""}, {KEY: ""})
    finally:
        ts.configure(conn, {KEY: None}, {KEY: "(hidden)"})  # back to the key: a change the postmaster logs
    # the postmaster applies (and logs) the file before it signals the backends, so the line is there now
    leaked = ts.encryption_key_text() in ts.log_text(offset)
    assert not leaked, f"the encryption key was written to {ts.server_log}"


def write_key_file(ts, name: str, key: str, mode: int):
    path = ts.cluster_dir / name
    path.write_text(key + "\n")
    pg = pwd.getpwnam("postgres")
    os.chown(path, pg.pw_uid, pg.pw_gid)
    os.chmod(path, mode)
    return path


def test_key_file_readable_by_others_is_refused(ts, conn):
    _, token_id = issue_row(ts, conn, n=4)
    loose_key = secrets.token_hex(32)
    ts.secrets.add(loose_key)
    path = write_key_file(ts, "ts_test_key_file", loose_key, 0o644)
    try:
        ts.configure(conn, {KEY: "", KEY_FILE: str(path)}, {KEY: "", KEY_FILE: str(path)})
        with ts.expect_error("55000") as info:
            ts.issue(conn, {"sub": "x"})
        diag = info.value.diag
        said = f"{diag.message_primary} {diag.message_detail}"
        assert "0644" in said and "mode" in said, said
        assert loose_key not in said

        # the same path with mode 0600 and the cluster's key: accepted, old rows still decrypt
        write_key_file(ts, "ts_test_key_file", ts.encryption_key_text(), 0o600)
        assert ts.issue(conn, {"sub": "x"})
        assert payload_of(ts, conn, token_id)["n"] == 4
    finally:
        ts.configure(conn, {KEY: None, KEY_FILE: None}, {KEY: "(hidden)", KEY_FILE: ""})
        path.unlink(missing_ok=True)
    assert ts.issue(conn, {"sub": "x"})
