-- per request: one stored HS256 token (-D token=...), verified as an app does once per HTTP request
SELECT token_store.jwt_valid(:token);
