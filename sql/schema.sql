-- Tables, indexes and views of token_store. Loaded first by extension_sql_file!(bootstrap).

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

SELECT pg_catalog.pg_extension_config_dump('token_store.tokens', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.signing_keys', '');
SELECT pg_catalog.pg_extension_config_dump('token_store.subject_revocations', '');

CREATE VIEW token_store.keys AS
    SELECT kid, alg, state, can_sign, created_at
    FROM token_store.signing_keys;
COMMENT ON VIEW token_store.keys IS 'token_store: registered keys, never their material';
