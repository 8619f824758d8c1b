\pset footer off
CREATE EXTENSION IF NOT EXISTS token_store;

\echo '\n1. a signing key, generated inside the database (only its public part is returned)'
SELECT token_store.generate_key('demo', 'HS256') AS key
 WHERE NOT EXISTS (SELECT 1 FROM token_store.keys WHERE kid = 'demo');
SELECT kid, alg, state, can_sign FROM token_store.keys WHERE kid = 'demo';

\echo '2. issue a token for alice, valid 15 minutes'
SELECT token_store.jwt_issue('{"sub": "alice", "role": "reader"}', '15 minutes', 'demo') AS token \gset
\echo :token

\echo '\n3. verify it'
SELECT token_store.jwt_verify(:'token') AS claims;

\echo '4. revoke it'
SELECT token_store.jwt_revoke(:'token', 'demo logout') AS revoked;

\echo '5. verify again'
SELECT token_store.jwt_valid(:'token') AS valid, token_store.jwt_introspect(:'token') AS introspection;

\echo '6. stats'
SELECT active, revoked, expired, worker_pids, verifications FROM token_store.stats;
