-- Views over functions, roles and grants. Loaded last by extension_sql_file!(finalize).
-- Nothing is granted to PUBLIC.

CREATE VIEW token_store.stats AS SELECT * FROM token_store.stats();
COMMENT ON VIEW token_store.stats IS 'token_store: counts, purge figures and verification outcomes';

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_app') THEN
        CREATE ROLE token_store_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_admin') THEN
        CREATE ROLE token_store_admin NOLOGIN;
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
    token_store.jwks()
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
