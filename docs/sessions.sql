-- Login, refresh, logout, "log out everywhere" and "your devices" with token_store's sessions.
-- Shown and explained in docs/sessions.md; run by tests/client/test_docs.py.
-- Run once per database, as its owner, after CREATE EXTENSION token_store. The app's login role
-- is a member of token_store_app (see the README's Security notes), which is all it needs here.

CREATE SCHEMA app_auth;
GRANT USAGE ON SCHEMA app_auth TO token_store_app;

-- Login: a new session, once the app has checked the user's password (or an OAuth callback, ...).
-- The claims of its access tokens are decided here, in one place: the API's audience and the
-- role PostgREST switches to (docs/postgrest.md). "device" is whatever the app wants to show on
-- a "your devices" page; it is stored encrypted.
CREATE FUNCTION app_auth.login(subject text, device jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT token_store.session_start(
        jsonb_build_object('sub', subject, 'aud', 'api', 'role', 'web_user'),
        access_ttl => interval '15 minutes',
        refresh_ttl => interval '30 days',
        metadata => device)
$$;

-- Log out everywhere: end every session of the caller, known by a valid access token, or every
-- one but the caller's own ("log out my other devices"). Returns how many sessions ended.
CREATE FUNCTION app_auth.logout_everywhere(access_token text, keep_this_one boolean DEFAULT false)
    RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT token_store.session_end_subject(
        claims ->> 'sub',
        CASE WHEN keep_this_one THEN (claims ->> 'sid')::uuid END,
        'logout everywhere')
      FROM (SELECT token_store.jwt_verify(access_token, 'api') AS claims) AS caller
$$;

-- "Your devices": the caller's live sessions, newest first, the one making the request marked.
CREATE FUNCTION app_auth.my_devices(access_token text)
    RETURNS TABLE (session_id uuid, this_device boolean, device jsonb, signed_in timestamptz,
                   last_seen timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.session_id, s.session_id = (caller.claims ->> 'sid')::uuid, s.metadata, s.created_at,
           s.refreshed_at
      FROM (SELECT token_store.jwt_verify(access_token, 'api') AS claims) AS caller,
           token_store.sessions(caller.claims ->> 'sub') AS s
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA app_auth FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app_auth TO token_store_app;
