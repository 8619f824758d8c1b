-- sessions: trade this client's refresh token for a new pair and keep the new refresh token
UPDATE bench.sess SET rt = token_store.session_refresh(rt) ->> 'refresh_token' WHERE client = :client_id;
