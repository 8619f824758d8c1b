//! The SQL surface: thin `#[pg_extern]` wrappers, one file per area.

mod admin;
mod keys;
mod tokens;

/// A `uuid` argument as bytes.
fn uuid_bytes(id: pgrx::datum::Uuid) -> [u8; 16] {
    *id.as_bytes()
}
