-- DPoP per request: a bound token and the next fresh proof of its key (made by bench/run.py),
-- verified with the proof; the proof's jti goes into the replay cache
SELECT token_store.jwt_verify_dpop(:token, p.proof, 'GET', 'https://api.example.com/v1/orders')
  FROM bench.dpop_in p WHERE p.i = (SELECT nextval('bench.dpop_seq_verify'));
