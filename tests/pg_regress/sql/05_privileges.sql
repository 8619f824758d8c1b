-- Privileges: nothing for PUBLIC; token_store_app uses tokens; token_store_admin also manages keys.
CREATE ROLE regress_ts_app LOGIN IN ROLE token_store_app;
CREATE ROLE regress_ts_admin LOGIN IN ROLE token_store_admin;
CREATE ROLE regress_ts_nobody LOGIN;
SELECT token_store.jwt_issue('{"sub":"priv","iat":1700000000,"exp":4102444800,"jti":"p-1"}', kid => 'k1') AS tok \gset
SET ROLE regress_ts_app;
SELECT token_store.jwt_verify(:'tok') ->> 'sub' AS sub;
SELECT length(token_store.jwt_issue('{"sub":"from-app"}')) > 0 AS issued;
SELECT * FROM token_store.tokens;
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_payload(id) FROM (SELECT '00000000-0000-0000-0000-000000000000'::uuid AS id) x;
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('app-key', 'HS256', repeat('a', 32));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM token_store.keys;
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.purge();
\echo :LAST_ERROR_SQLSTATE
-- The SQLSTATE only: PostgreSQL's own wording of this refusal changed in 16.
\set VERBOSITY sqlstate
SHOW token_store.encryption_key;
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_settings WHERE name = 'token_store.encryption_key';
RESET ROLE;
SET ROLE regress_ts_admin;
SELECT kid FROM token_store.keys ORDER BY kid;
SELECT token_store.purge() >= 0 AS purged;
SELECT count(*) > 0 AS sees_stats FROM token_store.stats;
RESET ROLE;
SET ROLE regress_ts_nobody;
SELECT token_store.jwt_verify(:'tok');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_valid(:'tok');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_ts_app, regress_ts_admin, regress_ts_nobody;
DROP EXTENSION token_store;
SELECT count(*) AS roles_kept FROM pg_roles WHERE rolname IN ('token_store_app', 'token_store_admin');
