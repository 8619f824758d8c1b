-- token_store 0.3.0 -> 0.4.0
-- Under development until 0.4.0 is archived in sql/released/; never edit once released.
-- tests/client/test_upgrade.py installs each older release, makes data, runs ALTER EXTENSION
-- token_store UPDATE and compares every object with a fresh 0.4.0 install.

-- 23: sender-constrained tokens (DPoP, RFC 9449) and revocation events

-- a session can be bound to a DPoP key
ALTER TABLE token_store.sessions ADD COLUMN dpop_jkt text CHECK (octet_length(dpop_jkt) = 43);
GRANT SELECT (dpop_jkt) ON token_store.sessions TO token_store_admin;

-- the replay cache of DPoP proofs
CREATE TABLE token_store.dpop_proofs (
    jkt         bytea       NOT NULL CHECK (octet_length(jkt) = 32),
    jti         text        NOT NULL CHECK (octet_length(jti) BETWEEN 1 AND 256),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT dpop_proofs_pkey PRIMARY KEY (jkt, jti)
);
COMMENT ON TABLE token_store.dpop_proofs IS
    'token_store: DPoP replay cache, the jti of each accepted proof per key until it expires';
REVOKE ALL ON token_store.dpop_proofs FROM PUBLIC;
GRANT SELECT, DELETE, UPDATE (expires_at) ON token_store.dpop_proofs TO token_store_purge;

-- revocations_since reads the revocations and session ends of a time range
CREATE INDEX tokens_revoked_at_idx ON token_store.tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX sessions_ended_at_idx ON token_store.sessions (ended_at) WHERE ended_at IS NOT NULL;

-- session_start and session_refresh take the thumbprint of a DPoP key as a last argument
DROP FUNCTION token_store.session_start(jsonb, interval, interval, jsonb, text);
CREATE FUNCTION token_store."session_start"(
	"claims" jsonb,
	"access_ttl" interval DEFAULT '15 minutes',
	"refresh_ttl" interval DEFAULT '30 days',
	"metadata" jsonb DEFAULT NULL,
	"kid" TEXT DEFAULT NULL,
	"dpop_jkt" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_start_dpop_wrapper';
DROP FUNCTION token_store.session_refresh(text, jsonb);
CREATE FUNCTION token_store."session_refresh"(
	"refresh_token" TEXT,
	"claims" jsonb DEFAULT NULL,
	"dpop_jkt" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'session_refresh_dpop_wrapper';

CREATE FUNCTION token_store."dpop_verify"(
	"proof" TEXT,
	"htm" TEXT,
	"htu" TEXT,
	"access_token" TEXT DEFAULT NULL,
	"nonce" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'dpop_verify_wrapper';
CREATE FUNCTION token_store."jwt_verify_dpop"(
	"access_token" TEXT,
	"proof" TEXT,
	"htm" TEXT,
	"htu" TEXT,
	"audience" TEXT DEFAULT NULL,
	"issuer" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'jwt_verify_dpop_wrapper';
CREATE FUNCTION token_store."revocations_since"(
	"since" timestamp with time zone
) RETURNS TABLE (
	"event" TEXT,
	"token_id" uuid,
	"jti" TEXT,
	"sub" TEXT,
	"sid" uuid,
	"kid" TEXT,
	"at" timestamp with time zone
)
STRICT STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'revocations_since_wrapper';
CREATE FUNCTION token_store."revocation_event"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'revocation_event_wrapper';

REVOKE ALL ON FUNCTION
    token_store.session_start(jsonb, interval, interval, jsonb, text, text),
    token_store.session_refresh(text, jsonb, text),
    token_store.dpop_verify(text, text, text, text, text),
    token_store.jwt_verify_dpop(text, text, text, text, text, text),
    token_store.revocations_since(timestamptz),
    token_store.revocation_event()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    token_store.session_start(jsonb, interval, interval, jsonb, text, text),
    token_store.session_refresh(text, jsonb, text),
    token_store.dpop_verify(text, text, text, text, text),
    token_store.jwt_verify_dpop(text, text, text, text, text, text),
    token_store.revocations_since(timestamptz)
TO token_store_app, token_store_admin;

COMMENT ON FUNCTION token_store.session_start(jsonb, interval, interval, jsonb, text, text) IS
    'token_store: start a session for claims->>''sub'' and return its first access and refresh tokens (RFC 6749 token response)';
COMMENT ON FUNCTION token_store.session_refresh(text, jsonb, text) IS
    'token_store: trade a refresh token for a new pair of its session, or {"error": "invalid_grant", "reason": ...}';
COMMENT ON FUNCTION token_store.dpop_verify(text, text, text, text, text) IS
    'token_store: check a DPoP proof (RFC 9449) for a request and remember its jti; {"jkt", "jti", "iat"} or ERROR 28000';
COMMENT ON FUNCTION token_store.jwt_verify_dpop(text, text, text, text, text, text) IS
    'token_store: the verified claims of a DPoP-bound access token presented with a proof of its key, or ERROR 28000';
COMMENT ON FUNCTION token_store.revocations_since(timestamptz) IS
    'token_store: the revocations, session ends and key state changes since a time, as long as their rows are kept';
COMMENT ON FUNCTION token_store.revocation_event() IS
    'token_store: trigger that announces a revocation, session end or key state change on token_store.notify_channel';

-- revocation events: each committed revocation, subject revocation, session end and key state
-- change is announced on token_store.notify_channel (when set), whatever made the change
CREATE TRIGGER tokens_revoked_event
    AFTER UPDATE OF revoked_at ON token_store.tokens FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('tokens');
CREATE TRIGGER tokens_stored_revoked_event
    AFTER INSERT ON token_store.tokens FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('tokens');
CREATE TRIGGER sessions_ended_event
    AFTER UPDATE OF ended_at ON token_store.sessions FOR EACH ROW
    WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
    EXECUTE FUNCTION token_store.revocation_event('sessions');
CREATE TRIGGER subject_revoked_event
    AFTER INSERT OR UPDATE ON token_store.subject_revocations FOR EACH ROW
    EXECUTE FUNCTION token_store.revocation_event('subject_revocations');
CREATE TRIGGER key_state_event
    AFTER UPDATE OF state ON token_store.signing_keys FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION token_store.revocation_event('signing_keys');
