-- per request, the round trip alone: a statement that reads nothing
SELECT 1;
