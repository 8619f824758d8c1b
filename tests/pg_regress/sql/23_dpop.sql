-- Sender-constrained tokens (DPoP, RFC 9449) and revocation events: the SQL surface and its
-- refusals. Proofs are dated, so the one used here (RFC 9449 figure 3, from 2019) shows the
-- checks that come before its age, then its age; tests/client/test_dpop.py makes fresh ones.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS token_store;
RESET client_min_messages;
CREATE EXTENSION token_store;
SELECT token_store.create_key('k1', 'HS256', repeat('s', 32));
SELECT p.proname, pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
       pg_catalog.pg_get_function_result(p.oid) AS result, p.prosecdef AS security_definer
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'token_store'::regnamespace
   AND p.proname IN ('dpop_verify', 'jwt_verify_dpop', 'revocations_since', 'session_start', 'session_refresh')
 ORDER BY 1;
SELECT name, setting, unit, context FROM pg_catalog.pg_settings
 WHERE name IN ('token_store.dpop_enforce', 'token_store.dpop_max_age', 'token_store.notify_channel')
 ORDER BY 1;
\set proof 'eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg'
\set jkt '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I'
\set VERBOSITY default
-- another method, another URI, then the URI as written differently: its age is what remains
SELECT token_store.dpop_verify(:'proof', 'GET', 'https://server.example.com/token');
SELECT token_store.dpop_verify(:'proof', 'POST', 'https://server.example.com/other');
SELECT token_store.dpop_verify(:'proof', 'POST', 'HTTPS://Server.Example.COM:443/token?x=1');
\echo :LAST_ERROR_SQLSTATE
-- not a proof
SELECT token_store.dpop_verify('abc', 'POST', 'https://server.example.com/token');
SELECT token_store.dpop_verify(replace(:'proof', 'eyJ0eXAiOiJkcG9wK2p3dCIs', 'eyJ0eXAiOiJKV1QiLCJ4Ijoi'),
                               'POST', 'https://server.example.com/token');
-- the application's own arguments
SELECT token_store.dpop_verify(:'proof', 'POST', '/token');
SELECT token_store.dpop_verify(:'proof', '', 'https://server.example.com/token');
SELECT token_store.dpop_verify(NULL, 'POST', 'https://server.example.com/token') IS NULL AS null_gives_null;
-- a token bound to the key of that proof (cnf.jkt, kept by jwt_issue) needs a proof of it
SELECT token_store.jwt_issue(jsonb_build_object('sub', 'alice', 'cnf', jsonb_build_object('jkt', :'jkt'))) AS bound \gset
SELECT token_store.jwt_verify(:'bound');
SELECT token_store.jwt_valid(:'bound') AS valid, token_store.jwt_introspect(:'bound') AS introspect;
SELECT token_store.jwt_verify_dpop(:'bound', :'proof', 'POST', 'https://server.example.com/token');
SET token_store.dpop_enforce = off;
SELECT token_store.jwt_verify(:'bound') -> 'cnf' AS cnf;
RESET token_store.dpop_enforce;
-- a bound session: its access tokens carry cnf.jkt, its refresh needs the thumbprint
SELECT token_store.session_start('{"sub": "bob"}', dpop_jkt => :'jkt') AS login \gset
SELECT token_store.jwt_introspect(:'login'::jsonb ->> 'access_token') ->> 'reason' AS plain_verify,
       (SELECT dpop_jkt = :'jkt' FROM token_store.sessions) AS session_bound;
SELECT token_store.session_refresh(:'login'::jsonb ->> 'refresh_token');
SELECT token_store.session_refresh(:'login'::jsonb ->> 'refresh_token', NULL, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT jsonb_object_keys(token_store.session_refresh(:'login'::jsonb ->> 'refresh_token', NULL, :'jkt')) AS key
 ORDER BY 1;
SELECT token_store.session_start('{"sub": "bob"}', dpop_jkt => 'not-a-thumbprint');
SELECT token_store.session_start('{"sub": "bob", "cnf": {"jkt": "x"}}');
-- revocation events, read back from the tables
SELECT token_store.jwt_issue('{"sub": "carol", "jti": "c-1"}') AS carol \gset
SELECT token_store.jwt_revoke(:'carol');
SELECT token_store.session_end((:'login'::jsonb ->> 'session_id')::uuid);
SELECT token_store.jwt_revoke_subject('dave');
SELECT event, token_id IS NOT NULL AS has_token_id, jti, sub, sid IS NOT NULL AS has_sid, kid,
       at > now() - interval '1 minute' AS recent
  FROM token_store.revocations_since(now() - interval '1 minute') ORDER BY event, sub;
SELECT count(*) FROM token_store.revocations_since(now() + interval '1 minute');
SET token_store.notify_channel = 'token_store_events';
SET token_store.notify_channel = 'a_channel_name_longer_than_sixty_three_bytes_is_refused_by_notify';
RESET token_store.notify_channel;
DROP EXTENSION token_store;
