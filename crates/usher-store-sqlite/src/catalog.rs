//! The catalogue port on SQLite: the single writer connection serialises every
//! read-modify-write, so nothing needs locking.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use usher_core::ids::{EventId, PerformanceId};
use uuid::Uuid;

use usher_core::{Event, PerformanceStatus};
use usher_store::JobKind;
use usher_store::{
    AuditEntry, CatalogTx, EventRow, PerformancePatch, StoreResult, corrupt_value, search_key,
};

use crate::backend;
use crate::hold::SqliteTx;

#[async_trait]
impl CatalogTx for SqliteTx {
    async fn lock_event(&mut self, id: EventId) -> StoreResult<Option<Event>> {
        let row = sqlx::query_as!(
            EventRow,
            r#"SELECT id AS "id!: Uuid", organizer_id AS "organizer_id!: Uuid", title,
                      description, venue, attributes, status,
                      created_at AS "created_at!: DateTime<Utc>",
                      updated_at AS "updated_at!: DateTime<Utc>"
               FROM events WHERE id = ?1"#,
            id
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        row.map(EventRow::into_event).transpose()
    }

    async fn save_event(&mut self, event: &Event) -> StoreResult<()> {
        let title = event.title.as_str();
        let title_search = search_key(title);
        let (description, venue) = (event.description.as_str(), event.venue.as_str());
        let attributes = event.attributes.as_value().to_string();
        let status = event.status.as_str();
        sqlx::query!(
            "UPDATE events SET title = ?1, title_search = ?2, description = ?3, venue = ?4,
                               attributes = ?5, status = ?6, updated_at = ?7
             WHERE id = ?8",
            title,
            title_search,
            description,
            venue,
            attributes,
            status,
            event.updated_at,
            event.id
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn lock_performance(
        &mut self,
        id: PerformanceId,
    ) -> StoreResult<Option<PerformanceStatus>> {
        let status = sqlx::query_scalar!("SELECT status FROM performances WHERE id = ?1", id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(backend)?;
        status
            .map(|s| PerformanceStatus::parse(&s).map_err(corrupt_value("performances.status")))
            .transpose()
    }

    async fn patch_performance(
        &mut self,
        id: PerformanceId,
        patch: &PerformancePatch,
    ) -> StoreResult<()> {
        let ttl = patch.hold_ttl.map(|t| i64::from(t.seconds()));
        let max = patch.max_per_booking.map(|m| i64::from(m.get()));
        let (set_on_sale, on_sale_at) = (patch.on_sale_at.is_some(), patch.on_sale_at.flatten());
        let cancel = patch.status == Some(PerformanceStatus::Cancelled);
        sqlx::query!(
            "UPDATE performances
             SET starts_at = coalesce(?2, starts_at),
                 hold_ttl_seconds = coalesce(?3, hold_ttl_seconds),
                 max_per_booking = coalesce(?4, max_per_booking),
                 on_sale_at = CASE WHEN ?5 THEN ?6 ELSE on_sale_at END,
                 status = CASE WHEN ?7 THEN 'cancelled' ELSE status END,
                 waiting_room = coalesce(?8, waiting_room)
             WHERE id = ?1",
            id,
            patch.starts_at,
            ttl,
            max,
            set_on_sale,
            on_sale_at,
            cancel,
            patch.waiting_room
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn enqueue(
        &mut self,
        kind: JobKind,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        crate::payments::enqueue(&mut self.tx, kind, payload, now).await
    }

    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()> {
        crate::box_office::insert_audit(&mut self.tx, entry).await
    }
}
