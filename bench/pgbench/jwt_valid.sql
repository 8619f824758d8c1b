-- token_store: verify a random stored HS256 token (the token is fetched by id, then verified)
\set id random(1, :ntok)
SELECT token FROM bench.tok_hs256 WHERE id = :id \gset
SELECT token_store.jwt_valid(:token);
