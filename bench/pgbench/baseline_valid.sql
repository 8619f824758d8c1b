-- the PL/pgSQL + pgcrypto baseline (bench/baseline.sql), same script
\set id random(1, :ntok)
SELECT token FROM bench.tok_hs256 WHERE id = :id \gset
SELECT baseline.jwt_valid(:token);
