//! The SQL surface: thin `#[pg_extern]` wrappers, one file per area.
//!
//! NULL in an argument that has no default of NULL gives NULL, as a STRICT function would
//! (`jwt_valid` gives false); arguments documented as `default null` take NULL as "not given".

mod admin;
mod dpop;
mod issuers;
mod keys;
mod sessions;
mod tokens;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// A `uuid` argument as bytes.
fn uuid_bytes(id: pgrx::datum::Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// A `jsonb` argument as its text, unparsed: the engine checks size and depth before parsing, so
/// neither a 20 MB document nor a deeply nested one costs more than a scan or ends in an XX000.
pub struct JsonbText(pub String);

impl FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the argument is a non-null jsonb datum (the SQL signature says so); jsonb_out
        // detoasts it and returns a palloc'd C string, copied here before it is freed.
        unsafe {
            let text =
                pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
            let owned = text.to_string_lossy().into_owned();
            pg_sys::pfree(text.as_ptr() as *mut std::ffi::c_void);
            Some(JsonbText(owned))
        }
    }
}

// SAFETY: mapped to PostgreSQL's own jsonb, which from_polymorphic_datum reads.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null jsonb argument.
        unsafe { arg.unbox_arg_using_from_datum() }.expect("a non-null jsonb argument")
    }
}

pgrx::impl_sql_translatable!(JsonbText, arg_only = "jsonb");

/// A `jsonb` result made from JSON text by PostgreSQL's own `jsonb_in`, for text already known to
/// be valid (a verified token's payload): no `serde_json::Value` is built and printed first.
pub struct JsonbFromText(pub String);

impl IntoDatum for JsonbFromText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = std::ffi::CString::new(self.0).expect("checked JSON text holds no NUL");
        // SAFETY: jsonb_in takes a NUL-terminated C string, which outlives the call, and returns
        // a palloc'd jsonb datum (or raises an ERROR for text that is not JSON).
        unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())])
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: into_datum makes a jsonb datum, the type the SQL signature declares.
unsafe impl pgrx::callconv::BoxRet for JsonbFromText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a datum of the declared return type, made in the current memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::impl_sql_translatable!(JsonbFromText, "jsonb");
