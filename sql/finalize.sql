-- Views over functions, roles and grants. Loaded last by extension_sql_file!(finalize).
-- Nothing is granted to PUBLIC.

CREATE VIEW token_store.stats AS SELECT * FROM token_store.stats();
COMMENT ON VIEW token_store.stats IS 'token_store: counts, purge figures and verification outcomes';

-- Any change to the keys, by the key functions or by plain SQL, reaches every session's key cache.
CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_store.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION token_store.signing_keys_changed();

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
COMMENT ON FUNCTION token_store.session_start(jsonb, interval, interval, jsonb, text) IS
    'token_store: start a session for claims->>''sub'' and return its first access and refresh tokens (RFC 6749 token response)';
COMMENT ON FUNCTION token_store.session_refresh(text, jsonb) IS
    'token_store: trade a refresh token for a new pair of its session, or {"error": "invalid_grant", "reason": ...}';
COMMENT ON FUNCTION token_store.session_end(uuid, text) IS
    'token_store: end one session (logout); true if this call ended it';
COMMENT ON FUNCTION token_store.session_end_subject(text, uuid, text) IS
    'token_store: end every session of a subject, or all but one (logout everywhere); returns how many';
COMMENT ON FUNCTION token_store.sessions(text) IS
    'token_store: the live sessions of a subject, newest first, with their metadata';

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
    token_store.session_start(jsonb, interval, interval, jsonb, text),
    token_store.session_refresh(text, jsonb),
    token_store.session_end(uuid, text),
    token_store.session_end_subject(text, uuid, text),
    token_store.sessions(text)
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
              access_ttl, refresh_ttl, kid, ended_at, end_reason, key_fingerprint)
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
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it reads and deletes expired rows';

-- Issuers (issue 21): for token_store_admin only; the worker fetches as token_store_purge.
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
GRANT SELECT, UPDATE ON token_store.identity_providers TO token_store_purge;
GRANT SELECT, INSERT, DELETE ON token_store.issuer_keys TO token_store_purge;
