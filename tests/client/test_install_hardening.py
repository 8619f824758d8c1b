"""Installing into a hostile database (issue 20, items 1 and 2), as a hosting setup has it: the owner
of a database (no superuser) asks the DBA (a superuser) to install token_store there.

- The tenant made schema token_store first: CREATE EXTENSION refuses it and says why (the schema is
  the tenant's; or the tenant may create objects in it; or it holds objects already). A schema a
  superuser made, empty and closed, is taken.
- After a legitimate install the schema is the superuser's: the tenant can neither rename it (to put
  a look-alike token_store schema in its place) nor create anything in it, so the name token_store
  always means the extension's schema.
- Pre-existing roles token_store_*: one that can log in, has role attributes, is administered by a
  role that is no superuser (or, for token_store_purge, has any member) is refused; the roles an
  earlier install left behind are taken. Those run in a throwaway cluster (roles are cluster-wide)."""

import os
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from throwaway_cluster import clusters

TENANT = "ts_tenant"
PORT = 54433


def tenant_db(ts, name):
    ts.ensure_role(TENANT)
    ts.drop_db(name)
    ts.admin_conn().execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                          sql.Identifier(TENANT)))
    return name


def as_tenant(ts, db):
    return ts.connect(db, user=TENANT)


@pytest.fixture
def db(ts):
    name = tenant_db(ts, f"ts_hosted_{uuid.uuid4().hex[:8]}")
    yield name
    ts.close_all()
    ts.drop_db(name)


def refused(ts, conn, detail_words):
    with ts.expect_error("55000", 'schema "token_store" already exists') as info:
        conn.execute("CREATE EXTENSION token_store")
    text = f"{info.value.diag.message_primary} {info.value.diag.message_detail} {info.value.diag.message_hint}"
    for w in detail_words:
        assert w in text, text
    assert ts.one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'token_store'") == 0


def test_a_schema_the_tenant_made_is_refused(ts, db):
    as_tenant(ts, db).execute("CREATE SCHEMA token_store")
    refused(ts, ts.connect(db), [f'owned by role "{TENANT}", which is not a superuser', "rename"])


def test_a_schema_the_tenant_may_create_in_is_refused(ts, db):
    su = ts.connect(db)
    su.execute(sql.SQL("CREATE SCHEMA token_store; GRANT CREATE ON SCHEMA token_store TO {}")
               .format(sql.Identifier(TENANT)))
    refused(ts, su, [f'role "{TENANT}" may create objects in it'])
    su.execute("REVOKE CREATE ON SCHEMA token_store FROM " + TENANT + "; GRANT CREATE ON SCHEMA token_store TO PUBLIC")
    refused(ts, su, ['role "public" may create objects in it'])


def test_a_schema_holding_objects_is_refused(ts, db):
    su = ts.connect(db)
    su.execute("CREATE SCHEMA token_store; CREATE FUNCTION token_store.jwt_valid(text) RETURNS boolean "
               "LANGUAGE sql AS 'SELECT true'")
    refused(ts, su, ["holds 1 objects that are not token_store's"])


def test_an_empty_schema_of_a_superuser_is_taken(ts, db):
    su = ts.connect(db)
    su.execute("CREATE SCHEMA token_store")
    su.execute("CREATE EXTENSION token_store")
    ts.create_key(su, "k-hosted", "HS256")
    assert ts.verify(su, ts.issue(su, ts.claims(sub="hosted")))["sub"] == "hosted"


def test_the_look_alike_attack_fails_at_the_rename(ts, db):
    """The issue's sequence after a legitimate install: the tenant renames the schema and puts a
    look-alike in its place. It cannot: the schema is the installing superuser's."""
    su = ts.connect(db)
    su.execute("CREATE EXTENSION token_store")
    ts.create_key(su, "k-hosted", "HS256")
    su.execute(sql.SQL("GRANT token_store_app TO {}").format(sql.Identifier(TENANT)))
    tenant = as_tenant(ts, db)
    assert ts.one(su, "SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                      "WHERE n.nspname = 'token_store'") is True
    with ts.expect_error("42501"):
        tenant.execute("ALTER SCHEMA token_store RENAME TO token_store_real")
    with ts.expect_error("42501"):
        tenant.execute("CREATE FUNCTION token_store.jwt_valid_x(text) RETURNS boolean LANGUAGE sql AS 'SELECT true'")
    with ts.expect_error("42501"):
        tenant.execute("DROP SCHEMA token_store CASCADE")
    with ts.expect_error("42P06"):
        tenant.execute("CREATE SCHEMA token_store")
    # the tenant's own schema elsewhere changes nothing the extension resolves
    tenant.execute("CREATE SCHEMA lookalike; CREATE TABLE lookalike.tokens (token_hash bigint)")
    token = ts.issue(su, ts.claims(sub="tenant-user"))
    assert ts.valid(tenant, token) is True
    assert ts.valid(tenant, token + "x") is False
    assert ts.one(su, "SELECT nspname FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid "
                      "WHERE e.extname = 'token_store'") == "token_store"


# ---- pre-existing roles (a throwaway cluster: roles are cluster-wide) --------------------------

@pytest.fixture(scope="module")
def cl(ts):
    with clusters("install-roles-", Path(os.environ["TS_PGBIN"])) as make:
        c = make("roles", PORT)
        c.init("postgres", {"token_store.purge_interval": "0"})
        c.start()
        c.connect().execute("CREATE ROLE ts_creator LOGIN CREATEROLE")
        yield c


def creator(c):
    conn = psycopg.connect(host="127.0.0.1", port=c.port, dbname="postgres", user="ts_creator", autocommit=True)
    c._open.append(conn)
    return conn


def install_refused(ts, c, words):
    with ts.expect_error("55000") as info:
        c.connect().execute("CREATE EXTENSION token_store")
    text = f"{info.value.diag.message_primary} {info.value.diag.message_detail}"
    for w in words:
        assert w in text, text


def test_pre_existing_roles(ts, cl):
    su = cl.connect()
    # a purge role made by a CREATEROLE user with LOGIN: refused
    creator(cl).execute("CREATE ROLE token_store_purge LOGIN")
    install_refused(ts, cl, ['role "token_store_purge" already exists and can log in'])
    # NOLOGIN, but a member of it: refused
    su.execute("ALTER ROLE token_store_purge NOLOGIN")
    su.execute("GRANT token_store_purge TO ts_creator")
    install_refused(ts, cl, ['role "token_store_purge" already exists and role "ts_creator" is a member or '
                             'administrator of it'])
    # (from 16 on the creator's ADMIN OPTION is that same grant row: the REVOKE removes both)
    su.execute("REVOKE token_store_purge FROM ts_creator")
    assert ts.one(su, "SELECT count(*) FROM pg_auth_members WHERE roleid = 'token_store_purge'::regrole") == 0
    # an app role that can administer itself through another role: refused
    su.execute("CREATE ROLE token_store_app NOLOGIN; GRANT token_store_app TO ts_creator WITH ADMIN OPTION")
    install_refused(ts, cl, ['role "token_store_app" already exists and role "ts_creator" is a member or '
                             'administrator of it'])
    su.execute("REVOKE token_store_app FROM ts_creator; GRANT token_store_app TO ts_creator")
    # a plain member of token_store_app (an app role), and the roles of an earlier install: taken
    su.execute("CREATE EXTENSION token_store")
    su.execute("DROP EXTENSION token_store")
    su.execute("CREATE EXTENSION token_store")
    assert ts.one(su, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'token\\_store\\_%%' AND NOT rolcanlogin") == 3
