//! The catalogue's changes: an organizer edits, publishes or cancels an event, or
//! changes or cancels a performance. Cancelling queues, in the same transaction, the job
//! that releases the sale's holds and refunds its bookings, so a crash after the commit
//! still has the job.

use chrono::{DateTime, Utc};

use usher_core::{Event, EventId, EventStatus, PerformanceId, PerformanceStatus};
use usher_store::box_office::{AuditAction, AuditTarget, event_action};
use usher_store::payments::JobKind;
use usher_store::{
    Audit, CatalogTx, EventPatch, PerformancePatch, PerformanceUpdate, Store, StoreResult,
};

/// Applies the patch to the event (its status only along the allowed transitions).
/// `None` when there is no such event.
pub async fn update_event(
    store: &dyn Store,
    id: EventId,
    patch: EventPatch,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<Option<Event>> {
    let mut tx = store.begin_catalog().await?;
    let ran = event_in(tx.as_mut(), id, patch, now, audit).await;
    crate::settle(tx, ran, Option::is_some).await
}

async fn event_in(
    tx: &mut dyn CatalogTx,
    id: EventId,
    patch: EventPatch,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<Option<Event>> {
    let Some(current) = tx.lock_event(id).await? else {
        return Ok(None);
    };
    let was = current.status;
    let event = patch.apply(current, now)?;
    tx.save_event(&event).await?;
    if was != EventStatus::Cancelled && event.status == EventStatus::Cancelled {
        let job = serde_json::json!({ "event_id": id });
        tx.enqueue(JobKind::CancelSale, job, now).await?;
    }
    let audit = audit.clone().note("status", event.status.as_str());
    let entry = audit.entry(
        event_action(was, event.status),
        AuditTarget::Event(id),
        Some(id),
        now,
    );
    tx.insert_audit(&entry).await?;
    Ok(Some(event))
}

/// Changes the performance; cancelling it (for good) queues the release of its holds
/// and the refund of its bookings. A cancelled performance stays as it is.
pub async fn update_performance(
    store: &dyn Store,
    id: PerformanceId,
    patch: PerformancePatch,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<PerformanceUpdate> {
    let mut tx = store.begin_catalog().await?;
    let refused = match tx.lock_performance(id).await {
        Ok(None) => Some(PerformanceUpdate::NoSuchPerformance),
        Ok(Some(PerformanceStatus::Cancelled)) => Some(PerformanceUpdate::AlreadyCancelled),
        Ok(Some(_)) => None,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    if let Some(refused) = refused {
        tx.rollback().await?;
        return Ok(refused);
    }
    if let Err(error) = performance_in(tx.as_mut(), id, &patch, now, audit).await {
        let _ = tx.rollback().await;
        return Err(error);
    }
    tx.commit().await?;
    Ok(match store.performance(id).await? {
        Some(performance) => PerformanceUpdate::Updated(performance),
        None => PerformanceUpdate::NoSuchPerformance,
    })
}

async fn performance_in(
    tx: &mut dyn CatalogTx,
    id: PerformanceId,
    patch: &PerformancePatch,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<()> {
    tx.patch_performance(id, patch).await?;
    let cancel = patch.status == Some(PerformanceStatus::Cancelled);
    if cancel {
        let job = serde_json::json!({ "performance_id": id });
        tx.enqueue(JobKind::CancelSale, job, now).await?;
    }
    let kind = match cancel {
        true => AuditAction::PerformanceCancelled,
        false => AuditAction::PerformanceUpdated,
    };
    tx.insert_audit(&audit.entry(kind, AuditTarget::Performance(id), None, now))
        .await
}
