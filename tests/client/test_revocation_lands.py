"""A revocation always lands (issue 20, items 3 and 7).

- jwt_revoke revokes a stored token by its hash whatever became of its key (retired, deleted), so
  setting the key back to active does not bring the token back;
- sub, iss, jti and sid are bounded (1024 bytes) at parse time: a token over the bound is malformed
  everywhere, and one at the bound, incompressible, can be revoked and revoked by subject (btree
  entries cannot exceed ~2.7 kB);
- a subject revocation covers iat up to revoked_before + leeway (a signer whose clock runs ahead);
- the purge keeps revoked rows and ended sessions for the largest leeway any role or database sets,
  so none comes back for a role whose leeway is larger than the purging session's."""

import base64
import os
import time
import uuid

import pytest
from psycopg import sql

DB = "ts_lands"
KID = "k-lands"
APP = "ts_lands_app"


@pytest.fixture(scope="module")
def db(ts):
    with ts.temporary_db(DB):
        yield DB


@pytest.fixture
def su(ts, db):
    return ts.connect(db)


@pytest.fixture(scope="module")
def secret(ts, db):
    return ts.create_key(ts.connect(db), KID, "HS256")


def deny_list(ts, conn):
    ts.set_guc(conn, "token_store.require_stored", "off")


def incompressible(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n))[:n].decode()


def test_revoke_a_stored_token_whose_key_was_retired_or_deleted(ts, su, secret):
    token = ts.issue(su, ts.claims(sub="retired-key"), kid=KID)
    su.execute("SELECT token_store.set_key_state(%s, 'retired')", (KID,))
    try:
        assert ts.revoke(su, token) is True
        assert ts.revoke(su, token) is False
    finally:
        su.execute("SELECT token_store.set_key_state(%s, 'active')", (KID,))
    ts.assert_rejected(su, token, "revoked")

    ts.create_key(su, "k-doomed", "HS256")
    doomed = ts.issue(su, ts.claims(sub="deleted-key"), kid="k-doomed")
    su.execute("DELETE FROM token_store.signing_keys WHERE kid = 'k-doomed'")
    assert ts.revoke(su, doomed) is True
    assert ts.one(su, "SELECT revoked_at IS NOT NULL FROM token_store.tokens WHERE subject = 'deleted-key'")


def test_id_claims_are_bounded_so_every_verifiable_token_is_revocable(ts, su, secret):
    deny_list(ts, su)
    for claim in ("sub", "iss", "jti", "sid"):
        long = ts.mint({**ts.claims(sub="short"), claim: incompressible(3000)}, secret, kid=KID)
        ts.assert_malformed(su, long)
        with ts.expect_error("22P02", "invalid token:"):
            ts.revoke(su, long)
    at_bound = incompressible(1024)
    token = ts.mint(ts.claims(sub=at_bound), secret, kid=KID)
    assert ts.verify(su, token)["sub"] == at_bound
    assert ts.revoke(su, token) is True
    ts.assert_rejected(su, token, "revoked")
    other = ts.mint(ts.claims(sub=at_bound), secret, kid=KID)
    assert ts.valid(su, other) is True
    ts.one(su, "SELECT token_store.jwt_revoke_subject(%s)", (at_bound,))
    ts.assert_rejected(su, other, "subject_revoked")
    with ts.expect_error("22001", "subject is too long"):
        su.execute("SELECT token_store.jwt_revoke_subject(%s)", (incompressible(3000),))


def test_subject_revocation_covers_a_signer_clock_ahead_by_the_leeway(ts, su, secret):
    deny_list(ts, su)
    ts.set_guc(su, "token_store.leeway", "30")
    su.execute("SELECT token_store.jwt_revoke_subject('clock-ahead')")
    now = int(time.time())
    # minted before the revocation by a signer whose clock runs 20 s ahead
    ahead = ts.mint({**ts.claims(sub="clock-ahead"), "iat": now + 20}, secret, kid=KID)
    ts.assert_rejected(su, ahead, "subject_revoked")
    # with no leeway, nothing is accepted from the future at all
    ts.set_guc(su, "token_store.leeway", "0")
    ts.assert_rejected(su, ahead, "not_yet_valid")


@pytest.fixture
def app_with_large_leeway(ts, db):
    ts.ensure_role(APP, "token_store_app")
    admin = ts.admin_conn()
    admin.execute(sql.SQL("ALTER ROLE {} SET token_store.leeway = '120s'").format(sql.Identifier(APP)))
    admin.execute(sql.SQL("ALTER ROLE {} SET token_store.require_stored = off").format(sql.Identifier(APP)))
    try:
        yield ts.connect(db, user=APP)
    finally:
        admin.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(APP)))


def purge_with_no_leeway(ts, su):
    ts.set_guc(su, "token_store.leeway", "0")
    return ts.one(su, "SELECT token_store.purge()")


def test_purge_keeps_what_a_role_with_a_larger_leeway_would_accept(ts, su, secret, app_with_large_leeway):
    app = app_with_large_leeway
    assert ts.one(app, "SHOW token_store.leeway") == "2min"
    now = int(time.time())
    token = ts.issue(su, {**ts.claims(sub="lee-revoked"), "iat": now - 60, "exp": now - 5}, kid=KID)
    assert ts.verify(app, token)["sub"] == "lee-revoked"  # 5 s past exp, inside the role's 120 s
    assert ts.revoke(su, token) is True
    ts.assert_rejected(app, token, "revoked")
    purge_with_no_leeway(ts, su)
    assert ts.one(su, "SELECT count(*) FROM token_store.tokens WHERE subject = 'lee-revoked'") == 1
    ts.assert_rejected(app, token, "revoked")


def test_purge_keeps_an_ended_session_a_role_with_a_larger_leeway_would_accept(ts, su, secret,
                                                                              app_with_large_leeway):
    app = app_with_large_leeway
    started = ts.one(su, "SELECT token_store.session_start('{\"sub\": \"lee-session\"}', '1 second', kid => %s)",
                     (KID,))
    access = started["access_token"]
    time.sleep(2.2)
    assert ts.verify(app, access)["sub"] == "lee-session"
    su.execute("SELECT token_store.session_end(%s)", (started["session_id"],))
    ts.assert_rejected(app, access, "session_ended")
    purge_with_no_leeway(ts, su)
    ts.assert_rejected(app, access, "session_ended")
