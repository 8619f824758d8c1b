-- Tokens: issue, verify, introspect, store, revoke. Fixed claims make the tokens reproducible.
SELECT token_store.jwt_issue('{"sub":"alice","iat":1700000000,"exp":4102444800,"jti":"j-1","role":"reader"}', kid => 'k1') AS alice \gset
\echo :alice
SELECT token_store.jwt_verify(:'alice');
SELECT token_store.jwt_valid(:'alice');
SELECT token_store.jwt_introspect(:'alice') - 'token_id' AS introspection,
       token_store.jwt_introspect(:'alice') ? 'token_id' AS has_token_id;
-- the table keeps a hash and sealed claims, never the token or a claim in clear
SELECT subject, jti, kid, issued_at, expires_at, revoked_at, octet_length(token_hash) AS hash_bytes,
       token_hash = sha256(convert_to(:'alice', 'UTF8')) AS hash_matches
  FROM token_store.tokens;
SELECT count(*) AS rows_in_clear FROM token_store.tokens t
 WHERE t::text LIKE '%reader%' OR t::text LIKE '%' || :'alice' || '%';
SELECT token_store.jwt_payload(id) FROM token_store.tokens WHERE subject = 'alice';
-- audience and issuer demanded by argument or by setting
SELECT token_store.jwt_issue('{"sub":"bob","iat":1700000000,"exp":4102444800,"jti":"j-2","aud":["api","web"],"iss":"https://id.example"}', kid => 'k1') AS bob \gset
SELECT token_store.jwt_verify(:'bob', 'web', 'https://id.example') ->> 'sub' AS sub;
SELECT token_store.jwt_verify(:'bob', 'mobile');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_verify(:'bob', issuer => 'https://evil.example');
\echo :LAST_ERROR_SQLSTATE
SET token_store.audience = 'mobile';
SELECT token_store.jwt_introspect(:'bob');
RESET token_store.audience;
-- jwt_store: a token made elsewhere (here: alice's, after its row is gone) is verified, then stored once
DELETE FROM token_store.tokens WHERE subject = 'alice';
SELECT token_store.jwt_introspect(:'alice');
SELECT token_store.jwt_store(:'alice') = token_store.jwt_store(:'alice') AS same_id;
SELECT count(*) FROM token_store.tokens WHERE subject = 'alice';
-- revoke: true the first time only
SELECT token_store.jwt_revoke(:'alice', 'logout');
SELECT token_store.jwt_revoke(:'alice', 'logout');
SELECT token_store.jwt_verify(:'alice');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.jwt_valid(:'alice');
SELECT revoke_reason, revoked_at IS NOT NULL AS revoked FROM token_store.tokens WHERE subject = 'alice';
-- revoke by id
SELECT token_store.jwt_revoke_id(id, 'admin') FROM token_store.tokens WHERE subject = 'bob';
SELECT token_store.jwt_revoke_id(id) FROM token_store.tokens WHERE subject = 'bob';
SELECT token_store.jwt_revoke_id('00000000-0000-0000-0000-000000000000');
-- log out everywhere
SELECT token_store.jwt_issue('{"sub":"carol","iat":1700000000,"exp":4102444800,"jti":"j-3"}', kid => 'k1') AS carol1 \gset
SELECT token_store.jwt_issue('{"sub":"carol","iat":1700000001,"exp":4102444800,"jti":"j-4"}', kid => 'k1') AS carol2 \gset
SELECT token_store.jwt_revoke_subject('carol', 'password changed');
SELECT token_store.jwt_introspect(:'carol1'), token_store.jwt_introspect(:'carol2');
-- deny-list mode: a correctly signed token verifies without being stored, until revoked
DELETE FROM token_store.subject_revocations;
SET token_store.require_stored = off;
DELETE FROM token_store.tokens WHERE subject = 'carol';
SELECT token_store.jwt_valid(:'carol1');
SELECT token_store.jwt_revoke(:'carol1');
SELECT token_store.jwt_introspect(:'carol1');
RESET token_store.require_stored;
-- expired tokens and purge
SELECT token_store.jwt_issue('{"sub":"old","iat":1600000000,"exp":1600000600,"jti":"j-5"}', kid => 'k1') AS old \gset
SELECT token_store.jwt_introspect(:'old');
SELECT active, revoked, expired FROM token_store.stats;
SELECT token_store.purge();
SELECT token_store.purge();
SELECT active, revoked, expired, purged_total >= 1 AS purged FROM token_store.stats;
SELECT sum(value::bigint) AS rows_accounted FROM token_store.stats, jsonb_each_text(rows_per_key);
