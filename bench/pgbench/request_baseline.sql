-- per request: the PL/pgSQL + pgcrypto baseline (bench/baseline.sql) on the same token
SELECT baseline.jwt_valid(:token);
