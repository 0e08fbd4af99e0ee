//! Payments, provider events, jobs, emails and idempotency keys on PostgreSQL. A
//! lifecycle transition locks the booking, then its payments, then its units in id order
//! (the order every statement here follows), and job claims skip rows other workers hold
//! (`SKIP LOCKED`), so several instances can share the work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use usher_core::ids::{BookingId, PaymentId, PerformanceId, UnitId};
use uuid::Uuid;

use usher_core::lifecycle::Provider;
use usher_core::lifecycle::{Facts, NewPayment, PaymentFacts, PaymentStatus, Sale};
use usher_core::{BookingStatus, Money};
use usher_store::box_office::{AuditAction, AuditTarget};
use usher_store::lifecycle::BookingChange;
use usher_store::payments::JOB_MAX_ATTEMPTS;
use usher_store::typed_pairs;
use usher_store::{Audit, AuditEntry, WalletMove, WalletMoved};
use usher_store::{
    ChangeSet, IdempotencyStart, Job, JobRow, JobState, LifecycleTx, LiveChange, Payment,
    PaymentRow, ProviderEvent, StoreError, StoreResult, all_takeable_by,
};
use usher_store::{EmailKind, JobKind};

use crate::inventory::load_bookings;
use crate::{PostgresStore, backend};

/// Queues a job in the caller's transaction (the outbox).
pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    kind: JobKind,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let id = Uuid::now_v7();
    let kind = kind.as_str();
    let payload = payload.to_string();
    sqlx::query!(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
         VALUES ($1, $2, $3, 'queued', 0, $4, $5, $5, $5)",
        id,
        kind,
        payload,
        JOB_MAX_ATTEMPTS as i32,
        now
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn load_payment(conn: &mut PgConnection, id: Uuid) -> StoreResult<Option<Payment>> {
    sqlx::query_as!(
        PaymentRow,
        r#"SELECT id AS "id!: Uuid", booking_id AS "booking_id!: Uuid", provider,
                  provider_ref, provider_payment_ref, status, amount, currency, checkout_url,
                  expires_at AS "expires_at!: DateTime<Utc>",
                  created_at AS "created_at!: DateTime<Utc>",
                  updated_at AS "updated_at!: DateTime<Utc>"
           FROM payments WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .map(PaymentRow::into_payment)
    .transpose()
}

/// The lifecycle's steps in PostgreSQL, inside one transaction.
pub(crate) struct PgLifecycle(pub(crate) sqlx::Transaction<'static, sqlx::Postgres>);

#[async_trait]
impl usher_store::Tx for PgLifecycle {
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await.map_err(backend)
    }

    async fn rollback(self: Box<Self>) -> StoreResult<()> {
        self.0.rollback().await.map_err(backend)
    }
}

#[async_trait]
impl LifecycleTx for PgLifecycle {
    async fn record_event(
        &mut self,
        event: &ProviderEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query!(
            "INSERT INTO provider_events (provider, event_id, kind, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (provider, event_id) DO NOTHING",
            event.provider.as_str(),
            event.event_id,
            event.kind,
            now
        )
        .execute(&mut *self.0)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn booking_of_payment(
        &mut self,
        payment_id: PaymentId,
    ) -> StoreResult<Option<BookingId>> {
        sqlx::query_scalar!(
            r#"SELECT booking_id AS "booking_id!: Uuid" FROM payments WHERE id = $1"#,
            payment_id.uuid()
        )
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
        .map(|id| id.map(BookingId::from))
    }

    async fn lock_facts(&mut self, booking_id: BookingId) -> StoreResult<Option<(Facts, Money)>> {
        // The booking first: every transition of one booking queues here, so exactly
        // one of N concurrent confirmations sees the payment still pending.
        let Some(row) = sqlx::query!(
            r#"SELECT b.status, b.held_until, b.paid_by AS "paid_by?: Uuid",
                      b.checkout_started_at IS NOT NULL AS "checkout_started!",
                      b.total_amount, b.currency, p.starts_at,
                      (p.status = 'cancelled' OR e.status = 'cancelled') AS "sale_cancelled!",
                      e.status = 'draft' AS "sale_withdrawn!"
               FROM bookings b
               JOIN performances p ON p.id = b.performance_id
               JOIN events e ON e.id = p.event_id
               WHERE b.id = $1
               FOR UPDATE OF b"#,
            booking_id.uuid()
        )
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?
        else {
            return Ok(None);
        };
        let payments = sqlx::query!(
            r#"SELECT id, status, provider, expires_at FROM payments
               WHERE booking_id = $1 ORDER BY created_at, id FOR UPDATE"#,
            booking_id.uuid()
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?
        .into_iter()
        .map(|p| {
            Ok(PaymentFacts {
                id: p.id.into(),
                status: PaymentStatus::parse(&p.status).map_err(crate::corrupt)?,
                provider: Provider::parse(&p.provider),
                expires_at: p.expires_at,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let currency = usher_store::inventory::stored_currency(&row.currency)?;
        let facts = Facts {
            status: BookingStatus::parse(&row.status).map_err(crate::corrupt)?,
            held_until: row.held_until,
            paid_by: row.paid_by.map(Into::into),
            checkout_started: row.checkout_started,
            sale: if row.sale_cancelled {
                Sale::Cancelled
            } else if row.sale_withdrawn {
                Sale::Withdrawn
            } else {
                Sale::Open
            },
            starts_at: row.starts_at,
            units_takeable: false,
            payments,
        };
        Ok(Some((facts, Money::new(row.total_amount, currency))))
    }

    async fn units_takeable(
        &mut self,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let units = sqlx::query!(
            r#"SELECT u.state, u.booking_id AS "booking_id?: Uuid",
                      u.held_until AS "held_until?: DateTime<Utc>"
               FROM booking_units bu JOIN units u ON u.id = bu.unit_id
               WHERE bu.booking_id = $1
               ORDER BY u.id FOR UPDATE OF u"#,
            booking_id.uuid()
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        all_takeable_by(
            units
                .iter()
                .map(|u| (u.state.as_str(), u.booking_id, u.held_until)),
            booking_id,
            now,
        )
    }

    async fn update_booking(
        &mut self,
        booking_id: BookingId,
        change: &BookingChange,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = sqlx::query!(
            "UPDATE bookings
             SET status = $2, paid_by = coalesce($3, paid_by), held_until = coalesce($4, held_until),
                 checkout_started_at = CASE WHEN $5 THEN coalesce(checkout_started_at, $6)
                                            ELSE checkout_started_at END,
                 updated_at = $6
             WHERE id = $1 AND status = $7",
            booking_id.uuid(),
            change.to.as_str(),
            change.paid_by.map(Uuid::from),
            change.held_until,
            change.checkout_started,
            now,
            change.from.as_str()
        )
        .execute(&mut *self.0)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn extend_units(
        &mut self,
        booking_id: BookingId,
        until: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE units SET held_until = $2
             WHERE id IN (SELECT id FROM units WHERE booking_id = $1 AND state = 'held'
                          ORDER BY id FOR UPDATE)
               AND booking_id = $1 AND state = 'held'",
            booking_id.uuid(),
            until
        )
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn sell_units(
        &mut self,
        booking_id: BookingId,
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>> {
        // The units were locked (in id order) when their availability was checked.
        let rows = sqlx::query!(
            "UPDATE units SET state = 'sold', booking_id = $1, held_until = NULL
             WHERE id IN (SELECT unit_id FROM booking_units WHERE booking_id = $1)
             RETURNING performance_id, id",
            booking_id.uuid()
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(typed_pairs(
            rows.into_iter().map(|r| (r.performance_id, r.id)),
        ))
    }

    async fn release_units(
        &mut self,
        booking_id: BookingId,
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>> {
        let rows = sqlx::query!(
            "UPDATE units SET state = 'available', booking_id = NULL, held_until = NULL
             WHERE id IN (SELECT id FROM units WHERE booking_id = $1 AND state IN ('held', 'sold')
                          ORDER BY id FOR UPDATE)
               AND booking_id = $1 AND state IN ('held', 'sold')
             RETURNING performance_id, id",
            booking_id.uuid()
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(typed_pairs(
            rows.into_iter().map(|r| (r.performance_id, r.id)),
        ))
    }

    async fn record_live(
        &mut self,
        changes: ChangeSet,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LiveChange>> {
        crate::live::record(&mut self.0, changes, now).await
    }

    async fn set_payment_status(
        &mut self,
        payment_id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        provider_payment_ref: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = sqlx::query!(
            "UPDATE payments SET status = $2, provider_payment_ref = coalesce($3, provider_payment_ref),
                                 updated_at = $4
             WHERE id = $1 AND status = $5",
            payment_id.uuid(),
            to.as_str(),
            provider_payment_ref,
            now,
            from.as_str()
        )
        .execute(&mut *self.0)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn insert_payment(
        &mut self,
        booking_id: BookingId,
        payment: NewPayment,
        provider: &Provider,
        amount: Money,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO payments (id, booking_id, provider, status, amount, currency, expires_at,
                                   created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $7)",
            payment.id.uuid(),
            booking_id.uuid(),
            provider.as_str(),
            amount.amount,
            amount.currency.as_str(),
            payment.expires_at,
            now
        )
        .execute(&mut *self.0)
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
        enqueue(&mut self.0, kind, payload, now).await
    }

    async fn load_booking(&mut self, booking_id: BookingId) -> StoreResult<usher_core::Booking> {
        load_bookings(&mut self.0, &[booking_id.uuid()])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Backend(format!("booking {booking_id} vanished")))
    }

    async fn load_payment(&mut self, payment_id: PaymentId) -> StoreResult<Payment> {
        load_payment(&mut self.0, payment_id.uuid())
            .await?
            .ok_or_else(|| StoreError::Backend(format!("payment {payment_id} vanished")))
    }

    async fn issue_tickets(
        &mut self,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        crate::box_office::issue_tickets(&mut self.0, booking_id.uuid(), now).await
    }

    async fn wallet_move(&mut self, entry: &WalletMove) -> StoreResult<Option<WalletMoved>> {
        crate::box_office::wallet_move(&mut self.0, entry).await
    }

    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()> {
        crate::box_office::insert_audit(&mut self.0, entry).await
    }
}

impl PostgresStore {
    pub(crate) async fn lifecycle(&self) -> StoreResult<Box<dyn LifecycleTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(PgLifecycle(tx)))
    }

    pub(crate) async fn do_attach_checkout(
        &self,
        payment_id: Uuid,
        provider_ref: &str,
        checkout_url: &str,
    ) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE payments SET provider_ref = $2, checkout_url = $3 WHERE id = $1",
            payment_id,
            provider_ref,
            checkout_url
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_payment(&self, id: Uuid) -> StoreResult<Option<Payment>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_payment(&mut conn, id).await
    }

    pub(crate) async fn do_payments_of_booking(
        &self,
        booking_id: Uuid,
    ) -> StoreResult<Vec<Payment>> {
        sqlx::query_as!(
            PaymentRow,
            r#"SELECT id AS "id!: Uuid", booking_id AS "booking_id!: Uuid", provider,
                      provider_ref, provider_payment_ref, status, amount, currency, checkout_url,
                      expires_at AS "expires_at!: DateTime<Utc>",
                      created_at AS "created_at!: DateTime<Utc>",
                      updated_at AS "updated_at!: DateTime<Utc>"
               FROM payments WHERE booking_id = $1 ORDER BY created_at, id"#,
            booking_id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .into_iter()
        .map(PaymentRow::into_payment)
        .collect()
    }

    pub(crate) async fn do_payment_by_ref(
        &self,
        provider: &Provider,
        provider_ref: &str,
    ) -> StoreResult<Option<Payment>> {
        let provider = provider.as_str();
        let id = sqlx::query_scalar!(
            r#"SELECT id AS "id!: Uuid" FROM payments
               WHERE provider = $1 AND (provider_ref = $2 OR provider_payment_ref = $2)
               LIMIT 1"#,
            provider,
            provider_ref
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        match id {
            Some(id) => self.do_payment(id).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn do_claim_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        lease: Uuid,
    ) -> StoreResult<Vec<Job>> {
        let limit = i64::from(limit);
        let rows = sqlx::query_as!(
            JobRow,
            r#"UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = $2,
                              lease = $4, updated_at = $1
               WHERE id IN (SELECT id FROM jobs
                            WHERE (state = 'queued' AND run_at <= $1)
                               OR (state = 'running' AND locked_until <= $1)
                            ORDER BY run_at LIMIT $3
                            FOR UPDATE SKIP LOCKED)
               RETURNING id AS "id!: Uuid", kind, payload, state, attempts::bigint AS "attempts!",
                         max_attempts::bigint AS "max_attempts!",
                         run_at AS "run_at!: DateTime<Utc>", last_error,
                         created_at AS "created_at!: DateTime<Utc>", lease AS "lease?: Uuid""#,
            now,
            lease_until,
            limit,
            lease
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    pub(crate) async fn do_finish_job(
        &self,
        id: Uuid,
        lease: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = sqlx::query!(
            "UPDATE jobs SET state = 'done', locked_until = NULL, updated_at = $2
             WHERE id = $1 AND state = 'running' AND lease = $3",
            id,
            now,
            lease
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    pub(crate) async fn do_fail_job(
        &self,
        id: Uuid,
        lease: Uuid,
        error: &str,
        run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let state = if run_at.is_some() {
            JobState::Queued
        } else {
            JobState::Dead
        }
        .as_str();
        let run_at = run_at.unwrap_or(now);
        let changed = sqlx::query!(
            "UPDATE jobs SET state = $2, run_at = $3, last_error = $4, locked_until = NULL, updated_at = $5
             WHERE id = $1 AND state = 'running' AND lease = $6",
            id,
            state,
            run_at,
            error,
            now,
            lease
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    pub(crate) async fn do_jobs(&self, state: JobState, limit: u32) -> StoreResult<Vec<Job>> {
        let (state, limit) = (state.as_str(), i64::from(limit));
        let rows = sqlx::query_as!(
            JobRow,
            r#"SELECT id AS "id!: Uuid", kind, payload, state, attempts::bigint AS "attempts!",
                      max_attempts::bigint AS "max_attempts!",
                      run_at AS "run_at!: DateTime<Utc>", last_error,
                      created_at AS "created_at!: DateTime<Utc>", lease AS "lease?: Uuid"
               FROM jobs WHERE state = $1 ORDER BY created_at LIMIT $2"#,
            state,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    pub(crate) async fn do_requeue_job(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        audit: &Audit,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let changed = sqlx::query!(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, updated_at = $2
             WHERE id = $1 AND state = 'dead'",
            id,
            now
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if changed == 1 {
            crate::box_office::insert_audit(
                &mut tx,
                &audit.entry(AuditAction::JobRetried, AuditTarget::Job(id), None, now),
            )
            .await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed == 1)
    }

    pub(crate) async fn do_email_sent(
        &self,
        booking_id: Uuid,
        kind: EmailKind,
    ) -> StoreResult<bool> {
        let kind = kind.as_str();
        let found = sqlx::query_scalar!(
            r#"SELECT 1 AS "one!: i32" FROM email_deliveries WHERE booking_id = $1 AND kind = $2"#,
            booking_id,
            kind
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }

    pub(crate) async fn do_record_email_sent(
        &self,
        booking_id: Uuid,
        kind: EmailKind,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let kind = kind.as_str();
        sqlx::query!(
            "INSERT INTO email_deliveries (booking_id, kind, message_id, sent_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (booking_id, kind) DO NOTHING",
            booking_id,
            kind,
            message_id,
            now
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_idempotency_start(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        let inserted = sqlx::query!(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, state, created_at)
             VALUES ($1, $2, $3, 'in_flight', $4)
             ON CONFLICT (scope, key) DO NOTHING",
            scope,
            key,
            fingerprint,
            now
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyStart::Started);
        }
        let row = sqlx::query!(
            r#"SELECT fingerprint, state, status AS "status?: i32", content_type, body,
                      created_at AS "created_at!: DateTime<Utc>"
               FROM idempotency_keys WHERE scope = $1 AND key = $2"#,
            scope,
            key
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(match row {
            // Abandoned between our insert and this read: try once more as new.
            None => IdempotencyStart::InFlight { since: now },
            Some(row) if row.fingerprint != fingerprint => IdempotencyStart::Mismatch,
            Some(row) if row.state == "in_flight" => IdempotencyStart::InFlight {
                since: row.created_at,
            },
            Some(row) => IdempotencyStart::Replay {
                status: row.status.unwrap_or(200) as u16,
                content_type: row.content_type,
                body: row.body.unwrap_or_default(),
            },
        })
    }

    pub(crate) async fn do_idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> StoreResult<()> {
        let status = i32::from(status);
        sqlx::query!(
            "UPDATE idempotency_keys SET state = 'done', status = $3, content_type = $4, body = $5
             WHERE scope = $1 AND key = $2",
            scope,
            key,
            status,
            content_type,
            body
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query!(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2",
            scope,
            key
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < $1", before)
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
