-- per request, the reference: the same round trip with the same argument, no verification
SELECT length(:token);
