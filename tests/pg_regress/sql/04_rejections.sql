-- Every rejection: SQLSTATE 22P02 for what is not a JWT, 28000 with the reason for refused tokens.
-- Tokens are built by hand from base64url parts so the test needs no other JWT library.
CREATE FUNCTION b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS
  $$ SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=') $$;
SELECT b64url('{"alg":"none"}') || '.' || b64url('{"sub":"x","exp":4102444800}') || '.' AS unsigned \gset
SELECT token_store.jwt_verify(:'unsigned');
\echo :LAST_ERROR_SQLSTATE
SELECT b64url('{"alg":"none"}') || '.' || b64url('{"sub":"x","exp":4102444800}') || '.AAAA' AS alg_none \gset
SELECT token_store.jwt_verify(:'alg_none');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_issue('{"sub":"t","iat":1700000000,"exp":4102444800,"jti":"r-1"}', kid => 'k1') AS good \gset
SELECT split_part(:'good', '.', 1) AS h, split_part(:'good', '.', 2) AS p, split_part(:'good', '.', 3) AS s \gset
-- tampered payload
SELECT token_store.jwt_verify(:'h' || '.' || b64url('{"sub":"admin","iat":1700000000,"exp":4102444800,"jti":"r-1"}') || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
-- unknown kid, and kid with SQL in it
SELECT token_store.jwt_verify(b64url('{"alg":"HS256","kid":"nope"}') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(b64url('{"alg":"HS256","kid":"x'' OR ''1''=''1"}') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
-- header alg differs from the key's alg
SELECT token_store.jwt_verify(b64url('{"alg":"HS384","kid":"k1"}') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
-- an extension header we do not understand
SELECT token_store.jwt_verify(b64url('{"alg":"HS256","kid":"k1","crit":["b64"],"b64":false}') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
-- not a JWT
SELECT token_store.jwt_verify('');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify('only.two');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify('!!!.???.***');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(b64url('[1,2,3]') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(b64url('{"alg":"HS256","alg":"none"}') || '.' || :'p' || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(:'h' || '.' || b64url('{"exp":"tomorrow"}') || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(:'h' || '.' || b64url('{"exp":1e400}') || '.' || :'s');
\echo :LAST_ERROR_SQLSTATE
SET token_store.max_token_bytes = 100;
SELECT token_store.jwt_verify(:'good');
\echo :LAST_ERROR_SQLSTATE
RESET token_store.max_token_bytes;
-- claims: missing exp, not yet valid
SELECT token_store.jwt_issue('{"sub":"t","iat":1700000000,"exp":4102444800,"nbf":4000000000,"jti":"r-2"}', kid => 'k1') AS early \gset
SELECT token_store.jwt_verify(:'early');
\echo :LAST_ERROR_SQLSTATE
-- jwt_valid answers false, jwt_introspect gives the reason, for all of them
SELECT t.label, token_store.jwt_valid(t.tok) AS valid, token_store.jwt_introspect(t.tok) ->> 'reason' AS reason
  FROM (VALUES ('unsigned', :'unsigned'), ('alg none', :'alg_none'), ('early', :'early'), ('garbage', 'x.y.z'),
               ('null', NULL), ('good', :'good')) AS t(label, tok);
-- a retired key verifies nothing
SELECT token_store.set_key_state('k1', 'retired');
SELECT token_store.jwt_introspect(:'good');
SELECT token_store.set_key_state('k1', 'active');
SELECT token_store.jwt_introspect(:'good') ->> 'active' AS active_again;
-- verification outcomes are counted
SELECT (verifications ->> 'algorithm_not_allowed')::int > 0 AS counted_alg,
       (verifications ->> 'malformed')::int > 0 AS counted_malformed,
       (verifications ->> 'ok')::int > 0 AS counted_ok
  FROM token_store.stats;
DROP FUNCTION b64url(text);
