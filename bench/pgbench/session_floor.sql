-- sessions, the floor: the rows a refresh writes, by plain SQL into same-shape tables (no lock
-- wait, no crypto): the session row bumped, the old refresh token used, a new refresh token and a
-- new access token row inserted, and this client's refresh token kept (as session_refresh.sql does,
-- in a copy of its table)
WITH s AS (
    UPDATE bench.f_sessions SET generation = generation + 1, refreshed_at = now(),
           access_expires_at = now() + interval '15 minutes'
     WHERE id = (SELECT sid FROM bench.f_sess WHERE client = :client_id)
    RETURNING id, generation),
u AS (
    UPDATE bench.f_refresh SET used_at = now()
     WHERE session_id = (SELECT id FROM s) AND generation = (SELECT generation - 1 FROM s)
    RETURNING 1),
r AS (
    INSERT INTO bench.f_refresh (token_hash, session_id, generation, created_at, expires_at)
    SELECT sha256(gen_random_bytes(32)), id, generation, now(), now() + interval '30 days' FROM s
    RETURNING 1),
t AS (
    INSERT INTO bench.f_tokens (id, token_hash, jti, subject, kid, issued_at, expires_at, payload,
                                key_fingerprint)
    SELECT gen_random_uuid(), sha256(gen_random_bytes(32)), gen_random_uuid()::text,
           'bench-session-user', 'bench-hs256', now(), now() + interval '15 minutes',
           gen_random_bytes(200), '0123456789abcdef' FROM s
    RETURNING 1)
UPDATE bench.f_sess SET rt = encode(gen_random_bytes(32), 'base64')
 WHERE client = :client_id AND (SELECT count(*) FROM u) + (SELECT count(*) FROM r) + (SELECT count(*) FROM t) >= 0;
