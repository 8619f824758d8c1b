-- sessions, beside it: issue (sign, seal, store) one access token
SELECT token_store.jwt_issue('{"sub": "bench-session-user", "role": "reader"}'::jsonb);
