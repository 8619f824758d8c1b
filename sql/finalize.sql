-- Views over functions, roles and grants. Loaded last by extension_sql_file!(finalize).
-- Nothing is granted to PUBLIC.

CREATE VIEW token_store.stats AS SELECT * FROM token_store.stats();
COMMENT ON VIEW token_store.stats IS 'token_store: counts, purge figures and verification outcomes';

-- Any change to the keys, by the key functions or by plain SQL, also in replica mode, prompts every
-- session to drop the parsed keys it no longer needs (each verification reads its key's row anyway).
CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_store.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION token_store.signing_keys_changed();
ALTER TABLE token_store.signing_keys ENABLE ALWAYS TRIGGER signing_keys_changed;

-- Revocation events: each committed revocation, subject revocation, session end and key state
-- change is announced on token_store.notify_channel (when set), whatever made the change.
CREATE TRIGGER tokens_revoked_event
    AFTER UPDATE OF revoked_at ON token_store.tokens FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('tokens');
CREATE TRIGGER tokens_stored_revoked_event
    AFTER INSERT ON token_store.tokens FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('tokens');
CREATE TRIGGER sessions_ended_event
    AFTER UPDATE OF ended_at ON token_store.sessions FOR EACH ROW
    WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('sessions');
CREATE TRIGGER subject_revoked_event
    AFTER INSERT OR UPDATE ON token_store.subject_revocations FOR EACH ROW
    EXECUTE FUNCTION token_store.revocation_event('subject_revocations');
CREATE TRIGGER key_state_event
    AFTER UPDATE OF state ON token_store.signing_keys FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION token_store.revocation_event('signing_keys');
-- ALWAYS: a logical subscriber's apply worker (replica mode) applies revocations too, and the
-- apps listening to the subscriber must hear of them.
ALTER TABLE token_store.tokens ENABLE ALWAYS TRIGGER tokens_revoked_event;
ALTER TABLE token_store.tokens ENABLE ALWAYS TRIGGER tokens_stored_revoked_event;
ALTER TABLE token_store.sessions ENABLE ALWAYS TRIGGER sessions_ended_event;
ALTER TABLE token_store.subject_revocations ENABLE ALWAYS TRIGGER subject_revoked_event;
ALTER TABLE token_store.signing_keys ENABLE ALWAYS TRIGGER key_state_event;

-- One sentence per function, as in the README; shown by \df+ and obj_description.
COMMENT ON FUNCTION token_store.create_key(text, text, text) IS
    'token_store: register a key (secret, PEM or JWK) for an algorithm and return its kid';
COMMENT ON FUNCTION token_store.generate_key(text, text) IS
    'token_store: make a fresh secret or key pair inside the database and return its public JWK';
COMMENT ON FUNCTION token_store.import_jwks(jsonb) IS
    'token_store: add the public keys of a JWKS as verify_only keys and return how many were new';
COMMENT ON FUNCTION token_store.set_key_state(text, text) IS
    'token_store: make a key active (signs and verifies), verify_only or retired';
COMMENT ON FUNCTION token_store.jwks() IS
    'token_store: the public JWKS of every non-retired asymmetric key';
COMMENT ON FUNCTION token_store.jwt_issue(jsonb, interval, text) IS
    'token_store: sign claims (adding iat, exp and jti where missing), store the token and return it';
COMMENT ON FUNCTION token_store.jwt_store(text) IS
    'token_store: verify a token made elsewhere, store it and return its row id';
COMMENT ON FUNCTION token_store.jwt_verify(text, text, text) IS
    'token_store: the verified claims of a token, or ERROR 28000 token rejected: <reason>';
COMMENT ON FUNCTION token_store.jwt_valid(text) IS
    'token_store: true where jwt_verify would succeed, false where it would raise';
COMMENT ON FUNCTION token_store.jwt_introspect(text) IS
    'token_store: RFC 7662 introspection, {"active": true, ...claims} or {"active": false, "reason": ...}';
COMMENT ON FUNCTION token_store.jwt_revoke(text, text) IS
    'token_store: revoke a correctly signed token; true if this call revoked it';
COMMENT ON FUNCTION token_store.jwt_revoke_id(uuid, text) IS
    'token_store: revoke a stored token by its row id; true if this call revoked it';
COMMENT ON FUNCTION token_store.jwt_revoke_subject(text, text) IS
    'token_store: refuse every token of a subject issued until now; returns how many stored tokens it revoked';
COMMENT ON FUNCTION token_store.jwt_payload(uuid) IS
    'token_store: the decrypted claims of a stored token';
COMMENT ON FUNCTION token_store.purge(bigint) IS
    'token_store: delete expired rows now and return how many';
COMMENT ON FUNCTION token_store.reencrypt(integer) IS
    'token_store: move rows still sealed under a previous encryption key onto the current one; returns how many';
COMMENT ON FUNCTION token_store.signing_keys_changed() IS
    'token_store: trigger on signing_keys that makes every session drop the parsed keys it no longer needs';
COMMENT ON FUNCTION token_store.stats() IS
    'token_store: counts, purge figures and verification outcomes';
COMMENT ON FUNCTION token_store.session_start(jsonb, interval, interval, jsonb, text, text) IS
    'token_store: start a session for claims->>''sub'' and return its first access and refresh tokens (RFC 6749 token response)';
COMMENT ON FUNCTION token_store.session_refresh(text, jsonb, text) IS
    'token_store: trade a refresh token for a new pair of its session, or {"error": "invalid_grant", "reason": ...}';
COMMENT ON FUNCTION token_store.session_end(uuid, text) IS
    'token_store: end one session (logout); true if this call ended it';
COMMENT ON FUNCTION token_store.session_end_subject(text, uuid, text) IS
    'token_store: end every session of a subject, or all but one (logout everywhere); returns how many';
COMMENT ON FUNCTION token_store.sessions(text) IS
    'token_store: the live sessions of a subject, newest first, with their metadata';
COMMENT ON FUNCTION token_store.dpop_verify(text, text, text, text, text) IS
    'token_store: check a DPoP proof (RFC 9449) for a request and remember its jti; {"jkt", "jti", "iat"} or ERROR 28000';
COMMENT ON FUNCTION token_store.jwt_verify_dpop(text, text, text, text, text, text) IS
    'token_store: the verified claims of a DPoP-bound access token presented with a proof of its key, or ERROR 28000';
COMMENT ON FUNCTION token_store.revocations_since(timestamptz) IS
    'token_store: the revocations, session ends and key state changes since a time, as long as their rows are kept';
COMMENT ON FUNCTION token_store.revocation_event() IS
    'token_store: trigger that announces a revocation, session end or key state change on token_store.notify_channel';

-- The three roles are made here where absent. One that exists already is taken only if it is a
-- plain NOLOGIN role that no other role administers (a role left by an earlier install of
-- token_store, in this database or another, is one); token_store_purge also has no member at all.
-- Otherwise whoever made it could log in as it, or hand it out, and use what is granted below.
DO $roles$
DECLARE
    r record;
    boss text;
BEGIN
    FOR r IN SELECT a.oid, a.rolname, a.rolcanlogin OR a.rolsuper OR a.rolcreaterole OR a.rolcreatedb
                    OR a.rolreplication OR a.rolbypassrls AS powerful
               FROM pg_catalog.pg_roles a
              WHERE a.rolname OPERATOR(pg_catalog.=) ANY (ARRAY['token_store_app', 'token_store_admin', 'token_store_purge'])
    LOOP
        IF r.powerful THEN
            RAISE EXCEPTION 'role "%" already exists and can log in or holds role attributes', r.rolname
                USING ERRCODE = '55000',
                      DETAIL = 'token_store takes an existing role of that name only if it is NOLOGIN, not a superuser and without CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS.',
                      HINT = 'Drop the role, or make it a plain NOLOGIN role (ALTER ROLE ... NOLOGIN NOCREATEROLE ...), then run CREATE EXTENSION token_store again.';
        END IF;
        SELECT pg_catalog.pg_get_userbyid(m.member) INTO boss
          FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON b.oid OPERATOR(pg_catalog.=) m.member
         WHERE m.roleid OPERATOR(pg_catalog.=) r.oid
           AND (m.admin_option AND NOT b.rolsuper OR r.rolname OPERATOR(pg_catalog.=) 'token_store_purge')
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'role "%" already exists and role "%" is a member or administrator of it', r.rolname, boss
                USING ERRCODE = '55000',
                      DETAIL = 'token_store_purge must be granted to nobody, and no role but a superuser may administer token_store_app or token_store_admin (WITH ADMIN OPTION).',
                      HINT = 'Revoke the role from that member (or drop the role), then run CREATE EXTENSION token_store again.';
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_app') THEN
        CREATE ROLE token_store_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_admin') THEN
        CREATE ROLE token_store_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_purge') THEN
        CREATE ROLE token_store_purge NOLOGIN;
    END IF;
END
$roles$;

REVOKE ALL ON ALL TABLES IN SCHEMA token_store FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA token_store FROM PUBLIC;
REVOKE ALL ON SCHEMA token_store FROM PUBLIC;
GRANT USAGE ON SCHEMA token_store TO token_store_app, token_store_admin;

GRANT EXECUTE ON FUNCTION
    token_store.jwt_issue(jsonb, interval, text),
    token_store.jwt_store(text),
    token_store.jwt_verify(text, text, text),
    token_store.jwt_valid(text),
    token_store.jwt_introspect(text),
    token_store.jwt_revoke(text, text),
    token_store.jwt_revoke_id(uuid, text),
    token_store.jwt_revoke_subject(text, text),
    token_store.jwks(),
    token_store.session_start(jsonb, interval, interval, jsonb, text, text),
    token_store.session_refresh(text, jsonb, text),
    token_store.session_end(uuid, text),
    token_store.session_end_subject(text, uuid, text),
    token_store.sessions(text),
    token_store.dpop_verify(text, text, text, text, text),
    token_store.jwt_verify_dpop(text, text, text, text, text, text),
    token_store.revocations_since(timestamptz)
TO token_store_app, token_store_admin;

GRANT EXECUTE ON FUNCTION
    token_store.create_key(text, text, text),
    token_store.generate_key(text, text),
    token_store.import_jwks(jsonb),
    token_store.set_key_state(text, text),
    token_store.jwt_payload(uuid),
    token_store.purge(bigint),
    token_store.reencrypt(integer),
    token_store.stats()
TO token_store_admin;

-- operators look rows up (ids for jwt_payload / jwt_revoke_id); the claims in them stay sealed
GRANT SELECT ON token_store.tokens, token_store.subject_revocations TO token_store_admin;
GRANT SELECT ON token_store.keys, token_store.stats TO token_store_admin;
-- sessions without their sealed claims and metadata (sessions() decrypts the metadata)
GRANT SELECT (id, subject, generation, created_at, refreshed_at, expires_at, access_expires_at,
              access_ttl, refresh_ttl, kid, ended_at, end_reason, key_fingerprint, dpop_jkt)
    ON token_store.sessions TO token_store_admin;

-- The purge worker connects as the bootstrap superuser (a PostgreSQL 15 background worker cannot
-- log in as a NOLOGIN role) and does its purging as token_store_purge, which can do nothing but
-- call purge_expired: a SECURITY DEFINER function that deletes only rows past their end (by the
-- server's settings, not the caller's). It holds no privilege on the tables, so even logged in it
-- cannot un-revoke a token. token_store_purge is granted to nobody.
GRANT USAGE ON SCHEMA token_store TO token_store_purge;
GRANT EXECUTE ON FUNCTION token_store.purge_expired(text, bigint, double precision) TO token_store_purge;
COMMENT ON FUNCTION token_store.purge_expired(text, bigint, double precision) IS
    'token_store: one purge step (tokens, sessions, dpop_proofs, subject_revocations): delete rows past their end';
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it can only call purge_expired';

-- Issuers (issue 21): for token_store_admin only. The worker writes fetch results as the bootstrap
-- superuser it connects as (search_path pinned), never as token_store_purge: a role that a CREATEROLE
-- holder could make able to log in must not be able to plant an issuer's key.
CREATE VIEW token_store.issuers AS
    SELECT p.issuer,
           coalesce(p.jwks_uri, p.discovered_jwks_uri) AS jwks_uri,
           p.jwks_uri IS NULL AS discovery,
           p.audiences, p.algs, p.refresh,
           (SELECT count(*) FROM token_store.issuer_keys k WHERE k.issuer = p.issuer)::integer
               AS key_count,
           p.fetched_at, p.next_fetch_at, p.failures, p.last_error, p.last_error_at,
           token_store.issuer_verifications(p.issuer) AS verifications
    FROM token_store.identity_providers p;
COMMENT ON VIEW token_store.issuers IS
    'token_store: registered issuers and their fetch state, never key material';
COMMENT ON FUNCTION token_store.issuer_verifications(text) IS
    'token_store: verification outcomes of an issuer''s tokens since the server started';
COMMENT ON FUNCTION token_store.issuer_add(text, text, text[], text[], interval) IS
    'token_store: register or update an identity provider whose tokens are verified with its JWKS, and fetch its keys now';
COMMENT ON FUNCTION token_store.issuer_remove(text) IS
    'token_store: forget an issuer and its keys; true if it was registered';
COMMENT ON FUNCTION token_store.issuer_refresh(text) IS
    'token_store: fetch the keys of one issuer (or all) now and return their rows of the issuers view';
REVOKE ALL ON FUNCTION
    token_store.issuer_add(text, text, text[], text[], interval),
    token_store.issuer_remove(text),
    token_store.issuer_refresh(text),
    token_store.issuer_verifications(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    token_store.issuer_add(text, text, text[], text[], interval),
    token_store.issuer_remove(text),
    token_store.issuer_refresh(text),
    token_store.issuer_verifications(text)
TO token_store_admin;
GRANT SELECT ON token_store.issuers TO token_store_admin;
