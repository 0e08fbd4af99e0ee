//! Usher's storage contract on PostgreSQL, the scaled deployment: many stateless Usher
//! instances share one database, so every read-modify-write here locks what it reads
//! (`FOR UPDATE`) or is a single conditional statement.

mod box_office;
mod catalog;
mod hold;
mod inventory;
mod live;
mod payments;
mod waiting;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use usher_core::ids::{BookingId, EventId, PaymentId, PerformanceId, UserId};
use uuid::Uuid;

use usher_core::{
    Booking, BookingStatus, Cursor, Email, Event, PageLimit, Performance, Role, Standing, Unit,
    User,
};
use usher_store::EmailKind;
use usher_store::box_office::{AuditAction, AuditTarget};
use usher_store::{
    AccountNotice, Attendee, EventQuery, EventRow, EventScope, IdempotencyStart, Job, JobState,
    LiveBus, LiveChange, LiveNotices, LiveSnapshot, NewEvent, NewPerformance, NewRefreshToken,
    NewUser, Page, Payment, PerformanceInventory, PerformanceSales, Readiness, SaleScope, Store,
    StoreError, StoreResult, UserChange, UserCredentials, UserQuery, UserRow, contains_pattern,
    page_from_rows, paginate, search_key, user_search_key,
};
use usher_store::{
    Audit, AuditEntry, AuditScope, CheckInCount, TicketRecord, WalletCredit, WalletEntry,
};
use usher_store::{QueueRoom, QueueTicket, WaitlistEntry};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connections per instance. PostgreSQL's default limit is 100; several instances must
/// fit under it.
const DEFAULT_POOL_SIZE: u32 = 16;

/// Writer tasks of the write pipeline: each holds at most one connection at a time.
const HOLD_WRITERS: usize = 4;
/// Longest wait for a pooled connection (or for reconnecting to a restarting server).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The same for a read replica's pool ([`PostgresStore::connect_lazy`]).
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) live: LiveBus,
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, DEFAULT_POOL_SIZE).await
    }

    /// A pool of at most `size` connections that connects on first use: a read
    /// replica that is down when the server starts is then only skipped until it
    /// answers. An unparsable URL is an error at once.
    pub fn connect_lazy(url: &str, size: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(size)
            // A replica that went away fails a read at once (it then runs on the
            // primary) instead of retrying its connection for the primary's wait.
            .acquire_timeout(REPLICA_ACQUIRE_TIMEOUT)
            .connect_lazy(url)
            .map_err(backend)?;
        Ok(Self {
            pool,
            live: LiveBus::new(),
        })
    }

    /// Connects with `size` pooled connections.
    pub async fn connect_with(url: &str, size: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(size)
            // A database that is down or saturated answers 503 within seconds
            // rather than holding the request until the HTTP timeout.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(backend)?;
        Ok(Self {
            pool,
            live: LiveBus::new(),
        })
    }
}

/// A stored value this version cannot read.
pub(crate) fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt row: {error}"))
}

/// A database error as the store reports it: [`StoreError::Unavailable`] when the
/// database cannot take work now (so clients get 503 and may retry), a backend failure
/// otherwise.
pub(crate) fn backend(error: sqlx::Error) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unavailable(error.to_string())
    } else if is_retryable(&error) {
        StoreError::Conflict(error.to_string())
    } else {
        StoreError::Backend(error.to_string())
    }
}

/// The server is unreachable, restarting or refusing connections, the pool's wait ran
/// out, or PostgreSQL reports a connection exception (class 08), insufficient
/// resources (53: disk full, out of memory, too many connections), an operator
/// intervention (57P: shutdown, cannot connect now) or a read-only transaction (25006).
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "25006"
        }),
        _ => false,
    }
}

/// Deadlocks and serialization failures: the transaction was rolled back and may be
/// run again.
pub(crate) fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e)
        if matches!(e.code().as_deref(), Some("40P01") | Some("40001")))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[async_trait]
impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        // Accounts created before user search existed get their search key, folded in
        // Rust as on every engine.
        let unindexed = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", email, name FROM users WHERE search IS NULL"#
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        for user in unindexed {
            let key = user_search_key(&user.email, &user.name);
            sqlx::query!("UPDATE users SET search = $2 WHERE id = $1", user.id, key)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        }
        // Accounts from before look-alike keys get theirs. Two that already look alike
        // keep the first its key; the other stays without one (and is logged), since
        // refusing to start would help nobody.
        let unkeyed = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", email FROM users WHERE email_key IS NULL ORDER BY id"#
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        for user in unkeyed {
            let key = Email::from_stored(user.email).look_alike_key();
            let keyed = sqlx::query!(
                "UPDATE users SET email_key = $2 WHERE id = $1",
                user.id,
                key
            )
            .execute(&self.pool)
            .await;
            match keyed {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    tracing::warn!(user_id = %user.id, "this account's address looks like another's; it keeps no look-alike key");
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    async fn replication_position(&self) -> StoreResult<Option<u64>> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                           ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::bigint",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(position.and_then(|p| u64::try_from(p).ok()))
    }

    async fn readiness(&self) -> StoreResult<Readiness> {
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let applied = if applied == 0 {
            0
        } else {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?
        };
        Ok(Readiness {
            applied_migrations: applied as usize,
            known_migrations: MIGRATOR.iter().count(),
        })
    }

    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query!(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            value
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let stored = sqlx::query_scalar!("SELECT value FROM settings WHERE key = $1", key)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn replace_setting(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool> {
        let changed = sqlx::query!(
            "UPDATE settings SET value = $3 WHERE key = $1 AND value = $2",
            key,
            expected,
            value
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let id = Uuid::now_v7();
        let now = usher_store::now();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Every account tries to claim the marker; only the very first one gets it.
        let claimed = sqlx::query!(
            "INSERT INTO settings (key, value) VALUES ('first_account', $1) ON CONFLICT (key) DO NOTHING",
            id.to_string()
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        let role = if claimed && new.first_account_is_admin {
            Role::Admin
        } else {
            new.role
        };
        let (email, name, role_name) = (new.email.as_str(), new.name.as_str(), role.as_str());
        let search = user_search_key(email, name);
        // Unique: an address that looks like an existing one is taken (constraint below).
        let email_key = new.email.look_alike_key();
        let inserted = sqlx::query!(
            "INSERT INTO users (id, email, name, password_hash, role, created_at, search, email_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            id,
            email,
            name,
            new.password_hash,
            role_name,
            now,
            search,
            email_key
        )
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(StoreError::EmailTaken),
            Err(e) => return Err(backend(e)),
        }
        tx.commit().await.map_err(backend)?;
        Ok(User {
            id: id.into(),
            email: new.email,
            name: new.name,
            role,
            disabled: false,
            created_at: now,
        })
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        sqlx::query_as!(
            UserRow,
            r#"SELECT id AS "id!: Uuid", email, name, role, disabled_at IS NOT NULL AS "disabled!",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM users WHERE id = $1"#,
            id.uuid()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(UserRow::into_user)
        .transpose()
    }

    async fn credentials_by_email(&self, email: &Email) -> StoreResult<Option<UserCredentials>> {
        let email = email.as_str();
        let row = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", email, name, role, password_hash, disabled_at IS NOT NULL AS "disabled!",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM users WHERE email = $1"#,
            email
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| {
            let user = UserRow {
                id: r.id,
                email: r.email,
                name: r.name,
                role: r.role,
                disabled: r.disabled,
                created_at: r.created_at,
            }
            .into_user()?;
            Ok(UserCredentials {
                user,
                password_hash: r.password_hash,
            })
        })
        .transpose()
    }

    async fn list_users(&self, query: UserQuery) -> StoreResult<Page<User>> {
        let pattern = query.q.as_deref().map(contains_pattern);
        let after = query.after.map(|c| c.id());
        let fetch = i64::from(query.limit.get()) + 1;
        let users = sqlx::query_as!(
            UserRow,
            r#"SELECT id AS "id!: Uuid", email, name, role, disabled_at IS NOT NULL AS "disabled!",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM users
               WHERE ($1::text IS NULL OR search LIKE $1 ESCAPE '\')
                 AND ($2::uuid IS NULL OR id < $2)
               ORDER BY id DESC LIMIT $3"#,
            pattern,
            after,
            fetch
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .into_iter()
        .map(UserRow::into_user)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(users, query.limit, |u| u.id.uuid()))
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> StoreResult<()> {
        let now = usher_store::now();
        sqlx::query!(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            token.id,
            token.family_id,
            token.user_id.uuid(),
            token.token_hash,
            now,
            token.expires_at
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn revoke_refresh_family(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Uuid>> {
        let Some(session_id) = self.session_of_refresh_token(token_hash).await? else {
            return Ok(None);
        };
        sqlx::query!(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            now,
            session_id
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(Some(session_id))
    }

    async fn session_of_refresh_token(&self, token_hash: &[u8]) -> StoreResult<Option<Uuid>> {
        sqlx::query_scalar!(
            r#"SELECT family_id AS "family_id!: Uuid" FROM refresh_tokens WHERE token_hash = $1"#,
            token_hash
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)
    }

    async fn standing(&self, user_id: UserId, session_id: Uuid) -> StoreResult<Option<Standing>> {
        // A session is live while its current refresh token is neither used (rotated
        // away) nor revoked: rotation marks the old token used and inserts the new one
        // in one transaction, so a live session always has exactly one.
        let row = sqlx::query!(
            r#"SELECT role, disabled_at IS NOT NULL AS "disabled!",
                      EXISTS (SELECT 1 FROM refresh_tokens
                              WHERE family_id = $2 AND user_id = users.id
                                AND used_at IS NULL AND revoked_at IS NULL) AS "session_live!"
               FROM users WHERE id = $1"#,
            user_id.uuid(),
            session_id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|r| {
            Ok(Standing {
                role: Role::parse(&r.role).map_err(usher_store::corrupt_value("users.role"))?,
                disabled: r.disabled,
                session_live: r.session_live,
            })
        })
        .transpose()
    }

    async fn begin_accounts(&self) -> StoreResult<Box<dyn usher_store::AccountTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn create_event(&self, new: NewEvent, audit: &Audit) -> StoreResult<Event> {
        let id = Uuid::now_v7();
        let now = usher_store::now();
        let title = new.title.as_str();
        let title_search = search_key(title);
        let description = new.description.as_str();
        let venue = new.venue.as_str();
        let attributes = new.attributes.as_value().to_string();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let event = sqlx::query_as!(
            EventRow,
            r#"INSERT INTO events (id, organizer_id, title, title_search, description, venue,
                                   attributes, status, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, 'draft', $8, $8)
               RETURNING id AS "id!: Uuid", organizer_id AS "organizer_id!: Uuid", title,
                         description, venue, attributes::text AS "attributes!", status,
                         created_at AS "created_at!: DateTime<Utc>",
                         updated_at AS "updated_at!: DateTime<Utc>""#,
            id,
            new.organizer_id.uuid(),
            title,
            title_search,
            description,
            venue,
            attributes,
            now
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?
        .into_event()?;
        let audit = audit.clone().note("title", event.title.as_str());
        box_office::insert_audit(
            &mut tx,
            &audit.entry(
                AuditAction::EventCreated,
                AuditTarget::Event(id.into()),
                Some(id.into()),
                now,
            ),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(event)
    }

    async fn event(&self, id: EventId) -> StoreResult<Option<Event>> {
        sqlx::query_as!(
            EventRow,
            r#"SELECT id AS "id!: Uuid", organizer_id AS "organizer_id!: Uuid", title,
                      description, venue, attributes::text AS "attributes!", status,
                      created_at AS "created_at!: DateTime<Utc>",
                      updated_at AS "updated_at!: DateTime<Utc>"
               FROM events WHERE id = $1"#,
            id.uuid()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(EventRow::into_event)
        .transpose()
    }

    async fn begin_catalog(&self) -> StoreResult<Box<dyn usher_store::CatalogTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn list_events(&self, query: EventQuery) -> StoreResult<Page<Event>> {
        let (scope, owner) = match query.scope {
            EventScope::Public => ("public", None),
            EventScope::PublicAndOwnedBy(owner) => ("owned", Some(owner)),
            EventScope::OwnedBy(owner) => ("mine", Some(owner)),
            EventScope::All => ("all", None),
        };
        let pattern = query.title_contains.as_deref().map(contains_pattern);
        let after = query.after.map(|c| c.id());
        let fetch = i64::from(query.limit.get()) + 1;
        let rows = sqlx::query_as!(
            EventRow,
            r#"SELECT id AS "id!: Uuid", organizer_id AS "organizer_id!: Uuid", title,
                      description, venue, attributes::text AS "attributes!", status,
                      created_at AS "created_at!: DateTime<Utc>",
                      updated_at AS "updated_at!: DateTime<Utc>"
               FROM events
               WHERE ($1::text = 'all'
                      OR ($1 <> 'mine' AND status = 'published')
                      OR ($1 IN ('owned', 'mine') AND organizer_id = $2::uuid))
                 AND ($3::text IS NULL OR title_search LIKE $3 ESCAPE '\')
                 AND ($4::uuid IS NULL OR id < $4)
               ORDER BY id DESC
               LIMIT $5"#,
            scope,
            owner,
            pattern,
            after,
            fetch
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        page_from_rows(rows, query.limit)
    }
    async fn create_performance(
        &self,
        new: NewPerformance,
        audit: &Audit,
    ) -> StoreResult<Performance> {
        self.insert_performance(new, audit).await
    }

    async fn performance(&self, id: PerformanceId) -> StoreResult<Option<Performance>> {
        Ok(self.load_performances(None, Some(id.uuid())).await?.pop())
    }

    async fn performances_of_event(&self, event_id: EventId) -> StoreResult<Vec<Performance>> {
        self.load_performances(Some(event_id.uuid()), None).await
    }

    async fn inventory(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<PerformanceInventory> {
        self.count_inventory(performance_id.uuid(), now).await
    }

    async fn units(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Unit>> {
        self.list_units(performance_id.uuid(), now).await
    }

    async fn begin_join(
        &self,
        performance_id: PerformanceId,
    ) -> StoreResult<Box<dyn usher_store::JoinTx>> {
        self.joining(performance_id.uuid()).await
    }

    async fn waitlist_entry(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>> {
        self.waitlist_entry_at(id, now).await
    }

    async fn waitlist_of_user(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WaitlistEntry>> {
        self.user_waitlist(user_id.uuid(), now, limit, after).await
    }

    async fn waitlist_leave(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>> {
        self.leave_waitlist(id, now).await
    }

    async fn begin_serving(
        &self,
        performance_id: PerformanceId,
    ) -> StoreResult<Option<Box<dyn usher_store::ServeTx>>> {
        self.serving(performance_id.uuid()).await
    }

    async fn waitlists_to_serve(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        self.waitlists_due(now).await
    }

    async fn begin_queue(&self) -> StoreResult<Box<dyn usher_store::QueueTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn queue_ticket(&self, id: Uuid) -> StoreResult<Option<QueueTicket>> {
        self.ticket(id).await
    }

    async fn queue_room(&self, performance_id: PerformanceId) -> StoreResult<Option<QueueRoom>> {
        self.queue_room_of(performance_id.uuid()).await
    }

    async fn queue_rooms_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        self.rooms_due(now).await
    }

    fn hold_engine(&self) -> usher_store::HoldEngine {
        usher_store::HoldEngine {
            writers: HOLD_WRITERS,
            serialised: false,
        }
    }

    async fn begin_holds(&self) -> StoreResult<Box<dyn usher_store::HoldTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn begin_inventory(&self) -> StoreResult<Box<dyn usher_store::InventoryTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn booking(&self, id: BookingId) -> StoreResult<Option<Booking>> {
        self.get_booking(id.uuid()).await
    }

    async fn bookings_of_user(
        &self,
        user_id: UserId,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Booking>> {
        self.user_bookings(user_id.uuid(), limit, after).await
    }

    async fn sales(
        &self,
        event_id: EventId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PerformanceSales>> {
        self.event_sales(event_id.uuid(), now).await
    }

    async fn attendees(
        &self,
        performance_id: PerformanceId,
        status: Option<BookingStatus>,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Attendee>> {
        self.list_attendees(performance_id.uuid(), status, now, limit, after)
            .await
    }

    async fn live_bookings(&self, scope: SaleScope, limit: u32) -> StoreResult<Vec<Uuid>> {
        self.list_live_bookings(scope, limit).await
    }

    async fn begin_transition(&self) -> StoreResult<Box<dyn usher_store::LifecycleTx>> {
        self.lifecycle().await
    }

    async fn attach_checkout(
        &self,
        payment_id: PaymentId,
        provider_ref: &str,
        checkout_url: &str,
    ) -> StoreResult<()> {
        self.do_attach_checkout(payment_id.uuid(), provider_ref, checkout_url)
            .await
    }

    async fn payment(&self, id: PaymentId) -> StoreResult<Option<Payment>> {
        self.do_payment(id.uuid()).await
    }

    async fn payments_of_booking(&self, booking_id: BookingId) -> StoreResult<Vec<Payment>> {
        self.do_payments_of_booking(booking_id.uuid()).await
    }

    async fn payment_by_ref(
        &self,
        provider: &usher_core::lifecycle::Provider,
        provider_ref: &str,
    ) -> StoreResult<Option<Payment>> {
        self.do_payment_by_ref(provider, provider_ref).await
    }

    async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        lease: Uuid,
    ) -> StoreResult<Vec<Job>> {
        self.do_claim_jobs(now, lease_until, limit, lease).await
    }

    async fn finish_job(&self, id: Uuid, lease: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
        self.do_finish_job(id, lease, now).await
    }

    async fn fail_job(
        &self,
        id: Uuid,
        lease: Uuid,
        error: &str,
        run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.do_fail_job(id, lease, error, run_at, now).await
    }

    async fn jobs(&self, state: JobState, limit: u32) -> StoreResult<Vec<Job>> {
        self.do_jobs(state, limit).await
    }

    async fn requeue_job(&self, id: Uuid, now: DateTime<Utc>, audit: &Audit) -> StoreResult<bool> {
        self.do_requeue_job(id, now, audit).await
    }

    async fn ticket(&self, serial: i64) -> StoreResult<Option<TicketRecord>> {
        self.do_ticket(serial).await
    }

    async fn begin_check_in(&self) -> StoreResult<Box<dyn usher_store::CheckInTx>> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(hold::PgTx { tx }))
    }

    async fn checkin_counts(&self, event_id: EventId) -> StoreResult<Vec<CheckInCount>> {
        self.do_checkin_counts(event_id.uuid()).await
    }

    async fn wallet_balances(&self, user_id: UserId) -> StoreResult<Vec<usher_core::Money>> {
        self.do_wallet_balances(user_id.uuid()).await
    }

    async fn wallet_entries(
        &self,
        user_id: UserId,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WalletEntry>> {
        self.do_wallet_entries(user_id.uuid(), limit, after).await
    }

    async fn wallet_credit(&self, credit: WalletCredit) -> StoreResult<WalletEntry> {
        self.do_wallet_credit(credit).await
    }

    async fn audit_log(
        &self,
        scope: AuditScope,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<AuditEntry>> {
        self.do_audit_log(scope, limit, after).await
    }

    async fn email_sent(&self, booking_id: BookingId, kind: EmailKind) -> StoreResult<bool> {
        self.do_email_sent(booking_id.uuid(), kind).await
    }

    async fn record_email_sent(
        &self,
        booking_id: BookingId,
        kind: EmailKind,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.do_record_email_sent(booking_id.uuid(), kind, message_id, now)
            .await
    }

    async fn idempotency_start(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart> {
        self.do_idempotency_start(scope, key, fingerprint, now)
            .await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> StoreResult<()> {
        self.do_idempotency_complete(scope, key, status, content_type, body)
            .await
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()> {
        self.do_idempotency_abandon(scope, key).await
    }

    async fn idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.do_idempotency_purge(before).await
    }

    fn live_bus(&self) -> &LiveBus {
        &self.live
    }

    async fn live_notices(&self) -> StoreResult<Option<LiveNotices>> {
        self.listen().await.map(Some)
    }

    async fn announce_account(&self, notice: AccountNotice) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(AccountNotice::CHANNEL)
            .bind(notice.to_payload())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn account_notices(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<AccountNotice>>> {
        self.listen_accounts().await.map(Some)
    }

    async fn live_snapshot(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSnapshot>> {
        self.do_live_snapshot(performance_id.uuid(), now).await
    }

    async fn live_changes(
        &self,
        performance_id: PerformanceId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LiveChange>> {
        self.do_live_changes(performance_id.uuid(), after, limit)
            .await
    }

    async fn live_heads(
        &self,
        performance_ids: &[PerformanceId],
    ) -> StoreResult<Vec<(PerformanceId, i64)>> {
        Ok(self
            .do_live_heads(&usher_store::uuids(performance_ids))
            .await?
            .into_iter()
            .map(|(id, seq)| (id.into(), seq))
            .collect())
    }

    async fn live_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.do_live_purge(before).await
    }
}

#[async_trait]
impl usher_store::AccountTx for hold::PgTx {
    async fn change_user(
        &mut self,
        id: UserId,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let role = change.role.map(Role::as_str);
        let user = sqlx::query_as!(
            UserRow,
            r#"UPDATE users
               SET role = COALESCE($1::text, role),
                   disabled_at = CASE WHEN $2::bool IS NULL THEN disabled_at
                                      WHEN $2::bool THEN COALESCE(disabled_at, $3)
                                      ELSE NULL END
               WHERE id = $4
               RETURNING id AS "id!: Uuid", email, name, role, disabled_at IS NOT NULL AS "disabled!",
                         created_at AS "created_at!: DateTime<Utc>""#,
            role,
            change.disabled,
            now,
            id.uuid()
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?
        .map(UserRow::into_user)
        .transpose()?;
        Ok(user)
    }

    async fn revoke_sessions(&mut self, user_id: UserId, now: DateTime<Utc>) -> StoreResult<()> {
        let id = user_id;
        sqlx::query!(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            now,
            id.uuid()
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()> {
        box_office::insert_audit(&mut self.tx, entry).await
    }

    async fn use_refresh_token(
        &mut self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Uuid, Uuid)>> {
        let presented_hash = token_hash;
        let live = sqlx::query!(
            r#"UPDATE refresh_tokens SET used_at = $1
               WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1
               RETURNING family_id AS "family_id!: Uuid", user_id AS "user_id!: Uuid""#,
            now,
            presented_hash
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(live.map(|l| (l.family_id, l.user_id)))
    }

    async fn insert_refresh_token(
        &mut self,
        token: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
                "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                token.id,
                token.family_id,
                token.user_id.uuid(),
                token.token_hash,
                now,
                token.expires_at
            )
            .execute(&mut *self.tx)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn spent_token_family(&mut self, token_hash: &[u8]) -> StoreResult<Option<Uuid>> {
        let presented_hash = token_hash;
        let dead = sqlx::query!(
            r#"SELECT family_id AS "family_id!: Uuid" FROM refresh_tokens
               WHERE token_hash = $1 AND (used_at IS NOT NULL OR revoked_at IS NOT NULL)"#,
            presented_hash
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(dead.map(|d| d.family_id))
    }

    async fn revoke_family(&mut self, family_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            now,
            family_id
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
