//! The door: a scanner checks a ticket in. Of many scanners racing for one ticket, one
//! conditional write admits; the others are told when it was let in.

use chrono::{DateTime, Utc};

use usher_core::UserId;
use usher_core::door::{Verdict, judge};
use usher_store::box_office::{AuditAction, AuditTarget};
use usher_store::{Audit, CheckIn, CheckInTx, Store, StoreError, StoreResult};

/// Checks the ticket in if its booking is confirmed and nobody checked it in before,
/// with its audit row.
pub async fn check_in(
    store: &dyn Store,
    serial: i64,
    by: UserId,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<CheckIn> {
    let mut tx = store.begin_check_in().await?;
    let ran = check_in_at(tx.as_mut(), serial, by, now, audit).await;
    crate::settle(tx, ran, |outcome| {
        matches!(outcome, CheckIn::Admitted { .. })
    })
    .await
}

async fn check_in_at(
    tx: &mut dyn CheckInTx,
    serial: i64,
    by: UserId,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<CheckIn> {
    tx.hold_booking(serial).await?;
    if let Some((booking_id, unit_id)) = tx.admit(serial, by, now).await? {
        let audit = audit
            .clone()
            .note("unit_id", unit_id.to_string())
            .note("serial", serial);
        let entry = audit.entry(
            AuditAction::TicketCheckedIn,
            AuditTarget::Booking(booking_id),
            None,
            now,
        );
        tx.insert_audit(&entry).await?;
        return Ok(CheckIn::Admitted { at: now });
    }
    let ticket = tx.ticket(serial).await?;
    match judge(ticket.map(|t| (t.booking_status, t.checked_in_at))) {
        Verdict::Unknown => Ok(CheckIn::Unknown),
        Verdict::Void => Ok(CheckIn::Void),
        Verdict::Already { at } => Ok(CheckIn::Already { at }),
        // Confirmed and not checked in, yet the conditional write found nothing: cannot
        // happen with the booking held and the ticket row re-read by the write.
        Verdict::Admit => Err(StoreError::Backend(format!(
            "ticket {serial} neither checked in nor checkable"
        ))),
    }
}
