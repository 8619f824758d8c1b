-- token_store 0.3.0 -> 0.4.0
-- Released with 0.4.0 (archived in sql/released/): never edit.
-- tests/client/test_upgrade.py installs each older release, makes data, runs ALTER EXTENSION
-- token_store UPDATE and compares every object with a fresh 0.4.0 install.

-- issue 19: a read path that is never stale
-- Readers are safe in parallel workers (they read under the active snapshot and write nothing);
-- stats() is restricted to the leader (without preloading its counts are the backend's own).
ALTER FUNCTION token_store.jwt_verify(text, text, text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_valid(text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_introspect(text) PARALLEL SAFE;
ALTER FUNCTION token_store.jwks() PARALLEL SAFE;
ALTER FUNCTION token_store.jwt_payload(uuid) PARALLEL SAFE;
ALTER FUNCTION token_store.sessions(text) PARALLEL SAFE;
ALTER FUNCTION token_store.stats() PARALLEL RESTRICTED;
-- The keys trigger is only a prompt to drop parsed keys from memory now; it fires in replica mode too.
ALTER TABLE token_store.signing_keys ENABLE ALWAYS TRIGGER signing_keys_changed;
COMMENT ON FUNCTION token_store.signing_keys_changed() IS
    'token_store: trigger on signing_keys that makes every session drop the parsed keys it no longer needs';

-- issue 20: hardening: the purge role can only purge (purge_expired, no privilege on the tables)
CREATE FUNCTION token_store."purge_expired"(
	"step" TEXT,
	"max_rows" bigint,
	"resume_from" double precision DEFAULT NULL
) RETURNS TABLE (
	"deleted" bigint,
	"next_from" double precision
)
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'purge_expired_wrapper';
REVOKE ALL ON FUNCTION token_store.purge_expired(text, bigint, double precision) FROM PUBLIC;
REVOKE ALL ON token_store.tokens, token_store.subject_revocations, token_store.sessions,
    token_store.refresh_tokens FROM token_store_purge;
GRANT EXECUTE ON FUNCTION token_store.purge_expired(text, bigint, double precision) TO token_store_purge;
COMMENT ON FUNCTION token_store.purge_expired(text, bigint, double precision) IS
    'token_store: one purge step (tokens, sessions, subject_revocations): delete up to max_rows rows past their end';
COMMENT ON ROLE token_store_purge IS
    'token_store: the role the purge worker acts as (NOLOGIN, granted to nobody): it can only call purge_expired';

-- issue 21: issuers (identity providers whose tokens are verified with the keys of their JWKS)
-- Identity providers whose tokens are verified with their own published keys (issuers). The
-- worker fetches each one's JWKS; issuer_keys holds the keys of its latest good fetch.
CREATE TABLE token_store.identity_providers (
    issuer              text        PRIMARY KEY CHECK (issuer <> '' AND octet_length(issuer) <= 2048),
    -- null: OpenID Connect discovery at <issuer>/.well-known/openid-configuration
    jwks_uri            text        CHECK (octet_length(jwks_uri) <= 2048),
    audiences           text[],
    algs                text[],
    refresh             interval    NOT NULL DEFAULT '1 hour',
    discovered_jwks_uri text,
    etag                text,
    -- the latest good fetch (200 or 304), and when its keys are due again
    fetched_at          timestamptz,
    fresh_until         timestamptz,
    -- the latest attempt, good or not (early fetches are at most one per issuer_min_refresh)
    attempted_at        timestamptz,
    next_fetch_at       timestamptz NOT NULL DEFAULT now(),
    failures            integer     NOT NULL DEFAULT 0,
    last_error          text,
    last_error_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE token_store.identity_providers IS
    'token_store: issuers whose tokens are verified with the keys of their JWKS, and its fetch state';

-- Public keys of each issuer (SPKI DER), as its JWKS listed them at the latest good fetch.
CREATE TABLE token_store.issuer_keys (
    issuer      text        NOT NULL REFERENCES token_store.identity_providers ON DELETE CASCADE,
    position    integer     NOT NULL,
    kid         text,
    -- null: the JWK named none; it serves the issuer's algorithms of its key type
    alg         text,
    material    bytea       NOT NULL,
    PRIMARY KEY (issuer, position)
);
COMMENT ON TABLE token_store.issuer_keys IS 'token_store: public keys fetched from each issuer''s JWKS';

SELECT pg_catalog.pg_extension_config_dump('token_store.identity_providers', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.issuer_keys', '');

CREATE FUNCTION token_store."issuer_add"(
	"issuer" TEXT,
	"jwks_uri" TEXT DEFAULT NULL,
	"audiences" TEXT[] DEFAULT NULL,
	"algs" TEXT[] DEFAULT NULL,
	"refresh" interval DEFAULT '1 hour'
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'issuer_add_wrapper';

CREATE FUNCTION token_store."issuer_remove"(
	"issuer" TEXT
) RETURNS bool
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'issuer_remove_wrapper';

CREATE FUNCTION token_store."issuer_refresh"(
	"issuer" TEXT DEFAULT NULL
) RETURNS jsonb
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'issuer_refresh_wrapper';

CREATE FUNCTION token_store."issuer_verifications"(
	"issuer" TEXT
) RETURNS jsonb
STABLE STRICT SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'issuer_verifications_wrapper';

CREATE VIEW token_store.issuers AS
    SELECT p.issuer,
           coalesce(p.jwks_uri, p.discovered_jwks_uri) AS jwks_uri,
           p.jwks_uri IS NULL AS discovery,
           p.audiences, p.algs, p.refresh,
           (SELECT count(*) FROM token_store.issuer_keys k WHERE k.issuer = p.issuer)::integer
               AS key_count,
           p.fetched_at, p.next_fetch_at, p.failures, p.last_error, p.last_error_at,
           token_store.issuer_verifications(p.issuer) AS verifications
    FROM token_store.identity_providers p;
COMMENT ON VIEW token_store.issuers IS
    'token_store: registered issuers and their fetch state, never key material';
COMMENT ON FUNCTION token_store.issuer_verifications(text) IS
    'token_store: verification outcomes of an issuer''s tokens since the server started';
COMMENT ON FUNCTION token_store.issuer_add(text, text, text[], text[], interval) IS
    'token_store: register or update an identity provider whose tokens are verified with its JWKS, and fetch its keys now';
COMMENT ON FUNCTION token_store.issuer_remove(text) IS
    'token_store: forget an issuer and its keys; true if it was registered';
COMMENT ON FUNCTION token_store.issuer_refresh(text) IS
    'token_store: fetch the keys of one issuer (or all) now and return their rows of the issuers view';
REVOKE ALL ON FUNCTION
    token_store.issuer_add(text, text, text[], text[], interval),
    token_store.issuer_remove(text),
    token_store.issuer_refresh(text),
    token_store.issuer_verifications(text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    token_store.issuer_add(text, text, text[], text[], interval),
    token_store.issuer_remove(text),
    token_store.issuer_refresh(text),
    token_store.issuer_verifications(text)
TO token_store_admin;
GRANT SELECT ON token_store.issuers TO token_store_admin;
REVOKE ALL ON token_store.identity_providers, token_store.issuer_keys, token_store.issuers FROM PUBLIC;

-- issue 23: sender-constrained tokens (DPoP, RFC 9449) and revocation events

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
ALTER TABLE token_store.tokens ENABLE ALWAYS TRIGGER tokens_revoked_event;
ALTER TABLE token_store.tokens ENABLE ALWAYS TRIGGER tokens_stored_revoked_event;
ALTER TABLE token_store.sessions ENABLE ALWAYS TRIGGER sessions_ended_event;
ALTER TABLE token_store.subject_revocations ENABLE ALWAYS TRIGGER subject_revoked_event;
ALTER TABLE token_store.signing_keys ENABLE ALWAYS TRIGGER key_state_event;

-- the purge worker's new step: the DPoP proofs remembered past their lifetime
COMMENT ON FUNCTION token_store.purge_expired(text, bigint, double precision) IS
    'token_store: one purge step (tokens, sessions, dpop_proofs, subject_revocations): delete rows past their end';
