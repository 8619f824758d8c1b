-- Keys: register, list, change state. Material is never shown.
SELECT token_store.create_key('k1', 'HS256', 'regress-secret-0123456789abcdefghijkl');
SELECT token_store.create_key('k384', 'HS384', repeat('s', 48));
SELECT token_store.create_key('kjwk', 'HS512', '{"kty":"oct","k":"' || rtrim(translate(encode(convert_to(repeat('j', 64), 'UTF8'), 'base64'), E'+/\n', '-_'), '=') || '"}');
SELECT kid, alg, state, can_sign FROM token_store.keys ORDER BY kid;
-- errors: each with its SQLSTATE
SELECT token_store.create_key('k1', 'HS256', 'regress-secret-0123456789abcdefghijkl');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('bad', 'HS999', 'whatever');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('bad', 'none', 'whatever');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('bad', 'HS256', 'too short');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('bad', 'HS256', '{"kty":"oct"}');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.create_key('', 'HS256', 'regress-secret-0123456789abcdefghijkl');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.set_key_state('k384', 'verify_only');
SELECT token_store.set_key_state('k384', 'sleeping');
\echo :LAST_ERROR_SQLSTATE
SELECT token_store.set_key_state('nobody', 'retired');
\echo :LAST_ERROR_SQLSTATE
SELECT kid, state FROM token_store.keys ORDER BY kid;
-- the secret is stored sealed: it does not appear in the table
SELECT count(*) AS rows_showing_the_secret FROM token_store.signing_keys
 WHERE position(convert_to('regress-secret', 'UTF8') IN material) > 0;
