-- token_store 0.2.0 -> 0.3.0
-- Never edit once released. tests/client/test_upgrade.py installs every older release, makes data,
-- runs ALTER EXTENSION token_store UPDATE and compares every object with a fresh 0.3.0 install.

-- The read path runs no SQL any more (it reads the tables by index probes), so jwt_verify,
-- jwt_valid and jwt_introspect are no longer SECURITY DEFINER and set no search_path per call.
-- Their EXECUTE grants (token_store_app, token_store_admin, not PUBLIC) are unchanged.
ALTER FUNCTION token_store.jwt_verify(text, text, text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_valid(text) SECURITY INVOKER RESET search_path;
ALTER FUNCTION token_store.jwt_introspect(text) SECURITY INVOKER RESET search_path;

-- Keys are cached per backend; a statement-level trigger on signing_keys sends the relcache
-- invalidation that empties those caches in every session, whatever changed the keys.
CREATE FUNCTION token_store."signing_keys_changed"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'signing_keys_changed_wrapper';
REVOKE ALL ON FUNCTION token_store.signing_keys_changed() FROM PUBLIC;
COMMENT ON FUNCTION token_store.signing_keys_changed() IS
    'token_store: trigger on signing_keys that makes every session read the keys again';
CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_store.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION token_store.signing_keys_changed();
