"""Upgrade harness: archived install scripts of released versions, ALTER EXTENSION ... UPDATE.

For every archived release older than the current version: install it, make data with it (keys of
two kinds, issued, stored and revoked tokens, a subject revocation), update, and check that the data
still works (tokens verify, the revoked one stays refused, payloads decrypt) and that the schema is
the one a fresh install of the current version has. pg_dump leaves an extension's member objects out
of a dump, so the schema is compared as the catalogs describe it: every member object with its full
definition, privileges, owner-independent options and comment.

An archived install script is copied into the extension directory of the PostgreSQL under test;
that is only done in a private copy of PostgreSQL (scripts/test.sh makes one per run and names it in
TS_PRIVATE_PG), never in an installation of the host."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "sql" / "released"
DB = "ts_upgrade"


def sharedir(ts) -> Path:
    out = subprocess.run([str(ts.pgbin / "pg_config"), "--sharedir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "extension"


def private_extension_dir(ts) -> Path:
    """The extension directory, when it belongs to the private copy of PostgreSQL of this run."""
    ext = sharedir(ts)
    private = os.environ.get("TS_PRIVATE_PG")
    if not private or not ext.resolve().is_relative_to(Path(private).resolve()):
        pytest.fail(f"refusing to copy archived install scripts into {ext}: it is not a private copy of "
                    "PostgreSQL (run the tests through scripts/test.sh, which makes one and sets TS_PRIVATE_PG)")
    return ext


def current_version(ts) -> str:
    control = (sharedir(ts) / "token_store.control").read_text()
    return re.search(r"default_version\s*=\s*'([^']+)'", control).group(1)


def without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("--")]


def version_key(v: str):
    return tuple(int(p) for p in v.split("."))


def released_versions() -> list[str]:
    return sorted((p.name[len("token_store--"):-len(".sql")] for p in RELEASED.glob("token_store--*.sql")
                   if p.name.count("--") == 1), key=version_key)


# Every member object of the extension, described by the catalogs: one line per fact.
SCHEMA = """
WITH members AS (
    SELECT classid, objid FROM pg_catalog.pg_depend
     WHERE refclassid = 'pg_catalog.pg_extension'::regclass AND deptype = 'e'
       AND refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'token_store'))
SELECT 'object ' || pg_catalog.pg_describe_object(classid, objid, 0) FROM members
UNION ALL
SELECT 'function ' || pg_catalog.pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
  FROM members m JOIN pg_catalog.pg_proc p ON m.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT format('column %s.%s %s notnull=%s default=%s acl=%s', c.relname, a.attname,
              pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
              pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attacl)
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
UNION ALL
SELECT format('relation %s kind=%s acl=%s options=%s', c.relname, c.relkind, c.relacl, c.reloptions)
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
  FROM members m JOIN pg_catalog.pg_index i ON m.classid = 'pg_catalog.pg_class'::regclass AND i.indrelid = m.objid
UNION ALL
SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_catalog.pg_get_constraintdef(co.oid))
  FROM members m JOIN pg_catalog.pg_constraint co ON m.classid = 'pg_catalog.pg_class'::regclass
   AND co.conrelid = m.objid
UNION ALL
SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid)
  FROM members m JOIN pg_catalog.pg_trigger t ON m.classid = 'pg_catalog.pg_class'::regclass
   AND t.tgrelid = m.objid AND NOT t.tgisinternal
UNION ALL
SELECT format('trigger %s enabled=%s', t.tgname, t.tgenabled)
  FROM members m JOIN pg_catalog.pg_trigger t ON m.classid = 'pg_catalog.pg_class'::regclass
   AND t.tgrelid = m.objid AND NOT t.tgisinternal
UNION ALL
SELECT format('function %s volatile=%s parallel=%s', p.oid::pg_catalog.regprocedure, p.provolatile, p.proparallel)
  FROM members m JOIN pg_catalog.pg_proc p ON m.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT format('view %s: %s', c.relname, pg_catalog.pg_get_viewdef(c.oid))
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
 WHERE c.relkind = 'v'
UNION ALL
SELECT format('comment %s: %s', pg_catalog.pg_describe_object(classid, objid, 0),
              pg_catalog.obj_description(objid, (SELECT relname FROM pg_catalog.pg_class WHERE oid = classid)))
  FROM members
UNION ALL
SELECT format('config table %s where %s', c.relname, cfg.cond)
  FROM pg_catalog.pg_extension e,
       LATERAL unnest(e.extconfig, e.extcondition) AS cfg(reloid, cond)
       JOIN pg_catalog.pg_class c ON c.oid = cfg.reloid
 WHERE e.extname = 'token_store'
UNION ALL
SELECT format('role %s canlogin=%s super=%s comment=%s', r.rolname, r.rolcanlogin, r.rolsuper,
              pg_catalog.shobj_description(r.oid, 'pg_authid'))
  FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'token\\_store\\_%'
ORDER BY 1
"""


def schema(ts, dbname) -> list[str]:
    return [r for (r,) in ts.rows(ts.connect(dbname), SCHEMA)]


def test_current_version_is_archived_unchanged(ts):
    """A released version's schema never changes. A version under development (newer than every
    archive) is not archived yet, but must be reachable from the newest release by a script."""
    current = current_version(ts)
    archived = RELEASED / f"token_store--{current}.sql"
    if not archived.exists():
        newest = released_versions()[-1]
        assert version_key(current) > version_key(newest), (
            f"no archived install script for {current} in sql/released/, and it is not newer than {newest}")
        assert (ROOT / "sql" / f"token_store--{newest}--{current}.sql").exists(), (
            f"{current} is under development: sql/token_store--{newest}--{current}.sql must update to it")
        return
    generated = (sharedir(ts) / f"token_store--{current}.sql").read_text()
    assert without_comments(generated) == without_comments(archived.read_text()), (
        f"the schema of {current} changed after release: bump the version and add an upgrade script")


# the version built now, and every archived release older than it (all of them while it is under
# development and not archived yet)
BUILT = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
OLDER = [v for v in released_versions() if version_key(v) < version_key(BUILT)]


def test_there_is_an_older_release_to_update_from():
    assert OLDER, "only one release is archived: the update test below would compare a version with itself"


def install_archived(ts, old: str):
    # always the archived text: a file left by an older build of this tree must not stand in for it
    name = f"token_store--{old}.sql"
    shutil.copyfile(RELEASED / name, private_extension_dir(ts) / name)


@pytest.mark.parametrize("old", OLDER)
def test_update_from_each_older_release(ts, old):
    current = current_version(ts)
    assert version_key(old) < version_key(current)
    install_archived(ts, old)
    ts.fresh_db(DB + "_fresh")
    fresh = schema(ts, DB + "_fresh")

    ts.drop_db(DB)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    conn = ts.connect(DB)
    conn.execute(sql.SQL("CREATE EXTENSION token_store VERSION {}").format(sql.Literal(old)))
    before = schema(ts, DB)
    assert before != fresh, "the comparison must see the difference between the two versions"

    # data made by the old version
    secret = ts.create_key(conn, "up-hs")
    conn.execute("SELECT token_store.generate_key('up-ec', 'ES256')")
    issued = ts.issue(conn, ts.claims("up-alice", role="reader"), kid="up-hs")
    signed_ec = ts.issue(conn, ts.claims("up-bob"), kid="up-ec")
    made_elsewhere = ts.mint(ts.claims("up-carol"), secret, "HS256", "up-hs")
    stored_id = ts.store(conn, made_elsewhere)
    revoked = ts.issue(conn, ts.claims("up-dave"), kid="up-hs")
    assert ts.revoke(conn, revoked) is True
    assert ts.one(conn, "SELECT token_store.jwt_revoke_subject('up-erin')") == 0
    # the new library serving the old schema (until the UPDATE): a sid names no session, and the
    # purge and stats find no session tables to work on
    with_sid = ts.issue(conn, ts.claims("up-frank", sid="7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10"), kid="up-hs")
    assert ts.valid(conn, with_sid) is True
    assert ts.one(conn, "SELECT token_store.purge()") == 0
    assert ts.one(conn, "SELECT count(*) FROM token_store.stats") == 1
    if version_key(old) >= version_key("0.3.0"):
        # the 0.3.0 signatures of session_start and session_refresh, served by the new library
        old_pair = ts.one(conn, """SELECT token_store.session_start('{"sub": "up-old"}', kid => 'up-hs')""")
        assert "access_token" in ts.one(conn, "SELECT token_store.session_refresh(%s)",
                                        (old_pair["refresh_token"],))

    conn.execute("ALTER EXTENSION token_store UPDATE")
    assert ts.one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'token_store'") == current
    assert schema(ts, DB) == fresh

    conn = ts.connect(DB)  # a fresh backend: nothing cached from before the update
    assert ts.verify(conn, issued)["role"] == "reader"
    assert ts.valid(conn, signed_ec) is True
    assert ts.one(conn, "SELECT token_store.jwt_payload(%s)->>'sub'", (stored_id,)) == "up-carol"
    ts.assert_rejected(conn, revoked, "revoked")
    ts.assert_rejected(conn, ts.mint(ts.claims("up-erin", ttl=600) | {"iat": 1_000_000_000}, secret, "HS256",
                                     "up-hs"), "subject_revoked")
    payload_subs = sorted(p["sub"] for (p,) in conn.execute(
        "SELECT token_store.jwt_payload(id) FROM token_store.tokens WHERE subject <> 'up-old'").fetchall())
    assert payload_subs == ["up-alice", "up-bob", "up-carol", "up-dave", "up-frank"]
    assert ts.valid(conn, with_sid) is True
    if version_key(old) < version_key("0.3.0"):
        pair = ts.one(conn, """SELECT token_store.session_start('{"sub": "up-sess"}', kid => 'up-hs')""")
        assert ts.verify(conn, pair["access_token"])["sid"] == pair["session_id"]
        assert "access_token" in ts.one(conn, "SELECT token_store.session_refresh(%s)", (pair["refresh_token"],))
    # 0.4.0: sessions bound to a DPoP key, the replay cache and the events
    jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    bound = ts.one(conn, "SELECT token_store.session_start(%s, kid => 'up-hs', dpop_jkt => %s)",
                   (Jsonb({"sub": "up-dpop"}), jkt))
    assert ts.one(conn, "SELECT token_store.jwt_introspect(%s)", (bound["access_token"],)) == {
        "active": False, "reason": "dpop_required"}
    assert ts.one(conn, "SELECT token_store.session_refresh(%s)", (bound["refresh_token"],))["reason"] == "dpop_mismatch"
    assert "access_token" in ts.one(conn, "SELECT token_store.session_refresh(%s, NULL, %s)",
                                    (bound["refresh_token"], jkt))
    assert ts.one(conn, "SELECT count(*) FROM token_store.revocations_since('-infinity') "
                        "WHERE event = 'token_revoked' AND sub = 'up-dave'") == 1
    after = ts.issue(conn, ts.claims("upgraded"), kid="up-hs")
    assert jwt.decode(after, secret, algorithms=["HS256"])["sub"] == "upgraded"
    ts.drop_db(DB)
    ts.drop_db(DB + "_fresh")
