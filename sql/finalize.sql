-- Views over functions, roles and grants. Loaded last by extension_sql_file!(finalize).
-- Nothing is granted to PUBLIC.

CREATE VIEW token_store.stats AS SELECT * FROM token_store.stats();
COMMENT ON VIEW token_store.stats IS 'token_store: counts, purge figures and verification outcomes';

-- Any change to the keys, by the key functions or by plain SQL, reaches every session's key cache.
CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_store.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION token_store.signing_keys_changed();

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
    'token_store: trigger on signing_keys that makes every session read the keys again';
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

DO $roles$
BEGIN
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
-- log in as a NOLOGIN role) and does its purging as token_store_purge: it reads and deletes expired
-- rows; SELECT ... FOR UPDATE SKIP LOCKED needs UPDATE on one column, the least useful one.
-- token_store_purge is granted to nobody.
GRANT USAGE ON SCHEMA token_store TO token_store_purge;
GRANT SELECT, DELETE ON token_store.tokens, token_store.subject_revocations, token_store.sessions,
    token_store.refresh_tokens TO token_store_purge;
GRANT UPDATE (created_at) ON token_store.tokens, token_store.subject_revocations, token_store.sessions
    TO token_store_purge;
GRANT SELECT, DELETE, UPDATE (expires_at) ON token_store.dpop_proofs TO token_store_purge;
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it reads and deletes expired rows';
