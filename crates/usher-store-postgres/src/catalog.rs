//! The catalogue port on PostgreSQL: events and performances locked when read
//! (`FOR UPDATE`), so two instances patching one never lose an update.

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
use crate::hold::PgTx;

#[async_trait]
impl CatalogTx for PgTx {
    async fn lock_event(&mut self, id: EventId) -> StoreResult<Option<Event>> {
        let row = sqlx::query_as!(
            EventRow,
            r#"SELECT id AS "id!: Uuid", organizer_id AS "organizer_id!: Uuid", title,
                      description, venue, attributes::text AS "attributes!", status,
                      created_at AS "created_at!: DateTime<Utc>",
                      updated_at AS "updated_at!: DateTime<Utc>"
               FROM events WHERE id = $1 FOR UPDATE"#,
            id.uuid()
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        row.map(EventRow::into_event).transpose()
    }

    async fn save_event(&mut self, event: &Event) -> StoreResult<()> {
        let title = event.title.as_str();
        sqlx::query!(
            "UPDATE events SET title = $1, title_search = $2, description = $3, venue = $4,
                               attributes = $5::text::jsonb, status = $6, updated_at = $7
             WHERE id = $8",
            title,
            search_key(title),
            event.description.as_str(),
            event.venue.as_str(),
            event.attributes.as_value().to_string(),
            event.status.as_str(),
            event.updated_at,
            event.id.uuid()
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
        let status = sqlx::query_scalar!(
            "SELECT status FROM performances WHERE id = $1 FOR UPDATE",
            id.uuid()
        )
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
        sqlx::query!(
            "UPDATE performances
             SET starts_at = coalesce($2, starts_at),
                 hold_ttl_seconds = coalesce($3, hold_ttl_seconds),
                 max_per_booking = coalesce($4, max_per_booking),
                 on_sale_at = CASE WHEN $5 THEN $6 ELSE on_sale_at END,
                 status = CASE WHEN $7 THEN 'cancelled' ELSE status END,
                 waiting_room = coalesce($8, waiting_room)
             WHERE id = $1",
            id.uuid(),
            patch.starts_at,
            patch.hold_ttl.map(|t| t.seconds() as i32),
            patch.max_per_booking.map(|m| m.get() as i32),
            patch.on_sale_at.is_some(),
            patch.on_sale_at.flatten(),
            patch.status == Some(PerformanceStatus::Cancelled),
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
