"""Upgrade harness: archived install scripts of released versions, ALTER EXTENSION ... UPDATE.

An archived install script that the build does not ship is copied into the extension directory of
the PostgreSQL under test; that is only done in a private copy of PostgreSQL (scripts/test.sh makes
one per run and names it in TS_PRIVATE_PG), never in an installation of the host."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest
from psycopg import sql

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


def without_comments(sql: str) -> list[str]:
    return [line for line in sql.splitlines() if line.strip() and not line.lstrip().startswith("--")]


def version_key(v: str):
    return tuple(int(p) for p in v.split("."))


def released_versions() -> list[str]:
    return sorted((p.name[len("token_store--"):-len(".sql")] for p in RELEASED.glob("token_store--*.sql")
                   if p.name.count("--") == 1), key=version_key)


def objects(ts, dbname) -> list[str]:
    return [r for (r,) in ts.rows(ts.connect(dbname), """
        SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
         WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
           AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'token_store')
         ORDER BY 1""")]


def test_current_version_is_archived_unchanged(ts):
    current = current_version(ts)
    archived = RELEASED / f"token_store--{current}.sql"
    assert archived.exists(), f"no archived install script for {current} in sql/released/"
    generated = (sharedir(ts) / f"token_store--{current}.sql").read_text()
    assert without_comments(generated) == without_comments(archived.read_text()), (
        f"the schema of {current} changed after release: bump the version and add an upgrade script")


@pytest.mark.parametrize("old", released_versions())
def test_update_from_each_released_version(ts, old):
    current = current_version(ts)
    ext = sharedir(ts)
    if old != current:
        target = ext / f"token_store--{old}.sql"
        if not target.exists():
            shutil.copyfile(RELEASED / target.name, private_extension_dir(ts) / target.name)
        assert (ext / f"token_store--{old}--{current}.sql").exists() or any(
            ext.glob(f"token_store--{old}--*.sql")), f"no upgrade path from {old}"
    ts.fresh_db(DB + "_fresh")
    fresh = objects(ts, DB + "_fresh")
    ts.drop_db(DB)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    conn = ts.connect(DB)
    conn.execute(sql.SQL("CREATE EXTENSION token_store VERSION {}").format(sql.Literal(old)))
    conn.execute("ALTER EXTENSION token_store UPDATE")
    assert ts.one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'token_store'") == current
    assert objects(ts, DB) == fresh
    secret = ts.create_key(conn, "up")
    token = ts.issue(conn, ts.claims("upgraded"), kid="up")
    assert ts.verify(conn, token)["sub"] == "upgraded"
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "upgraded"
    ts.drop_db(DB)
    ts.drop_db(DB + "_fresh")
