-- token_store 0.2.0 -> 0.3.0
-- Never edit once released. tests/client/test_upgrade.py installs every older release, makes data,
-- runs ALTER EXTENSION token_store UPDATE and compares every object with a fresh 0.3.0 install.

-- ---- Sessions and refresh tokens (issue 13) ----------------------------------------------------

-- One row per login session (one subject on one device). Its refresh tokens are in
-- refresh_tokens; its access tokens are ordinary rows of tokens carrying its id as `sid`.
CREATE TABLE token_store.sessions (
    id                uuid        PRIMARY KEY,
    subject           text        NOT NULL,
    -- rotation order: bumped by every refresh (never derived from clocks)
    generation        bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    refreshed_at      timestamptz NOT NULL DEFAULT now(),
    -- when the newest refresh token expires
    expires_at        timestamptz NOT NULL,
    -- the latest exp of its access tokens: the row outlives it, so an ended session's tokens stay refused
    access_expires_at timestamptz NOT NULL,
    access_ttl        interval    NOT NULL,
    refresh_ttl       interval    NOT NULL,
    kid               text,
    ended_at          timestamptz,
    end_reason        text,
    -- AES-256-GCM like tokens.payload, bound to id: the claims of the next access token, and the
    -- application's metadata (device, user agent, ...)
    claims            bytea       NOT NULL,
    metadata          bytea,
    key_fingerprint   text        NOT NULL
);
CREATE INDEX sessions_subject_idx ON token_store.sessions (subject, created_at DESC);
COMMENT ON TABLE token_store.sessions IS
    'token_store: login sessions; claims and metadata encrypted';

-- The refresh tokens of each session, by SHA-256 (the token itself is never stored); each works
-- once: used_at is set by the refresh that traded it in.
CREATE TABLE token_store.refresh_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id  uuid        NOT NULL,
    generation  bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON token_store.refresh_tokens (session_id, generation);
COMMENT ON TABLE token_store.refresh_tokens IS
    'token_store: SHA-256 of each refresh token, with its session and generation';

SELECT pg_catalog.pg_extension_config_dump('token_store.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.refresh_tokens', '');
REVOKE ALL ON token_store.sessions, token_store.refresh_tokens FROM PUBLIC;

CREATE FUNCTION token_store."session_start"(
	"claims" jsonb,
	"access_ttl" interval DEFAULT '15 minutes',
	"refresh_ttl" interval DEFAULT '30 days',
	"metadata" jsonb DEFAULT NULL,
	"kid" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_start_wrapper';

CREATE FUNCTION token_store."session_refresh"(
	"refresh_token" TEXT,
	"claims" jsonb DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_refresh_wrapper';

CREATE FUNCTION token_store."session_end"(
	"session_id" uuid,
	"reason" TEXT DEFAULT NULL
) RETURNS bool
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_end_wrapper';

CREATE FUNCTION token_store."session_end_subject"(
	"subject" TEXT,
	"keep_session" uuid DEFAULT NULL,
	"reason" TEXT DEFAULT NULL
) RETURNS bigint
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_end_subject_wrapper';

CREATE FUNCTION token_store."sessions"(
	"subject" TEXT
) RETURNS TABLE (
	"session_id" uuid,
	"created_at" timestamp with time zone,
	"refreshed_at" timestamp with time zone,
	"expires_at" timestamp with time zone,
	"generation" bigint,
	"metadata" jsonb
)
STRICT STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sessions_wrapper';

COMMENT ON FUNCTION token_store.session_start(jsonb, interval, interval, jsonb, text) IS
    'token_store: start a session for claims->>''sub'' and return its first access and refresh tokens (RFC 6749 token response)';
COMMENT ON FUNCTION token_store.session_refresh(text, jsonb) IS
    'token_store: trade a refresh token for a new pair of its session, or {"error": "invalid_grant", "reason": ...}';
COMMENT ON FUNCTION token_store.session_end(uuid, text) IS
    'token_store: end one session (logout); true if this call ended it';
COMMENT ON FUNCTION token_store.session_end_subject(text, uuid, text) IS
    'token_store: end every session of a subject, or all but one (logout everywhere); returns how many';
COMMENT ON FUNCTION token_store.sessions(text) IS
    'token_store: the live sessions of a subject, newest first, with their metadata';

REVOKE ALL ON FUNCTION
    token_store.session_start(jsonb, interval, interval, jsonb, text),
    token_store.session_refresh(text, jsonb),
    token_store.session_end(uuid, text),
    token_store.session_end_subject(text, uuid, text),
    token_store.sessions(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    token_store.session_start(jsonb, interval, interval, jsonb, text),
    token_store.session_refresh(text, jsonb),
    token_store.session_end(uuid, text),
    token_store.session_end_subject(text, uuid, text),
    token_store.sessions(text)
TO token_store_app, token_store_admin;

-- sessions without their sealed claims and metadata (sessions() decrypts the metadata)
GRANT SELECT (id, subject, generation, created_at, refreshed_at, expires_at, access_expires_at,
              access_ttl, refresh_ttl, kid, ended_at, end_reason, key_fingerprint)
    ON token_store.sessions TO token_store_admin;

-- the purge worker deletes ended and expired sessions with their refresh tokens
GRANT SELECT, DELETE ON token_store.sessions, token_store.refresh_tokens TO token_store_purge;
GRANT UPDATE (created_at) ON token_store.sessions TO token_store_purge;

-- The read path runs no SQL any more (it reads the tables by index probes), so jwt_verify,
-- jwt_valid and jwt_introspect are no longer SECURITY DEFINER and set no search_path per call.
-- Their EXECUTE grants (token_store_app, token_store_admin, not PUBLIC) are unchanged.
ALTER FUNCTION token_store.jwt_verify(text, text, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_valid(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_introspect(text) SECURITY INVOKER RESET search_path;

-- Keys are cached per backend; a statement-level trigger on signing_keys sends the relcache
-- invalidation that empties those caches in every session, whatever changed the keys.
CREATE FUNCTION token_store."signing_keys_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'signing_keys_changed_wrapper';
REVOKE ALL ON FUNCTION token_store.signing_keys_changed() FROM PUBLIC;
COMMENT ON FUNCTION token_store.signing_keys_changed() IS
    'token_store: trigger on signing_keys that makes every session read the keys again';
CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_store.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION token_store.signing_keys_changed();
