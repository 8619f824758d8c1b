-- Login, logout, "log out everywhere" and refresh-token rotation with token_store.
-- Shown and explained in docs/sessions.md; run by tests/client/test_docs.py.
-- Run once per database, as its owner, after CREATE EXTENSION token_store. The app's login role
-- is a member of token_store_app (see the README's Security notes), which is all it needs here.

CREATE SCHEMA app_auth;
GRANT USAGE ON SCHEMA app_auth TO token_store_app;

-- Refresh tokens already traded in, by hash (never the token), to recognise one coming back.
CREATE TABLE app_auth.rotated_refresh_tokens (
    token_hash bytea       PRIMARY KEY,   -- sha256 of the token text
    subject    text        NOT NULL,
    rotated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL       -- the token's exp: the row is useless after it
);
GRANT SELECT, INSERT, DELETE ON app_auth.rotated_refresh_tokens TO token_store_app;

-- A new pair for one session: an access token for the API (aud "api", 15 minutes) and a
-- refresh token that is good only for getting new pairs (aud "refresh", 30 days). Both are
-- stored by jwt_issue. "role" is the role PostgREST switches to (docs/postgrest.md); "sid"
-- names the login session the pair belongs to.
CREATE FUNCTION app_auth.token_pair(subject text, session_id text) RETURNS jsonb
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'token_type', 'Bearer',
        'access_token', token_store.jwt_issue(
            jsonb_build_object('sub', subject, 'aud', 'api', 'role', 'web_user', 'sid', session_id),
            interval '15 minutes'),
        'expires_in', 900,
        'refresh_token', token_store.jwt_issue(
            jsonb_build_object('sub', subject, 'aud', 'refresh', 'sid', session_id),
            interval '30 days'))
$$;

-- Login: call it once the app has checked the user's password (or an OAuth callback, ...).
CREATE FUNCTION app_auth.login(subject text) RETURNS jsonb
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT app_auth.token_pair(subject, gen_random_uuid()::text)
$$;

-- Refresh: trade a refresh token for a new pair. One transaction revokes the old refresh token
-- and issues the new pair, so each refresh token works once. A refresh token that comes back
-- after it was traded in has two holders (it was stolen, or a client was copied): every
-- session of that user ends. Refusals are returned, not raised, so that this revocation commits:
--   {"error": "invalid_grant", "reason": "<token_store reason>" | "reused"}
CREATE FUNCTION app_auth.refresh(refresh_token text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hash    bytea := sha256(convert_to(refresh_token, 'UTF8'));
    claims  jsonb;
    reason  text;
    holder  text;
BEGIN
    BEGIN
        claims := token_store.jwt_verify(refresh_token, 'refresh');
    EXCEPTION
        WHEN invalid_authorization_specification THEN   -- 28000: token rejected: <reason>
            reason := substring(SQLERRM FROM '^token rejected: (.*)$');
        WHEN invalid_text_representation THEN           -- 22P02: not a JWT at all
            reason := 'malformed';
    END;
    IF reason = 'revoked' THEN
        SELECT subject INTO holder FROM app_auth.rotated_refresh_tokens WHERE token_hash = hash;
        IF FOUND THEN
            PERFORM token_store.jwt_revoke_subject(holder, 'refresh token reused');
            reason := 'reused';
        END IF;
    END IF;
    IF reason IS NULL AND NOT token_store.jwt_revoke(refresh_token, 'rotated') THEN
        reason := 'revoked';   -- a concurrent refresh with this token committed first
    END IF;
    IF reason IS NOT NULL THEN
        RETURN jsonb_build_object('error', 'invalid_grant', 'reason', reason);
    END IF;
    INSERT INTO app_auth.rotated_refresh_tokens (token_hash, subject, expires_at)
    VALUES (hash, claims ->> 'sub', to_timestamp((claims ->> 'exp')::double precision));
    RETURN app_auth.token_pair(claims ->> 'sub', claims ->> 'sid');
END
$$;

-- Logout: end this session, both its tokens. True if the refresh token was still live.
CREATE FUNCTION app_auth.logout(access_token text, refresh_token text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM token_store.jwt_revoke(access_token, 'logout');
    RETURN token_store.jwt_revoke(refresh_token, 'logout');
END
$$;

-- Log out everywhere: end every session of the caller (known by a valid access token).
-- Returns how many stored tokens it revoked; tokens of that subject issued up to now are
-- refused even where they were never stored.
CREATE FUNCTION app_auth.logout_everywhere(access_token text) RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT token_store.jwt_revoke_subject(
        token_store.jwt_verify(access_token, 'api') ->> 'sub', 'logout everywhere')
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA app_auth FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app_auth TO token_store_app;
