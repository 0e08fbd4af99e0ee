//! Payments, provider events, jobs, emails and idempotency keys on SQLite. Every write
//! goes through the single writer connection, so each read-decide-write below runs
//! without interleaving.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use usher_core::BookingStatus;
use usher_store::payments::{JOB_MAX_ATTEMPTS, job_kind};
use usher_store::{
    CheckoutStart, Confirmation, IdempotencyStart, Job, JobRow, JobState, Payment, PaymentRow,
    ProviderEvent, RefundOutcome, StoreError, StoreResult, unit_takeable,
};

use crate::inventory::{load_bookings, status_at};
use crate::{SqliteStore, backend, commit_or_rollback};

/// A booking that must exist (we hold a reference to it in this transaction).
async fn existing_booking(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> StoreResult<usher_core::Booking> {
    load_bookings(conn, &[id])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Backend(format!("booking {id} vanished")))
}

/// Records a provider event; false when it was already recorded (a replay).
async fn record_event(
    conn: &mut SqliteConnection,
    event: &Option<ProviderEvent>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let Some(event) = event else {
        return Ok(true);
    };
    let inserted = sqlx::query!(
        "INSERT INTO provider_events (provider, event_id, kind, received_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (provider, event_id) DO NOTHING",
        event.provider,
        event.event_id,
        event.kind,
        now
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?
    .rows_affected();
    Ok(inserted == 1)
}

async fn enqueue(
    conn: &mut SqliteConnection,
    kind: &str,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let id = Uuid::now_v7();
    let payload = payload.to_string();
    sqlx::query!(
        "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?5, ?5)",
        id,
        kind,
        payload,
        JOB_MAX_ATTEMPTS,
        now
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn load_payment(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Option<Payment>> {
    sqlx::query_as!(
        PaymentRow,
        r#"SELECT id AS "id!: Uuid", booking_id AS "booking_id!: Uuid", provider,
                  provider_ref, provider_payment_ref, status, amount, currency, checkout_url,
                  expires_at AS "expires_at!: DateTime<Utc>",
                  created_at AS "created_at!: DateTime<Utc>",
                  updated_at AS "updated_at!: DateTime<Utc>"
           FROM payments WHERE id = ?1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    .map(PaymentRow::into_payment)
    .transpose()
}

/// Marks a payment refund-pending and queues its refund.
async fn refund_payment(
    conn: &mut SqliteConnection,
    payment_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE payments SET status = 'refund_pending', updated_at = ?2 WHERE id = ?1",
        payment_id,
        now
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    enqueue(
        conn,
        job_kind::REFUND,
        serde_json::json!({ "payment_id": payment_id }),
        now,
    )
    .await
}

/// Frees the units a booking still holds or owns.
async fn release_booking_units(conn: &mut SqliteConnection, booking_id: Uuid) -> StoreResult<()> {
    sqlx::query!(
        "UPDATE units SET state = 'available', booking_id = NULL, held_until = NULL
         WHERE booking_id = ?1 AND state IN ('held', 'sold')",
        booking_id
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn do_start_checkout(
        &self,
        booking_id: Uuid,
        payment_id: Uuid,
        provider: &str,
        hold_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<CheckoutStart> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let result = async {
            let extended = sqlx::query!(
                "UPDATE bookings SET held_until = max(held_until, ?2), updated_at = ?3
                 WHERE id = ?1 AND status = 'held' AND held_until > ?3",
                booking_id,
                hold_until,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if extended == 0 {
                return Ok(match status_at(&mut tx, booking_id, now).await? {
                    None => (CheckoutStart::NoSuchBooking, false),
                    Some(status) => (CheckoutStart::NotHeld(status), false),
                });
            }
            sqlx::query!(
                "UPDATE units SET held_until = (SELECT held_until FROM bookings WHERE id = ?1)
                 WHERE booking_id = ?1 AND state = 'held'",
                booking_id
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let booking = existing_booking(&mut tx, booking_id).await?;
            let (amount, currency) = (booking.total.amount, booking.total.currency.as_str().to_owned());
            sqlx::query!(
                "INSERT INTO payments (id, booking_id, provider, status, amount, currency, expires_at,
                                       created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?7)",
                payment_id,
                booking_id,
                provider,
                amount,
                currency,
                booking.held_until,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let payment = load_payment(&mut tx, payment_id)
                .await?
                .ok_or_else(|| StoreError::Backend("payment vanished".into()))?;
            Ok((CheckoutStart::Started { booking, payment: Box::new(payment) }, true))
        }
        .await;
        commit_or_rollback(tx, result).await
    }

    pub(crate) async fn do_attach_checkout(
        &self,
        payment_id: Uuid,
        provider_ref: &str,
        checkout_url: &str,
    ) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE payments SET provider_ref = ?2, checkout_url = ?3 WHERE id = ?1",
            payment_id,
            provider_ref,
            checkout_url
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_payment(&self, id: Uuid) -> StoreResult<Option<Payment>> {
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        load_payment(&mut conn, id).await
    }

    pub(crate) async fn do_payment_by_ref(
        &self,
        provider: &str,
        provider_ref: &str,
    ) -> StoreResult<Option<Payment>> {
        let id = sqlx::query_scalar!(
            r#"SELECT id AS "id!: Uuid" FROM payments
               WHERE provider = ?1 AND (provider_ref = ?2 OR provider_payment_ref = ?2)
               LIMIT 1"#,
            provider,
            provider_ref
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        match id {
            Some(id) => self.do_payment(id).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn do_confirm_payment(
        &self,
        payment_id: Uuid,
        event: Option<ProviderEvent>,
        provider_payment_ref: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Confirmation> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let result = async {
            if !record_event(&mut tx, &event, now).await? {
                return Ok((Confirmation::AlreadyProcessed, false));
            }
            let Some(payment) = load_payment(&mut tx, payment_id).await? else {
                return Ok((Confirmation::UnknownPayment, false));
            };
            if !matches!(payment.status, usher_store::PaymentStatus::Pending | usher_store::PaymentStatus::Failed) {
                // Already succeeded (and confirmed or refunding): only the event is new.
                return Ok((Confirmation::AlreadyProcessed, true));
            }
            sqlx::query!(
                "UPDATE payments SET status = 'succeeded', provider_payment_ref = coalesce(?2, provider_payment_ref),
                                     updated_at = ?3
                 WHERE id = ?1",
                payment_id,
                provider_payment_ref,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let booking_id = payment.booking_id;
            let booking = existing_booking(&mut tx, booking_id).await?;
            let takeable = if matches!(booking.status, BookingStatus::Confirmed | BookingStatus::Refunded) {
                false
            } else {
                let units = sqlx::query!(
                    r#"SELECT u.state, u.booking_id AS "booking_id?: Uuid",
                              u.held_until AS "held_until?: DateTime<Utc>"
                       FROM booking_units bu JOIN units u ON u.id = bu.unit_id
                       WHERE bu.booking_id = ?1"#,
                    booking_id
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
                units
                    .iter()
                    .all(|u| unit_takeable(&u.state, u.booking_id, u.held_until, booking_id, now))
            };
            if takeable {
                sqlx::query!(
                    "UPDATE units SET state = 'sold', booking_id = ?1, held_until = NULL
                     WHERE id IN (SELECT unit_id FROM booking_units WHERE booking_id = ?1)",
                    booking_id
                )
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                sqlx::query!(
                    "UPDATE bookings SET status = 'confirmed', updated_at = ?2 WHERE id = ?1",
                    booking_id,
                    now
                )
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                enqueue(&mut tx, job_kind::CONFIRMATION_EMAIL, serde_json::json!({ "booking_id": booking_id }), now).await?;
                let booking = existing_booking(&mut tx, booking_id).await?;
                return Ok((Confirmation::Confirmed(booking), true));
            }
            // The units went to someone else (or the booking is already paid or refunded):
            // give the money back.
            if booking.status != BookingStatus::Confirmed {
                sqlx::query!(
                    "UPDATE units SET state = 'available', booking_id = NULL, held_until = NULL
                     WHERE booking_id = ?1 AND state = 'held'",
                    booking_id
                )
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                sqlx::query!(
                    "UPDATE bookings SET status = 'refunded', updated_at = ?2 WHERE id = ?1",
                    booking_id,
                    now
                )
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            refund_payment(&mut tx, payment_id, now).await?;
            let booking = existing_booking(&mut tx, booking_id).await?;
            Ok((Confirmation::Refunding(booking), true))
        }
        .await;
        commit_or_rollback(tx, result).await
    }

    pub(crate) async fn do_fail_payment(
        &self,
        payment_id: Uuid,
        event: Option<ProviderEvent>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let result = async {
            if !record_event(&mut tx, &event, now).await? {
                return Ok((false, false));
            }
            let changed = sqlx::query!(
                "UPDATE payments SET status = 'failed', updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
                payment_id,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            Ok((changed == 1, true))
        }
        .await;
        commit_or_rollback(tx, result).await
    }

    pub(crate) async fn do_refund_booking(
        &self,
        booking_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<RefundOutcome> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let result = async {
            let changed = sqlx::query!(
                "UPDATE bookings SET status = 'refunded', updated_at = ?2 WHERE id = ?1 AND status = 'confirmed'",
                booking_id,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if changed == 0 {
                return Ok(match status_at(&mut tx, booking_id, now).await? {
                    None => (RefundOutcome::NoSuchBooking, false),
                    Some(status) => (RefundOutcome::NotRefundable(status), false),
                });
            }
            release_booking_units(&mut tx, booking_id).await?;
            let paid = sqlx::query_scalar!(
                r#"SELECT id AS "id!: Uuid" FROM payments WHERE booking_id = ?1 AND status = 'succeeded'"#,
                booking_id
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            for payment_id in paid {
                refund_payment(&mut tx, payment_id, now).await?;
            }
            let booking = existing_booking(&mut tx, booking_id).await?;
            Ok((RefundOutcome::Refunding(booking), true))
        }
        .await;
        commit_or_rollback(tx, result).await
    }

    pub(crate) async fn do_payment_refunded(
        &self,
        payment_id: Uuid,
        event: Option<ProviderEvent>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let result = async {
            if !record_event(&mut tx, &event, now).await? {
                return Ok((false, false));
            }
            let Some(payment) = load_payment(&mut tx, payment_id).await? else {
                return Ok((false, false));
            };
            if payment.status == usher_store::PaymentStatus::Refunded {
                return Ok((false, true));
            }
            sqlx::query!(
                "UPDATE payments SET status = 'refunded', updated_at = ?2 WHERE id = ?1",
                payment_id,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            // A refund made outside Usher (the provider's dashboard) ends the booking too.
            let ended = sqlx::query!(
                "UPDATE bookings SET status = 'refunded', updated_at = ?2 WHERE id = ?1 AND status = 'confirmed'",
                payment.booking_id,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if ended == 1 {
                release_booking_units(&mut tx, payment.booking_id).await?;
            }
            Ok((true, true))
        }
        .await;
        commit_or_rollback(tx, result).await
    }

    pub(crate) async fn do_claim_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let limit = i64::from(limit);
        let rows = sqlx::query_as!(
            JobRow,
            r#"UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = ?2, updated_at = ?1
               WHERE id IN (SELECT id FROM jobs
                            WHERE (state = 'queued' AND run_at <= ?1)
                               OR (state = 'running' AND locked_until <= ?1)
                            ORDER BY run_at LIMIT ?3)
               RETURNING id AS "id!: Uuid", kind, payload, state, attempts, max_attempts,
                         run_at AS "run_at!: DateTime<Utc>", last_error,
                         created_at AS "created_at!: DateTime<Utc>""#,
            now,
            lease_until,
            limit
        )
        .fetch_all(&self.writer)
        .await
        .map_err(backend)?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    pub(crate) async fn do_finish_job(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE jobs SET state = 'done', locked_until = NULL, updated_at = ?2 WHERE id = ?1",
            id,
            now
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_fail_job(
        &self,
        id: Uuid,
        error: &str,
        run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let state = if run_at.is_some() {
            JobState::Queued
        } else {
            JobState::Dead
        }
        .as_str();
        let run_at = run_at.unwrap_or(now);
        sqlx::query!(
            "UPDATE jobs SET state = ?2, run_at = ?3, last_error = ?4, locked_until = NULL, updated_at = ?5
             WHERE id = ?1",
            id,
            state,
            run_at,
            error,
            now
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_jobs(&self, state: JobState, limit: u32) -> StoreResult<Vec<Job>> {
        let (state, limit) = (state.as_str(), i64::from(limit));
        let rows = sqlx::query_as!(
            JobRow,
            r#"SELECT id AS "id!: Uuid", kind, payload, state, attempts, max_attempts,
                      run_at AS "run_at!: DateTime<Utc>", last_error,
                      created_at AS "created_at!: DateTime<Utc>"
               FROM jobs WHERE state = ?1 ORDER BY created_at LIMIT ?2"#,
            state,
            limit
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    pub(crate) async fn do_requeue_job(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        let changed = sqlx::query!(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?2, updated_at = ?2
             WHERE id = ?1 AND state = 'dead'",
            id,
            now
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    pub(crate) async fn do_email_sent(&self, booking_id: Uuid) -> StoreResult<bool> {
        let found = sqlx::query_scalar!(
            r#"SELECT 1 AS "one!: i64" FROM email_deliveries WHERE booking_id = ?1"#,
            booking_id
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        Ok(found.is_some())
    }

    pub(crate) async fn do_record_email_sent(
        &self,
        booking_id: Uuid,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO email_deliveries (booking_id, message_id, sent_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (booking_id) DO NOTHING",
            booking_id,
            message_id,
            now
        )
        .execute(&self.writer)
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
             VALUES (?1, ?2, ?3, 'in_flight', ?4)
             ON CONFLICT (scope, key) DO NOTHING",
            scope,
            key,
            fingerprint,
            now
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyStart::Started);
        }
        let row = sqlx::query!(
            r#"SELECT fingerprint, state, status AS "status?: i64", content_type, body,
                      created_at AS "created_at!: DateTime<Utc>"
               FROM idempotency_keys WHERE scope = ?1 AND key = ?2"#,
            scope,
            key
        )
        .fetch_optional(&self.writer)
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
        let status = i64::from(status);
        sqlx::query!(
            "UPDATE idempotency_keys SET state = 'done', status = ?3, content_type = ?4, body = ?5
             WHERE scope = ?1 AND key = ?2",
            scope,
            key,
            status,
            content_type,
            body
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()> {
        sqlx::query!(
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
            scope,
            key
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) async fn do_idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < ?1", before)
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
