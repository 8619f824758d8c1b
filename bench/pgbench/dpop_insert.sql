-- DPoP per request, the floor: the replay cache's row for the next proof, by a plain
-- INSERT ... ON CONFLICT DO NOTHING into a table of the same shape (no parsing, no crypto)
INSERT INTO bench.f_dpop (jkt, jti, expires_at)
SELECT p.jkt, p.jti, now() + interval '90 seconds'
  FROM bench.dpop_in p WHERE p.i = (SELECT nextval('bench.dpop_seq_insert'))
    ON CONFLICT DO NOTHING;
