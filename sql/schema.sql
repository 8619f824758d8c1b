-- Tables, indexes and views of token_store. Loaded first by extension_sql_file!(bootstrap).

-- CREATE EXTENSION makes schema token_store (owned by the installing superuser) unless one exists,
-- and then installs into whatever has that name. A schema its owner can rename is one a look-alike
-- can replace: refuse a schema owned by a role that is not a superuser, one others may create
-- objects in, and one that holds anything at all (nothing of ours is in it yet).
DO $schema$
DECLARE
    nsp        oid;
    owner      oid;
    acl        pg_catalog.aclitem[];
    creator    text;
    strangers  bigint;
BEGIN
    SELECT ns.oid, ns.nspowner, ns.nspacl INTO nsp, owner, acl
      FROM pg_catalog.pg_namespace ns WHERE ns.nspname OPERATOR(pg_catalog.=) 'token_store';
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) owner) THEN
        RAISE EXCEPTION 'schema "token_store" already exists and is owned by role "%", which is not a superuser',
                pg_catalog.pg_get_userbyid(owner)
            USING ERRCODE = '55000',
                  DETAIL = 'Its owner could rename it after the install and put a look-alike schema in its place, whose functions the extension''s callers would then run.',
                  HINT = 'Drop the schema (or rename it), then run CREATE EXTENSION token_store again; it makes its own schema.';
    END IF;
    SELECT CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
      INTO creator
      FROM pg_catalog.aclexplode(acl) a
     WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE' AND a.grantee OPERATOR(pg_catalog.<>) owner
       AND NOT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                          WHERE r.oid OPERATOR(pg_catalog.=) a.grantee), false)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'schema "token_store" already exists and role "%" may create objects in it',
                creator
            USING ERRCODE = '55000',
                  DETAIL = 'A role that may create objects in the extension''s schema can put functions and operators beside the extension''s.',
                  HINT = 'Drop the schema, then run CREATE EXTENSION token_store again; it makes its own schema.';
    END IF;
    SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type WHERE typnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator WHERE oprnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_collation WHERE collnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_conversion WHERE connamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_opfamily WHERE opfnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_config WHERE cfgnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_dict WHERE dictnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_parser WHERE prsnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ts_template WHERE tmplnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_statistic_ext WHERE stxnamespace OPERATOR(pg_catalog.=) nsp)
         + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_extension WHERE extnamespace OPERATOR(pg_catalog.=) nsp
                                                                 AND extname OPERATOR(pg_catalog.<>) 'token_store')
      INTO strangers;
    IF strangers OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'schema "token_store" already exists and holds % objects that are not token_store''s', strangers
            USING ERRCODE = '55000',
                  DETAIL = 'token_store installs only into a schema of its own.',
                  HINT = 'Move those objects elsewhere or drop the schema, then run CREATE EXTENSION token_store again.';
    END IF;
END
$schema$;

-- One row per stored or revoked token. The raw token is never stored: only its SHA-256.
CREATE TABLE token_store.tokens (
    id              uuid        PRIMARY KEY,
    token_hash      bytea       NOT NULL CHECK (octet_length(token_hash) = 32),
    jti             text,
    subject         text,
    issuer          text,
    kid             text,
    issued_at       timestamptz,
    not_before      timestamptz,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    -- AES-256-GCM: nonce || ciphertext || tag, with id bound in as associated data
    payload         bytea       NOT NULL,
    key_fingerprint text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX tokens_expires_at_idx ON token_store.tokens (expires_at);
CREATE INDEX tokens_subject_idx ON token_store.tokens (subject) WHERE subject IS NOT NULL;
COMMENT ON TABLE token_store.tokens IS
    'token_store: one row per stored or revoked JWT; claims encrypted, raw token never kept';

-- Signing and verification keys. material is AES-256-GCM sealed with the kid bound in.
CREATE TABLE token_store.signing_keys (
    kid             text        PRIMARY KEY CHECK (kid <> '' AND octet_length(kid) <= 256),
    alg             text        NOT NULL CHECK (alg IN ('HS256','HS384','HS512','RS256','RS384','RS512',
                                                        'PS256','PS384','PS512','ES256','ES384','EdDSA')),
    state           text        NOT NULL DEFAULT 'active'
                                CHECK (state IN ('active', 'verify_only', 'retired')),
    can_sign        boolean     NOT NULL,
    material        bytea       NOT NULL,
    key_fingerprint text        NOT NULL,
    public_jwk      jsonb,
    -- bumped on every change, so per-backend caches of parsed keys notice
    version         bigint      NOT NULL DEFAULT 1,
    -- clock time, so two keys made in one transaction still have an order
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX signing_keys_alg_idx ON token_store.signing_keys (alg, created_at DESC);
COMMENT ON TABLE token_store.signing_keys IS 'token_store: keys; material encrypted, never shown';

-- "log out everywhere": tokens of this subject issued at or before revoked_before are refused.
CREATE TABLE token_store.subject_revocations (
    subject         text        PRIMARY KEY,
    revoked_before  timestamptz NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE token_store.subject_revocations IS 'token_store: subject-wide revocations';

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
    key_fingerprint   text        NOT NULL,
    -- the RFC 7638 thumbprint of the DPoP key the session is bound to (RFC 9449 section 5)
    dpop_jkt          text        CHECK (octet_length(dpop_jkt) = 43)
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

-- The DPoP replay cache: the jti of every accepted proof, per key thumbprint (raw SHA-256), kept
-- while the proof could still pass its iat check; the purge deletes the rest. Not dumped.
CREATE TABLE token_store.dpop_proofs (
    jkt         bytea       NOT NULL CHECK (octet_length(jkt) = 32),
    jti         text        NOT NULL CHECK (octet_length(jti) BETWEEN 1 AND 256),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT dpop_proofs_pkey PRIMARY KEY (jkt, jti)
);
COMMENT ON TABLE token_store.dpop_proofs IS
    'token_store: DPoP replay cache, the jti of each accepted proof per key until it expires';

-- revocations_since reads the revocations and session ends of a time range
CREATE INDEX tokens_revoked_at_idx ON token_store.tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX sessions_ended_at_idx ON token_store.sessions (ended_at) WHERE ended_at IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('token_store.tokens', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.signing_keys', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.subject_revocations', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.refresh_tokens', '');

CREATE VIEW token_store.keys AS
    SELECT kid, alg, state, can_sign, created_at
    FROM token_store.signing_keys;
COMMENT ON VIEW token_store.keys IS 'token_store: registered keys, never their material';

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
