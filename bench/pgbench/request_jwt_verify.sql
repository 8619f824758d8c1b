-- per request: the same token, verified and its claims returned
SELECT token_store.jwt_verify(:token);
