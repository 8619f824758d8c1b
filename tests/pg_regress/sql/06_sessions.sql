-- Sessions and refresh tokens, as an application calls them. Tokens, ids and times differ on every
-- run, so what is shown is their shape and what they do.
CREATE EXTENSION token_store;
SELECT token_store.create_key('k1', 'HS256', repeat('s', 32));
-- login: a session and its first pair, in the OAuth 2.0 token response shape
SELECT token_store.session_start('{"sub": "alice", "role": "user"}', metadata => '{"device": "phone"}') AS login \gset
SELECT jsonb_object_keys(:'login'::jsonb) AS key ORDER BY 1;
SELECT :'login'::jsonb ->> 'token_type' AS token_type, :'login'::jsonb -> 'expires_in' AS expires_in,
       left(:'login'::jsonb ->> 'refresh_token', 4) AS refresh_prefix,
       length(:'login'::jsonb ->> 'refresh_token') AS refresh_length;
SELECT :'login'::jsonb ->> 'access_token' AS access, :'login'::jsonb ->> 'refresh_token' AS refresh,
       :'login'::jsonb ->> 'session_id' AS sid \gset
-- the access token is a stored JWT carrying the session's id as sid
SELECT token_store.jwt_verify(:'access') - 'exp' - 'iat' - 'jti' - 'sid' AS claims,
       token_store.jwt_verify(:'access') ->> 'sid' = :'sid' AS carries_sid;
-- only the refresh token's SHA-256 is stored; metadata and claims are sealed
SELECT generation, token_hash = sha256(convert_to(:'refresh', 'UTF8')) AS hash_matches, used_at IS NULL AS unused
  FROM token_store.refresh_tokens;
SELECT count(*) AS rows_in_clear FROM token_store.sessions s
 WHERE s::text LIKE '%phone%' OR s::text LIKE '%user%';
-- "your devices"
SELECT session_id = :'sid'::uuid AS same_session, generation, metadata FROM token_store.sessions('alice');
-- refresh: a new pair of the same session
SELECT token_store.session_refresh(:'refresh') AS next \gset
SELECT :'next'::jsonb ->> 'session_id' = :'sid' AS same_session,
       :'next'::jsonb ->> 'refresh_token' <> :'refresh' AS new_refresh_token,
       token_store.jwt_valid(:'next'::jsonb ->> 'access_token') AS access_valid;
SELECT :'next'::jsonb ->> 'refresh_token' AS refresh2 \gset
-- a role change: the next access token carries the new claims (verified in the next statement:
-- like any STABLE function, a verify does not see what its own statement wrote)
SELECT token_store.session_refresh(:'refresh2', '{"role": "admin"}') ->> 'access_token' AS access3 \gset
SELECT token_store.jwt_verify(:'access3') ->> 'role' AS role;
SELECT generation FROM token_store.sessions('alice');
-- the first refresh token again, past token_store.refresh_reuse_interval: refused, session ended
SET token_store.refresh_reuse_interval = 0;
SELECT token_store.session_refresh(:'refresh');
SELECT token_store.session_refresh(:'refresh2');
SELECT token_store.jwt_introspect(:'access');
SELECT token_store.jwt_verify(:'access');
\echo :LAST_ERROR_SQLSTATE
SET token_store.require_stored = off;
SELECT token_store.jwt_valid(:'access');
RESET token_store.require_stored;
SELECT count(*) AS live FROM token_store.sessions('alice');
SELECT end_reason FROM token_store.sessions;
RESET token_store.refresh_reuse_interval;
-- refusals are answers, never errors
SELECT token_store.session_refresh('not a refresh token');
SELECT token_store.session_refresh('tsr_' || repeat('A', 43));
-- logout, and logout everywhere else
SELECT token_store.session_start('{"sub": "bob"}') ->> 'session_id' AS b1 \gset
SELECT token_store.session_start('{"sub": "bob"}') ->> 'session_id' AS b2 \gset
SELECT token_store.session_start('{"sub": "bob"}') ->> 'session_id' AS b3 \gset
SELECT token_store.session_end(:'b1', 'logout');
SELECT token_store.session_end(:'b1');
SELECT token_store.session_end_subject('bob', keep_session => :'b3');
SELECT session_id = :'b3'::uuid AS kept FROM token_store.sessions('bob');
SELECT token_store.session_end_subject('bob');
SELECT count(*) AS live FROM token_store.sessions('bob');
-- bad arguments: 22023
SELECT token_store.session_start('{"role": "user"}');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.session_start('{"sub": "carol", "sid": "mine"}');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.session_start('{"sub": "carol"}', '0 seconds');
\echo :LAST_ERROR_SQLSTATE
-- NULL gives NULL (or no rows)
SELECT token_store.session_refresh(NULL) IS NULL AS null_refresh, token_store.session_end(NULL) IS NULL AS null_end;
SELECT count(*) FROM token_store.sessions(NULL);
-- settings
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('token_store.refresh_reuse_interval', 'token_store.session_idle_timeout',
                'token_store.session_max_lifetime') ORDER BY name;
