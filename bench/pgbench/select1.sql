-- the reference: the same script with the verification replaced by SELECT 1
\set id random(1, :ntok)
SELECT token FROM bench.tok_hs256 WHERE id = :id \gset
SELECT 1;
