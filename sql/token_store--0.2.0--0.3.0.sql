-- token_store 0.2.0 -> 0.3.0
-- Never edit once released. tests/client/test_upgrade.py installs every older release, makes data,
-- runs ALTER EXTENSION token_store UPDATE and compares every object with a fresh 0.3.0 install.

-- The read path runs no SQL any more (it reads the tables by index probes), so jwt_verify,
-- jwt_valid and jwt_introspect are no longer SECURITY DEFINER and set no search_path per call.
-- Their EXECUTE grants (token_store_app, token_store_admin, not PUBLIC) are unchanged.
ALTER FUNCTION token_store.jwt_verify(text, text, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_valid(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_introspect(text) SECURITY INVOKER RESET search_path;
