//! Revocation events: one NOTIFY on `token_store.notify_channel` per committed revocation,
//! subject revocation, session end and key state change, sent by row triggers on the tables (so
//! a change made by plain SQL is announced too); and `revocations_since`, the same events read
//! back from the tables for a listener that reconnects.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::{IntoDatum, PgTrigger};

use super::*;
use crate::storage::dpop::{self as store, EventRow};
use token_store_core::events::{self, Event};

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

fn unix_micros(t: TimestampWithTimeZone) -> i64 {
    pgrx::pg_sys::TimestampTz::from(t).saturating_add(PG_EPOCH_UNIX_MICROS)
}

fn column<
    T: 'static + pgrx::FromDatum + pgrx::IntoDatum + for<'a> pgrx::datum::UnboxDatum<As<'a> = T>,
>(
    row: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::pgbox::AllocatedByPostgres>,
    name: &str,
) -> TsResult<Option<T>> {
    row.get_by_name::<T>(name)
        .map_err(|e| TsError::Internal(format!("revocation event: column {name}: {e}")))
}

/// The event a trigger's new row stands for; `table` is the trigger's argument.
fn event_of(
    table: &str,
    row: &pgrx::heap_tuple::PgHeapTuple<'_, pgrx::pgbox::AllocatedByPostgres>,
) -> TsResult<Event> {
    let uuid = |name| -> TsResult<Option<String>> {
        Ok(column::<Uuid>(row, name)?.map(|u| uuid::Uuid::from_bytes(*u.as_bytes()).to_string()))
    };
    let at = |name| -> TsResult<i64> {
        column::<TimestampWithTimeZone>(row, name)?
            .map(unix_micros)
            .ok_or_else(|| TsError::Internal(format!("revocation event: {name} is NULL")))
    };
    Ok(match table {
        "tokens" => Event {
            event: "token_revoked".into(),
            token_id: uuid("id")?,
            jti: column(row, "jti")?,
            sub: column(row, "subject")?,
            kid: column(row, "kid")?,
            at_unix_micros: at("revoked_at")?,
            ..Default::default()
        },
        "sessions" => Event {
            event: events::session_event(column::<String>(row, "end_reason")?.as_deref()).into(),
            sid: uuid("id")?,
            sub: column(row, "subject")?,
            at_unix_micros: at("ended_at")?,
            ..Default::default()
        },
        "subject_revocations" => Event {
            event: "subject_revoked".into(),
            sub: column(row, "subject")?,
            at_unix_micros: at("revoked_before")?,
            ..Default::default()
        },
        "signing_keys" => Event {
            event: events::key_event(&column::<String>(row, "state")?.unwrap_or_default()),
            kid: column(row, "kid")?,
            at_unix_micros: at("updated_at")?,
            ..Default::default()
        },
        other => {
            return Err(TsError::Internal(format!(
                "revocation event: unknown table argument \"{other}\""
            )))
        }
    })
}

/// The row trigger: with `token_store.notify_channel` set, queue one notification for the new row.
/// NOTIFY delivers it when the transaction commits, and drops it when it (or the savepoint of the
/// change) rolls back.
pub fn on_change(trigger: &PgTrigger<'_>) -> TsResult<()> {
    let Some(channel) = gucs::nonempty(&gucs::NOTIFY_CHANNEL) else {
        return Ok(());
    };
    let args = trigger
        .extra_args()
        .map_err(|e| TsError::Internal(format!("revocation event: {e}")))?;
    let table = args.first().map(String::as_str).unwrap_or_default();
    let Some(row) = trigger.new() else {
        return Ok(());
    };
    let payload = events::payload(&event_of(table, &row)?);
    // SAFETY: pg_notify is a plain fmgr function of two non-null text arguments; it queues the
    // notification in this transaction (Async_Notify) and returns void.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pgrx::pg_sys::pg_notify,
            &[channel.into_datum(), payload.into_datum()],
        );
    }
    Ok(())
}

/// `revocations_since`: the changes at or after `since` that the tables still hold, oldest first.
pub fn since(since: TimestampWithTimeZone) -> TsResult<Vec<EventRow>> {
    store::events_since(since)
}
