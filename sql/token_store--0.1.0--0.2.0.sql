-- token_store 0.1.0 -> 0.2.0
-- Never edit once released. tests/client/test_upgrade.py installs 0.1.0, makes data, runs
-- ALTER EXTENSION token_store UPDATE and compares every object with a fresh 0.2.0 install.

-- stats() gains reencrypt_undecryptable: rows the latest reencrypt() could not decrypt.
-- The view over it is made again with it, with its comment and grant.
DROP VIEW token_store.stats;
DROP FUNCTION token_store.stats();
CREATE FUNCTION token_store."stats"() RETURNS TABLE (
	"active" bigint,
	"revoked" bigint,
	"expired" bigint,
	"rows_per_key" jsonb,
	"purged_total" bigint,
	"last_purge_at" timestamp with time zone,
	"last_purge_rows" bigint,
	"last_purge_ms" double precision,
	"worker_pids" INT[],
	"verifications" jsonb,
	"counters_shared" bool,
	"reencrypt_undecryptable" bigint
)
STRICT STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'stats_wrapper';
REVOKE ALL ON FUNCTION token_store.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION token_store.stats() TO token_store_admin;
COMMENT ON FUNCTION token_store.stats() IS
    'token_store: counts, purge figures and verification outcomes';
CREATE VIEW token_store.stats AS SELECT * FROM token_store.stats();
COMMENT ON VIEW token_store.stats IS 'token_store: counts, purge figures and verification outcomes';
REVOKE ALL ON token_store.stats FROM PUBLIC;
GRANT SELECT ON token_store.stats TO token_store_admin;

-- The purge worker acts as token_store_purge, a NOLOGIN role granted to nobody, that may only read
-- and delete rows (UPDATE on one column only because SELECT ... FOR UPDATE needs it).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'token_store_purge') THEN
        CREATE ROLE token_store_purge NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA token_store TO token_store_purge;
GRANT SELECT, DELETE ON token_store.tokens, token_store.subject_revocations TO token_store_purge;
GRANT UPDATE (created_at) ON token_store.tokens, token_store.subject_revocations TO token_store_purge;
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it reads and deletes expired rows';
