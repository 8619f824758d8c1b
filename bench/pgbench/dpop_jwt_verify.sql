-- DPoP per request, without DPoP: the same round trip fetching the next proof, but only a bearer
-- token verified (jwt_verify)
SELECT token_store.jwt_verify(:plain), length(p.proof)
  FROM bench.dpop_in p WHERE p.i = (SELECT nextval('bench.dpop_seq_plain'));
