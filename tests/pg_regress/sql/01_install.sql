-- Installing: one command, one schema, three roles, settings with their defaults.
CREATE EXTENSION token_store;
-- from the catalogs, not \dx: psql 18 added a column to \dx
SELECT e.extname, e.extversion, a.default_version, e.extnamespace::regnamespace AS schema,
       obj_description(e.oid, 'pg_extension') AS description
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'token_store';
SELECT nspname FROM pg_namespace WHERE nspname = 'token_store';
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'token_store_%' ORDER BY 1;
SHOW token_store.require_stored;
SHOW token_store.leeway;
SHOW token_store.max_token_bytes;
SHOW token_store.purge_interval;
SHOW token_store.purge_batch_size;
-- the key is set in this cluster, but never shown, not even to a superuser
SHOW token_store.encryption_key;
SELECT count(*) AS listed_in_show_all FROM pg_settings WHERE name = 'token_store.encryption_key';
-- the extension cannot be moved to another schema
ALTER EXTENSION token_store SET SCHEMA public;
\echo :LAST_ERROR_SQLSTATE
