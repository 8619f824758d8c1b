-- per request, what an app that verifies JWTs itself sends: the deny-list lookup by the token's
-- hash (the token's SHA-256, as the bind parameter), one index probe of token_store.tokens
SELECT revoked_at FROM token_store.tokens WHERE token_hash = :hash;
