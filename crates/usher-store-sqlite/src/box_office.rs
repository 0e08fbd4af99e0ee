//! Tickets at the door, the wallet and the audit log on SQLite ([`usher_store::box_office`]).
//! Every write goes through the single writer connection; the wallet's conditional
//! update and the ticket's check-in are single statements all the same, so they would
//! stay right with more writers.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use usher_core::{BookingId, BookingStatus, Cursor, Money, PageLimit, UnitId, UserId};
use usher_store::box_office::{self, AuditAction, AuditTarget};
use usher_store::{
    AuditEntry, AuditRow, AuditScope, CheckInCount, Page, StoreError, StoreResult, TicketRecord,
    WalletCredit, WalletEntry, WalletEntryKind, WalletEntryRow, WalletMove, WalletMoved, paginate,
};

use crate::{SqliteStore, backend};

/// Appends an audit row in the caller's transaction. A `booking` or `performance`
/// target without an event is filed under its event, so the organizer's view has it.
pub(crate) async fn insert_audit(
    conn: &mut SqliteConnection,
    entry: &AuditEntry,
) -> StoreResult<()> {
    let detail = entry.detail.to_string();
    sqlx::query!(
        "INSERT INTO audit_log (id, at, actor_id, action, target_kind, target_id, event_id,
                                request_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                 COALESCE(?7, CASE ?5
                     WHEN 'booking' THEN
                         (SELECT p.event_id FROM bookings b
                          JOIN performances p ON p.id = b.performance_id WHERE b.id = ?6)
                     WHEN 'performance' THEN (SELECT event_id FROM performances WHERE id = ?6)
                 END),
                 ?8, ?9)",
        entry.id,
        entry.at,
        entry.actor_id,
        entry.action.as_str(),
        entry.target.kind(),
        entry.target.id(),
        entry.event_id,
        entry.request_id,
        detail
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Moves a wallet's balance and appends the entry; `None` (nothing written) when the
/// balance would go below zero. The entry's id is taken after the balance moved, while
/// this transaction holds the wallet's row: the ledger's id order is the order of moves.
pub(crate) async fn wallet_move(
    conn: &mut SqliteConnection,
    entry: &WalletMove,
) -> StoreResult<Option<WalletMoved>> {
    let balance = if entry.amount.amount >= 0 {
        Some(credit(conn, entry).await?)
    } else {
        debit(conn, entry).await?
    };
    let Some(balance) = balance else {
        return Ok(None);
    };
    let entry_id = append_entry(conn, entry, balance).await?;
    Ok(Some(WalletMoved { entry_id, balance }))
}

/// Adds to the balance, opening the wallet if need be; the balance afterwards.
async fn credit(conn: &mut SqliteConnection, entry: &WalletMove) -> StoreResult<i64> {
    let (currency, amount) = (entry.amount.currency.as_str(), entry.amount.amount);
    sqlx::query_scalar!(
        "INSERT INTO wallets (user_id, currency, balance, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, currency)
         DO UPDATE SET balance = wallets.balance + excluded.balance, updated_at = excluded.updated_at
         RETURNING balance",
        entry.user_id,
        currency,
        amount,
        entry.at
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)
}

/// One conditional write: the balance is read and moved by the same statement; `None`
/// (nothing written) when it would go below zero.
async fn debit(conn: &mut SqliteConnection, entry: &WalletMove) -> StoreResult<Option<i64>> {
    let (currency, amount) = (entry.amount.currency.as_str(), entry.amount.amount);
    sqlx::query_scalar!(
        "UPDATE wallets SET balance = balance + ?3, updated_at = ?4
         WHERE user_id = ?1 AND currency = ?2 AND balance + ?3 >= 0
         RETURNING balance",
        entry.user_id,
        currency,
        amount,
        entry.at
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)
}

/// Appends the ledger entry of a move; its id.
async fn append_entry(
    conn: &mut SqliteConnection,
    entry: &WalletMove,
    balance: i64,
) -> StoreResult<Uuid> {
    let (currency, amount) = (entry.amount.currency.as_str(), entry.amount.amount);
    let kind = entry.kind.as_str();
    let entry_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO wallet_entries (id, user_id, currency, amount, balance_after, kind, reason,
                                     booking_id, payment_id, actor_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        entry_id,
        entry.user_id,
        currency,
        amount,
        balance,
        kind,
        entry.reason,
        entry.booking_id,
        entry.payment_id,
        entry.actor_id,
        entry.at
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(entry_id)
}

/// Numbers a ticket for each unit of the booking not numbered yet.
pub(crate) async fn issue_tickets(
    conn: &mut SqliteConnection,
    booking_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO tickets (booking_id, unit_id, issued_at)
         SELECT bu.booking_id, bu.unit_id, ?2 FROM booking_units bu
         JOIN units u ON u.id = bu.unit_id
         WHERE bu.booking_id = ?1
         ORDER BY u.group_position, u.row_position, u.seat_position
         ON CONFLICT (booking_id, unit_id) DO NOTHING",
        booking_id,
        now
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn load_ticket(
    conn: &mut SqliteConnection,
    serial: i64,
) -> StoreResult<Option<TicketRecord>> {
    let row = sqlx::query!(
        r#"SELECT t.serial AS "serial!: i64", t.booking_id AS "booking_id!: Uuid",
                  t.unit_id AS "unit_id!: Uuid", b.performance_id AS "performance_id!: Uuid",
                  p.event_id AS "event_id!: Uuid", e.organizer_id AS "organizer_id!: Uuid",
                  b.status, t.checked_in_at AS "checked_in_at?: DateTime<Utc>"
           FROM tickets t
           JOIN bookings b ON b.id = t.booking_id
           JOIN performances p ON p.id = b.performance_id
           JOIN events e ON e.id = p.event_id
           WHERE t.serial = ?1"#,
        serial
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    row.map(|r| {
        Ok(TicketRecord {
            serial: r.serial,
            booking_id: r.booking_id.into(),
            unit_id: r.unit_id.into(),
            performance_id: r.performance_id.into(),
            event_id: r.event_id.into(),
            organizer_id: r.organizer_id.into(),
            booking_status: BookingStatus::parse(&r.status)
                .map_err(|e| StoreError::Backend(format!("corrupt bookings.status: {e}")))?,
            checked_in_at: r.checked_in_at,
        })
    })
    .transpose()
}

impl SqliteStore {
    pub(crate) async fn do_ticket(&self, serial: i64) -> StoreResult<Option<TicketRecord>> {
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        load_ticket(&mut conn, serial).await
    }

    pub(crate) async fn do_checkin_counts(&self, event_id: Uuid) -> StoreResult<Vec<CheckInCount>> {
        let rows = sqlx::query!(
            r#"SELECT p.id AS "performance_id!: Uuid",
                      COUNT(t.serial) AS "valid!: i64",
                      COUNT(t.checked_in_at) AS "checked_in!: i64"
               FROM performances p
               LEFT JOIN bookings b ON b.performance_id = p.id AND b.status = 'confirmed'
               LEFT JOIN tickets t ON t.booking_id = b.id
               WHERE p.event_id = ?1
               GROUP BY p.id
               ORDER BY p.starts_at, p.id"#,
            event_id
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| CheckInCount {
                performance_id: r.performance_id.into(),
                valid: r.valid as u64,
                checked_in: r.checked_in as u64,
            })
            .collect())
    }

    pub(crate) async fn do_wallet_balances(&self, user_id: Uuid) -> StoreResult<Vec<Money>> {
        sqlx::query!(
            "SELECT currency, balance FROM wallets WHERE user_id = ?1 ORDER BY currency",
            user_id
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?
        .into_iter()
        .map(|r| box_office::balance(r.balance, &r.currency))
        .collect()
    }

    pub(crate) async fn do_wallet_entries(
        &self,
        user_id: Uuid,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WalletEntry>> {
        let after = after.map(|c| c.id());
        let fetch = i64::from(limit.get()) + 1;
        let entries = sqlx::query_as!(
            WalletEntryRow,
            r#"SELECT id AS "id!: Uuid", user_id AS "user_id!: Uuid", currency, amount,
                      balance_after, kind, reason, booking_id AS "booking_id?: Uuid",
                      payment_id AS "payment_id?: Uuid", actor_id AS "actor_id?: Uuid",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM wallet_entries
               WHERE user_id = ?1 AND (?2 IS NULL OR id < ?2)
               ORDER BY id DESC LIMIT ?3"#,
            user_id,
            after,
            fetch
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?
        .into_iter()
        .map(WalletEntryRow::into_entry)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(entries, limit, |e| e.id))
    }

    pub(crate) async fn do_wallet_credit(&self, credit: WalletCredit) -> StoreResult<WalletEntry> {
        let entry = WalletMove {
            user_id: credit.user_id,
            amount: credit.amount,
            kind: WalletEntryKind::Credit,
            reason: credit.reason.clone(),
            booking_id: None,
            payment_id: None,
            actor_id: credit.audit.actor_id,
            at: credit.now,
        };
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let moved = wallet_move(&mut tx, &entry).await?.ok_or_else(|| {
            StoreError::Backend("a credit cannot take a balance below zero".into())
        })?;
        let audit = credit
            .audit
            .clone()
            .note("amount", credit.amount.amount)
            .note("currency", credit.amount.currency.as_str())
            .note("reason", credit.reason.clone());
        insert_audit(
            &mut tx,
            &audit.entry(
                AuditAction::WalletCredited,
                AuditTarget::User(credit.user_id),
                None,
                credit.now,
            ),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(WalletEntry {
            id: moved.entry_id,
            user_id: entry.user_id,
            amount: entry.amount,
            balance_after: moved.balance,
            kind: entry.kind,
            reason: entry.reason,
            booking_id: None,
            payment_id: None,
            actor_id: entry.actor_id,
            at: entry.at,
        })
    }

    pub(crate) async fn do_audit_log(
        &self,
        scope: AuditScope,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<AuditEntry>> {
        let event = match scope {
            AuditScope::All => None,
            AuditScope::Event(id) => Some(id),
        };
        let after = after.map(|c| c.id());
        let fetch = i64::from(limit.get()) + 1;
        let entries = sqlx::query_as!(
            AuditRow,
            r#"SELECT id AS "id!: Uuid", at AS "at!: DateTime<Utc>", actor_id AS "actor_id?: Uuid",
                      action, target_kind, target_id AS "target_id!: Uuid",
                      event_id AS "event_id?: Uuid", request_id, detail
               FROM audit_log
               WHERE (?1 IS NULL OR event_id = ?1) AND (?2 IS NULL OR id < ?2)
               ORDER BY id DESC LIMIT ?3"#,
            event,
            after,
            fetch
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?
        .into_iter()
        .map(AuditRow::into_entry)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(entries, limit, |e| e.id))
    }
}

#[async_trait::async_trait]
impl usher_store::CheckInTx for crate::hold::SqliteTx {
    /// Nothing to hold: this transaction is the only writer.
    async fn hold_booking(&mut self, _serial: i64) -> StoreResult<()> {
        Ok(())
    }

    async fn admit(
        &mut self,
        serial: i64,
        by: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(BookingId, UnitId)>> {
        let admitted = sqlx::query!(
            r#"UPDATE tickets SET checked_in_at = ?2, checked_in_by = ?3
               WHERE serial = ?1 AND checked_in_at IS NULL
                 AND (SELECT status FROM bookings WHERE id = tickets.booking_id) = 'confirmed'
               RETURNING booking_id AS "booking_id!: Uuid", unit_id AS "unit_id!: Uuid""#,
            serial,
            now,
            by
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(admitted.map(|a| (a.booking_id.into(), a.unit_id.into())))
    }

    async fn ticket(&mut self, serial: i64) -> StoreResult<Option<TicketRecord>> {
        load_ticket(&mut self.tx, serial).await
    }

    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()> {
        insert_audit(&mut self.tx, entry).await
    }
}
