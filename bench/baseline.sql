-- The baseline: what a competent PostgreSQL user writes without token_store, in PL/pgSQL with
-- pgcrypto, in the style of pgjwt (base64url through encode/decode + translate, HS256 through
-- pgcrypto's hmac(text, text, 'sha256')). It does the same jobs as the benchmarked token_store
-- functions on a table of the same shape:
--   jwt_valid / jwt_verify  HS256 signature (key looked up by the header's kid), exp/nbf with a
--                           30 s leeway, then the token's digest() looked up in a unique index;
--                           allow-list (require_stored) or deny-list
--   jwt_store               verify, then store the claims encrypted: raw AES (encrypt_iv, AES-256
--                           CBC, random IV) or pgp_sym_encrypt (jwt_store_pgp)
--   jwt_revoke, jwt_issue   the same, for revocation and signing
-- It is deliberately lean, never slowed on purpose: no EXCEPTION blocks (so unlike
-- token_store.jwt_valid it raises on malformed input instead of returning false), no subject
-- revocation check, no audience/issuer settings, no counters, no constant-time comparison.
-- Loaded by bench/run.py into the benchmark database; pgcrypto lives in schema public.

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
CREATE SCHEMA baseline;

-- HMAC secrets, by kid (the secret is kept as text: hmac(text, text, ...) takes it that way)
CREATE TABLE baseline.keys (
    kid    text PRIMARY KEY,
    alg    text NOT NULL CHECK (alg = 'HS256'),
    secret text NOT NULL
);

-- The same shape and indexes as token_store.tokens.
CREATE TABLE baseline.tokens (
    id              uuid        PRIMARY KEY,
    token_hash      bytea       NOT NULL UNIQUE,
    jti             text,
    subject         text,
    issuer          text,
    kid             text,
    issued_at       timestamptz,
    not_before      timestamptz,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    payload         bytea       NOT NULL,   -- iv || AES-256-CBC ciphertext, or a PGP message
    key_fingerprint text        NOT NULL,   -- here: which cipher sealed it
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON baseline.tokens (expires_at);
CREATE INDEX ON baseline.tokens (subject) WHERE subject IS NOT NULL;
-- jwt_store_pgp writes here, so both store variants start from an empty table
CREATE TABLE baseline.tokens_pgp (LIKE baseline.tokens INCLUDING ALL);

-- The encryption key of the payloads (a fixed benchmark key; a real deployment reads it from a
-- setting or a vault). Inlined as a constant.
CREATE FUNCTION baseline.aes_key() RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '\x6263682d62656e63682d6165732d6b65792d3031323334353637383961626364'::bytea $$;
CREATE FUNCTION baseline.pgp_passphrase() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'bench-pgp-passphrase-0123456789abcdef' $$;

-- base64url without padding (RFC 7515), pgjwt's way
CREATE FUNCTION baseline.url_encode(data bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT translate(encode(data, 'base64'), E'+/=\n', '-_') $$;

CREATE FUNCTION baseline.url_decode(data text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT decode(rpad(translate(data, '-_', '+/'), (length(data) + 3) / 4 * 4, '='), 'base64') $$;

-- Signature and claims of an HS256 token. claims is set whenever the signature is good;
-- reason is NULL for a valid token, else the reason it is refused. Raises on malformed input.
CREATE FUNCTION baseline.jwt_check(token text, OUT claims jsonb, OUT kid text, OUT reason text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts  text[] := string_to_array(token, '.');
    header jsonb;
    secret text;
    now_s  double precision := extract(epoch FROM now());
BEGIN
    IF cardinality(parts) <> 3 THEN
        RAISE EXCEPTION 'invalid token: expected three parts' USING ERRCODE = '22P02';
    END IF;
    header := convert_from(baseline.url_decode(parts[1]), 'UTF8')::jsonb;
    kid := header->>'kid';
    SELECT k.secret INTO secret FROM baseline.keys k
     WHERE k.kid = header->>'kid' AND k.alg = header->>'alg';
    IF NOT FOUND THEN
        reason := 'unknown_key';
        RETURN;
    END IF;
    IF baseline.url_encode(public.hmac(parts[1] || '.' || parts[2], secret, 'sha256')) <> parts[3] THEN
        reason := 'bad_signature';
        RETURN;
    END IF;
    claims := convert_from(baseline.url_decode(parts[2]), 'UTF8')::jsonb;
    IF NOT claims ? 'exp' THEN
        reason := 'missing_exp';
    ELSIF (claims->>'exp')::float8 + 30 <= now_s THEN
        reason := 'expired';
    ELSIF (claims->>'nbf')::float8 - 30 > now_s THEN
        reason := 'not_yet_valid';
    END IF;
END $$;

-- The hot path, written out in one function (no nested call) so it is as fast as PL/pgSQL gets.
CREATE FUNCTION baseline.jwt_valid(token text, require_stored boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts   text[] := string_to_array(token, '.');
    header  jsonb;
    claims  jsonb;
    secret  text;
    revoked timestamptz;
    now_s   double precision := extract(epoch FROM now());
BEGIN
    IF cardinality(parts) <> 3 THEN
        RETURN false;
    END IF;
    header := convert_from(baseline.url_decode(parts[1]), 'UTF8')::jsonb;
    SELECT k.secret INTO secret FROM baseline.keys k
     WHERE k.kid = header->>'kid' AND k.alg = header->>'alg';
    IF NOT FOUND
       OR baseline.url_encode(public.hmac(parts[1] || '.' || parts[2], secret, 'sha256')) <> parts[3] THEN
        RETURN false;
    END IF;
    claims := convert_from(baseline.url_decode(parts[2]), 'UTF8')::jsonb;
    IF (claims->>'exp') IS NULL
       OR (claims->>'exp')::float8 + 30 <= now_s
       OR (claims->>'nbf')::float8 - 30 > now_s THEN
        RETURN false;
    END IF;
    SELECT t.revoked_at INTO revoked FROM baseline.tokens t
     WHERE t.token_hash = public.digest(token, 'sha256');
    IF NOT FOUND THEN
        RETURN NOT require_stored;
    END IF;
    RETURN revoked IS NULL;
END $$;

-- The claims of a valid stored token, or an ERROR (token_store.jwt_verify's job).
CREATE FUNCTION baseline.jwt_verify(token text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c       record;
    revoked timestamptz;
BEGIN
    SELECT * INTO c FROM baseline.jwt_check(token);
    IF c.reason IS NOT NULL THEN
        RAISE EXCEPTION 'token rejected: %', c.reason USING ERRCODE = '28000';
    END IF;
    SELECT t.revoked_at INTO revoked FROM baseline.tokens t
     WHERE t.token_hash = public.digest(token, 'sha256');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'token rejected: not_stored' USING ERRCODE = '28000';
    ELSIF revoked IS NOT NULL THEN
        RAISE EXCEPTION 'token rejected: revoked' USING ERRCODE = '28000';
    END IF;
    RETURN c.claims;
END $$;

-- Verify, then store with the claims under raw AES-256-CBC (pgcrypto encrypt_iv, random IV).
-- The same token twice gives the same id.
CREATE FUNCTION baseline.jwt_store(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c      record;
    h      bytea := public.digest(token, 'sha256');
    iv     bytea := public.gen_random_bytes(16);
    out_id uuid;
BEGIN
    SELECT * INTO c FROM baseline.jwt_check(token);
    IF c.reason IS NOT NULL THEN
        RAISE EXCEPTION 'token rejected: %', c.reason USING ERRCODE = '28000';
    END IF;
    INSERT INTO baseline.tokens AS t (id, token_hash, jti, subject, issuer, kid, issued_at,
                                      not_before, expires_at, payload, key_fingerprint)
    VALUES (gen_random_uuid(), h, c.claims->>'jti', c.claims->>'sub', c.claims->>'iss', c.kid,
            to_timestamp((c.claims->>'iat')::float8), to_timestamp((c.claims->>'nbf')::float8),
            to_timestamp((c.claims->>'exp')::float8),
            iv || public.encrypt_iv(convert_to(c.claims::text, 'UTF8'), baseline.aes_key(), iv, 'aes'),
            'aes')
    ON CONFLICT (token_hash) DO NOTHING
    RETURNING t.id INTO out_id;
    IF out_id IS NULL THEN
        SELECT t.id INTO out_id FROM baseline.tokens t WHERE t.token_hash = h;
    END IF;
    RETURN out_id;
END $$;

-- The same with pgp_sym_encrypt (AES-256, pgcrypto's default S2K), into baseline.tokens_pgp.
CREATE FUNCTION baseline.jwt_store_pgp(token text) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c      record;
    h      bytea := public.digest(token, 'sha256');
    out_id uuid;
BEGIN
    SELECT * INTO c FROM baseline.jwt_check(token);
    IF c.reason IS NOT NULL THEN
        RAISE EXCEPTION 'token rejected: %', c.reason USING ERRCODE = '28000';
    END IF;
    INSERT INTO baseline.tokens_pgp AS t (id, token_hash, jti, subject, issuer, kid, issued_at,
                                          not_before, expires_at, payload, key_fingerprint)
    VALUES (gen_random_uuid(), h, c.claims->>'jti', c.claims->>'sub', c.claims->>'iss', c.kid,
            to_timestamp((c.claims->>'iat')::float8), to_timestamp((c.claims->>'nbf')::float8),
            to_timestamp((c.claims->>'exp')::float8),
            public.pgp_sym_encrypt(c.claims::text, baseline.pgp_passphrase(), 'cipher-algo=aes256'),
            'pgp')
    ON CONFLICT (token_hash) DO NOTHING
    RETURNING t.id INTO out_id;
    IF out_id IS NULL THEN
        SELECT t.id INTO out_id FROM baseline.tokens_pgp t WHERE t.token_hash = h;
    END IF;
    RETURN out_id;
END $$;

-- Revoke a correctly signed token; true if this call revoked it. An unstored token gets a
-- revoked row, so a deny-list refuses it too.
CREATE FUNCTION baseline.jwt_revoke(token text, reason text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c  record;
    h  bytea := public.digest(token, 'sha256');
    iv bytea;
BEGIN
    SELECT * INTO c FROM baseline.jwt_check(token);
    IF c.claims IS NULL THEN
        RAISE EXCEPTION 'token rejected: %', c.reason USING ERRCODE = '28000';
    END IF;
    UPDATE baseline.tokens SET revoked_at = now(), revoke_reason = jwt_revoke.reason
     WHERE token_hash = h AND revoked_at IS NULL;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF EXISTS (SELECT 1 FROM baseline.tokens WHERE token_hash = h) OR NOT c.claims ? 'exp' THEN
        RETURN false;
    END IF;
    iv := public.gen_random_bytes(16);
    INSERT INTO baseline.tokens (id, token_hash, jti, subject, issuer, kid, issued_at, not_before,
                                 expires_at, revoked_at, revoke_reason, payload, key_fingerprint)
    VALUES (gen_random_uuid(), h, c.claims->>'jti', c.claims->>'sub', c.claims->>'iss', c.kid,
            to_timestamp((c.claims->>'iat')::float8), to_timestamp((c.claims->>'nbf')::float8),
            to_timestamp((c.claims->>'exp')::float8), now(), jwt_revoke.reason,
            iv || public.encrypt_iv(convert_to(c.claims::text, 'UTF8'), baseline.aes_key(), iv, 'aes'),
            'aes')
    ON CONFLICT (token_hash) DO NOTHING;
    RETURN true;
END $$;

-- Sign claims with an HS256 key (adding iat, exp and jti), store the token, return it.
CREATE FUNCTION baseline.jwt_issue(claims jsonb, ttl interval DEFAULT '15 minutes',
                                   kid text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k      record;
    now_s  bigint := floor(extract(epoch FROM now()));
    input  text;
    token  text;
    iv     bytea := public.gen_random_bytes(16);
BEGIN
    SELECT bk.kid, bk.secret INTO STRICT k FROM baseline.keys bk
     WHERE bk.kid = coalesce(jwt_issue.kid, bk.kid) ORDER BY bk.kid LIMIT 1;
    claims := jsonb_build_object('iat', now_s,
                                 'exp', now_s + floor(extract(epoch FROM ttl))::bigint,
                                 'jti', gen_random_uuid()::text) || claims;
    input := baseline.url_encode(convert_to(
                 jsonb_build_object('alg', 'HS256', 'kid', k.kid, 'typ', 'JWT')::text, 'UTF8'))
             || '.' || baseline.url_encode(convert_to(claims::text, 'UTF8'));
    token := input || '.' || baseline.url_encode(public.hmac(input, k.secret, 'sha256'));
    INSERT INTO baseline.tokens (id, token_hash, jti, subject, issuer, kid, issued_at, not_before,
                                 expires_at, payload, key_fingerprint)
    VALUES (gen_random_uuid(), public.digest(token, 'sha256'), claims->>'jti', claims->>'sub',
            claims->>'iss', k.kid, to_timestamp((claims->>'iat')::float8),
            to_timestamp((claims->>'nbf')::float8), to_timestamp((claims->>'exp')::float8),
            iv || public.encrypt_iv(convert_to(claims::text, 'UTF8'), baseline.aes_key(), iv, 'aes'),
            'aes');
    RETURN token;
END $$;
