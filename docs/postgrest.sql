-- token_store behind PostgREST: refuse revoked tokens before any request runs.
-- Shown and explained in docs/postgrest.md; run by tests/client/test_docs.py.
-- Run once per database, as a superuser (it creates roles), after CREATE EXTENSION token_store.

-- PostgREST's roles: it logs in as authenticator and, for each request, switches to web_anon
-- (no token) or to the role named by the token's "role" claim (web_user).
-- api_token_check owns the verification function; its only right is token_store_app's.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'web_anon') THEN
        CREATE ROLE web_anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'web_user') THEN
        CREATE ROLE web_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticator') THEN
        CREATE ROLE authenticator LOGIN NOINHERIT;   -- give it a password: ALTER ROLE ... PASSWORD
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'api_token_check') THEN
        CREATE ROLE api_token_check NOLOGIN;
    END IF;
END
$roles$;
GRANT web_anon, web_user TO authenticator;
GRANT token_store_app TO api_token_check;

CREATE SCHEMA api_auth;
GRANT USAGE ON SCHEMA api_auth TO web_anon, web_user;

-- Verify an access token (audience "api") with token_store and make its claims this
-- transaction's request.jwt.claims. A rejected token raises SQLSTATE PT401: PostgREST answers
-- HTTP 401 with the message, e.g. "token rejected: revoked".
CREATE FUNCTION api_auth.authenticate(token text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims jsonb;
BEGIN
    BEGIN
        claims := token_store.jwt_verify(token, 'api');
    EXCEPTION
        WHEN invalid_authorization_specification THEN   -- 28000: token rejected: <reason>
            RAISE SQLSTATE 'PT401' USING MESSAGE = SQLERRM;
        WHEN invalid_text_representation THEN           -- 22P02: invalid token: ...
            RAISE SQLSTATE 'PT401' USING MESSAGE = 'token rejected: malformed';
    END;
    PERFORM set_config('request.jwt.claims', claims::text, true);   -- true: this transaction only
    RETURN claims;
END
$$;
ALTER FUNCTION api_auth.authenticate(text) OWNER TO api_token_check;
REVOKE ALL ON FUNCTION api_auth.authenticate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_auth.authenticate(text) TO web_anon, web_user;

-- PostgREST's db-pre-request: runs before every request, after PostgREST has checked the
-- token's signature and exp with its jwt-secret and switched to the token's role. It adds what
-- only the database knows: the token is stored, and neither it nor its subject is revoked.
CREATE FUNCTION api_auth.check_token() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- PostgREST sets request.headers (JSON, lower-case names) for this transaction only; on a
    -- pooled connection it may be '' from an earlier transaction, hence the nullif.
    header text := nullif(current_setting('request.headers', true), '')::json ->> 'authorization';
    token  text := substring(header FROM '^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$');
BEGIN
    IF header IS NULL THEN
        RETURN;   -- anonymous request, runs as web_anon
    END IF;
    IF token IS NULL THEN
        RAISE SQLSTATE 'PT401' USING MESSAGE = 'expected "Authorization: Bearer <token>"';
    END IF;
    PERFORM api_auth.authenticate(token);
END
$$;
REVOKE ALL ON FUNCTION api_auth.check_token() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_auth.check_token() TO web_anon, web_user;
