-- Row-level security keyed on the verified token's subject.
-- Shown and explained in docs/rls.md; run by tests/client/test_docs.py after docs/postgrest.sql
-- (which makes the roles and api_auth.authenticate, the only writer of request.jwt.claims).

-- The verified subject of this request; NULL when no token was verified in this transaction.
CREATE FUNCTION api_auth.current_sub() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
$$;
GRANT EXECUTE ON FUNCTION api_auth.current_sub() TO web_anon, web_user;

-- The schema PostgREST exposes (db-schemas = "api").
CREATE SCHEMA api;
GRANT USAGE ON SCHEMA api TO web_anon, web_user;

CREATE TABLE api.notes (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner text   NOT NULL DEFAULT api_auth.current_sub(),
    body  text   NOT NULL
);
ALTER TABLE api.notes ENABLE ROW LEVEL SECURITY;

-- A row is seen, changed and written only by its owner. The sub-select makes PostgreSQL read
-- the subject once per statement, not once per row.
CREATE POLICY notes_owner ON api.notes
    USING (owner = (SELECT api_auth.current_sub()))
    WITH CHECK (owner = (SELECT api_auth.current_sub()));

GRANT SELECT, INSERT, UPDATE, DELETE ON api.notes TO web_user;
