-- token_store 0.3.0 -> 0.4.0
-- Under development until 0.4.0 is archived in sql/released/; never edit once released.
-- tests/client/test_upgrade.py installs each older release, makes data, runs ALTER EXTENSION
-- token_store UPDATE and compares every object with a fresh 0.4.0 install.

-- issue 19: a read path that is never stale
-- Readers are safe in parallel workers (they read under the active snapshot and write nothing);
-- stats() is restricted to the leader (without preloading its counts are the backend's own).
ALTER FUNCTION token_store.jwt_verify(text, text, text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_valid(text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_introspect(text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwks() PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_payload(uuid) PARALLEL SAFE;
ALTER FUNCTION token_store.sessions(text) PARALLEL SAFE;
ALTER FUNCTION token_store.stats() PARALLEL RESTRICTED;
-- The keys trigger is only a prompt to drop parsed keys from memory now; it fires in replica mode too.
ALTER TABLE token_store.signing_keys ENABLE ALWAYS TRIGGER signing_keys_changed;
COMMENT ON FUNCTION token_store.signing_keys_changed() IS
    'token_store: trigger on signing_keys that makes every session drop the parsed keys it no longer needs';

-- issue 20: hardening: the purge role can only purge (purge_expired, no privilege on the tables)
CREATE FUNCTION token_store."purge_expired"(
	"step" TEXT,
	"max_rows" bigint,
	"resume_from" double precision DEFAULT NULL
) RETURNS TABLE (
	"deleted" bigint,
	"next_from" double precision
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'purge_expired_wrapper';
REVOKE ALL ON FUNCTION token_store.purge_expired(text, bigint, double precision) FROM PUBLIC;
REVOKE ALL ON token_store.tokens, token_store.subject_revocations, token_store.sessions,
    token_store.refresh_tokens FROM token_store_purge;
GRANT EXECUTE ON FUNCTION token_store.purge_expired(text, bigint, double precision) TO token_store_purge;
COMMENT ON FUNCTION token_store.purge_expired(text, bigint, double precision) IS
    'token_store: one purge step (tokens, sessions, subject_revocations): delete up to max_rows rows past their end';
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it can only call purge_expired';
