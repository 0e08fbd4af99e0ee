//! The storage contract. Every engine (SQLite, PostgreSQL) implements [`Store`]; the
//! server only ever talks to `Arc<dyn Store>`. The story tests in `usher-testkit` run
//! the same script against each engine: a behaviour that differs between them is a bug.
//!
//! Constraint violations become domain errors here ([`StoreError::EmailTaken`]), so the
//! layers above never parse database messages.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, EventId, PaymentId, PerformanceId, UserId};
use uuid::Uuid;

use usher_core::{
    Booking, BookingStatus, Cursor, Email, Event, EventAttributes, EventStatus, EventText,
    EventTitle, PageLimit, Performance, Role, Standing, Unit, User, UserName,
};

pub mod box_office;
pub mod hold;
pub mod inventory;
pub mod lifecycle;
pub mod live;
pub mod payments;
pub mod waiting;
pub use box_office::{
    Audit, AuditAction, AuditEntry, AuditRow, AuditScope, AuditTarget, CheckIn, CheckInCount,
    CheckInTx, TicketRecord, WalletCredit, WalletEntry, WalletEntryKind, WalletEntryRow,
    WalletMove, WalletMoved,
};
pub use hold::{HoldEngine, HoldTx, InventoryTx, NewHold, Tx};
pub use inventory::{
    Attendee, BookedUnitRow, BookingCountRow, BookingCounts, BookingRow, CommandOutcome, CountRow,
    HeldUnit, HoldCommand, HoldFacts, InventoryCommand, NewPerformance, PerformanceInventory,
    PerformancePatch, PerformanceRow, PerformanceSales, PerformanceUpdate, PriceGroupRow,
    SaleScope, SalesRow, Selection, UnitRow, all_takeable_by, assemble_performances, attendees,
    push_group, taken_units,
};
pub use lifecycle::{BookingRef, LifecycleTx, TransitionRequest, Transitioned};
pub use live::{ChangeSet, LiveBus, LiveChange, LiveNotices, LiveSnapshot, UnitMove};
pub use payments::{
    EmailKind, IdempotencyStart, Job, JobKind, JobRow, JobState, Payment, PaymentRow,
    PaymentStatus, ProviderEvent,
};
pub use waiting::{
    AdmissionPolicy, JoinTx, QueueJoin, QueueJoined, QueueRoom, QueueState, QueueTicket, QueueTx,
    ServeTx, WaitingRow, WaitlistEntry, WaitlistJoin, WaitlistJoined, WaitlistStatus,
};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The database could not be reached or answered with an error we did not expect.
    /// The text is for logs, never for clients.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The database cannot take work right now: unreachable, restarting, out of disk,
    /// read-only, or every connection busy past the wait. Retrying later may succeed;
    /// nothing was changed. The text is for logs.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race with another (a deadlock, a serialisation failure)
    /// and was rolled back; running it again may succeed. The text is for logs.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    #[error("an event that is {from} cannot become {to}")]
    IllegalStatusChange { from: EventStatus, to: EventStatus },
}

/// A user together with their password hash, as login needs it.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub name: UserName,
    pub password_hash: String,
    pub role: Role,
    /// When set, the account becomes admin if it is the first account ever created.
    /// Decided inside the insert's transaction, so two racing first signups cannot both
    /// become admin.
    pub first_account_is_admin: bool,
}

/// One refresh token as stored: only its hash, never the token itself.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: Uuid,
    /// All tokens descending from one login share a family; reuse of any rotated member
    /// revokes the whole family.
    pub family_id: Uuid,
    pub user_id: UserId,
    pub token_hash: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

/// What an admin changes about an account; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<Role>,
    /// `Some(true)` disables (every session ends), `Some(false)` enables again.
    pub disabled: Option<bool>,
}

/// What an admin's change to an account needs of the engine, in one transaction.
#[async_trait]
pub trait AccountTx: Tx {
    /// Applies the change (a second "disable" keeps the first one's time); the account
    /// afterwards, `None` when there is no such account.
    async fn change_user(
        &mut self,
        id: UserId,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;
    /// Revokes every live session (refresh-token family) of the account.
    async fn revoke_sessions(&mut self, user_id: UserId, now: DateTime<Utc>) -> StoreResult<()>;
    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
    /// Marks the live (unused, unrevoked, unexpired) token with this hash used, in one
    /// conditional write; its `(family id, user id)` when there was one.
    async fn use_refresh_token(
        &mut self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Uuid, Uuid)>>;
    /// Stores a refresh token as given, created at `now`.
    async fn insert_refresh_token(
        &mut self,
        token: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The family of the token with this hash if it was already used or revoked.
    async fn spent_token_family(&mut self, token_hash: &[u8]) -> StoreResult<Option<Uuid>>;
    /// Revokes every token of the family not revoked yet.
    async fn revoke_family(&mut self, family_id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
}

/// What changing an event or a performance needs of the engine, in one transaction
/// (`usher_app::catalog`). Rows are locked when read: two instances patching one event
/// must not lose an update, and a cancel must not be overtaken by a publish.
#[async_trait]
pub trait CatalogTx: Tx {
    /// The event, locked; `None` when there is no such event.
    async fn lock_event(&mut self, id: EventId) -> StoreResult<Option<Event>>;
    /// Writes every field of the event as it is now.
    async fn save_event(&mut self, event: &Event) -> StoreResult<()>;
    /// The performance's status, locked; `None` when there is no such performance.
    async fn lock_performance(
        &mut self,
        id: PerformanceId,
    ) -> StoreResult<Option<usher_core::PerformanceStatus>>;
    /// Applies the patch's fields that are set.
    async fn patch_performance(
        &mut self,
        id: PerformanceId,
        patch: &PerformancePatch,
    ) -> StoreResult<()>;
    /// Queues a job in this transaction (the outbox).
    async fn enqueue(
        &mut self,
        kind: JobKind,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()>;
}

/// What happened when a refresh token was presented for rotation. A session is a
/// refresh-token family: its id is the family's, and access tokens name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now used and the replacement is stored.
    Rotated { user_id: UserId, session_id: Uuid },
    /// The token had already been rotated or revoked: somebody replayed it. The whole
    /// family is revoked now, and with it the session's access tokens.
    Reused { session_id: Uuid },
    /// Unknown or expired token. Nothing changed.
    Invalid,
}

/// Told to every instance when what authorizes requests changed, so that each drops
/// what it remembered of it at once ([`Store::announce_account`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountNotice {
    /// An account's role or state changed.
    Account(Uuid),
    /// A session ended (logout, revocation, a replayed refresh token).
    Session(Uuid),
    /// Something may have been missed (a notification link dropped): forget everything.
    Everything,
}

impl AccountNotice {
    /// The PostgreSQL channel notices travel on.
    pub const CHANNEL: &'static str = "usher_accounts";

    pub fn to_payload(self) -> String {
        match self {
            AccountNotice::Account(id) => format!("a {id}"),
            AccountNotice::Session(id) => format!("s {id}"),
            AccountNotice::Everything => "*".into(),
        }
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        match payload.split_once(' ') {
            Some(("a", id)) => id.parse().ok().map(AccountNotice::Account),
            Some(("s", id)) => id.parse().ok().map(AccountNotice::Session),
            _ if payload == "*" => Some(AccountNotice::Everything),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub organizer_id: UserId,
    pub title: EventTitle,
    pub description: EventText,
    pub venue: EventText,
    pub attributes: EventAttributes,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EventPatch {
    pub title: Option<EventTitle>,
    pub description: Option<EventText>,
    pub venue: Option<EventText>,
    pub attributes: Option<EventAttributes>,
    pub status: Option<EventStatus>,
}

impl EventPatch {
    /// The event as it is after this patch, or why the patch may not apply.
    pub fn apply(self, mut event: Event, now: DateTime<Utc>) -> StoreResult<Event> {
        if let Some(to) = self.status {
            if !event.status.can_become(to) {
                return Err(StoreError::IllegalStatusChange {
                    from: event.status,
                    to,
                });
            }
            event.status = to;
        }
        if let Some(title) = self.title {
            event.title = title;
        }
        if let Some(description) = self.description {
            event.description = description;
        }
        if let Some(venue) = self.venue {
            event.venue = venue;
        }
        if let Some(attributes) = self.attributes {
            event.attributes = attributes;
        }
        event.updated_at = now;
        Ok(event)
    }
}

/// Which events a listing may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventScope {
    /// Published events only.
    Public,
    /// Published events and every event of this organizer.
    PublicAndOwnedBy(Uuid),
    /// Every event of this organizer, whatever its status, and no one else's.
    OwnedBy(Uuid),
    /// Everything.
    All,
}

#[derive(Debug, Clone)]
pub struct EventQuery {
    pub scope: EventScope,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
    pub limit: PageLimit,
    pub after: Option<Cursor>,
}

/// The admin's user list.
#[derive(Debug, Clone)]
pub struct UserQuery {
    /// Case-insensitive substring of the email or the name.
    pub q: Option<String>,
    pub limit: PageLimit,
    pub after: Option<Cursor>,
}

/// What users are searched by: email and name, folded as [`search_key`] does.
pub fn user_search_key(email: &str, name: &str) -> String {
    search_key(&format!("{email}\n{name}"))
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Readiness as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub applied_migrations: usize,
    pub known_migrations: usize,
}

impl Readiness {
    pub fn is_current(&self) -> bool {
        self.applied_migrations >= self.known_migrations
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which engine this is ("sqlite", "postgres"), for logs and `/readyz`.
    fn engine(&self) -> &'static str;

    /// Applies the engine's embedded migrations. Safe to call on every start.
    async fn migrate(&self) -> StoreResult<()>;

    /// A round trip to the database plus a look at the migration table.
    async fn readiness(&self) -> StoreResult<Readiness>;

    /// Where this server is in the write-ahead log, in bytes: on a primary how far it
    /// has written, on a streaming replica how far it has replayed (`None` there until
    /// it has replayed anything, and on engines without replicas). Comparing a
    /// replica's with its primary's tells how far behind the replica is.
    async fn replication_position(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    /// Returns the value under `key`, storing `value` first if there was none. Two
    /// callers racing get the same answer.
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;
    /// Replaces the value under `key` if it is still `expected`; false otherwise.
    async fn replace_setting(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool>;

    // --- accounts -------------------------------------------------------------------

    async fn create_user(&self, new: NewUser) -> StoreResult<User>;
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    async fn credentials_by_email(&self, email: &Email) -> StoreResult<Option<UserCredentials>>;
    /// Opens the transaction an admin's change to an account runs in
    /// (`usher_app::accounts::update_user`).
    async fn begin_accounts(&self) -> StoreResult<Box<dyn AccountTx>>;
    /// Users, newest first; `query.q` matches email or name, case-insensitively.
    async fn list_users(&self, query: UserQuery) -> StoreResult<Page<User>>;

    async fn insert_refresh_token(&self, token: NewRefreshToken) -> StoreResult<()>;
    /// Revokes the family of the token with this hash (logout). Returns the session it
    /// ended, if such a token existed.
    async fn revoke_refresh_family(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Uuid>>;
    /// The session a refresh token belongs to (its family), live or not.
    async fn session_of_refresh_token(&self, token_hash: &[u8]) -> StoreResult<Option<Uuid>>;
    /// The account and session as they are now; `None` when the account is gone.
    async fn standing(&self, user_id: UserId, session_id: Uuid) -> StoreResult<Option<Standing>>;
    /// Tells every instance that what authorizes requests changed (after the commit
    /// that changed it). Engines with one instance need not: the server forgets locally.
    async fn announce_account(&self, notice: AccountNotice) -> StoreResult<()> {
        let _ = notice;
        Ok(())
    }
    /// Notices announced by any instance, when the engine carries them across instances.
    async fn account_notices(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<AccountNotice>>> {
        Ok(None)
    }

    // --- events ---------------------------------------------------------------------

    async fn create_event(&self, new: NewEvent, audit: &Audit) -> StoreResult<Event>;
    async fn event(&self, id: EventId) -> StoreResult<Option<Event>>;
    /// Opens the transaction an event or a performance changes in
    /// (`usher_app::catalog`).
    async fn begin_catalog(&self) -> StoreResult<Box<dyn CatalogTx>>;
    /// Newest first.
    async fn list_events(&self, query: EventQuery) -> StoreResult<Page<Event>>;

    // --- performances and inventory -----------------------------------------------

    /// Creates the performance and one unit per sellable place, in one transaction.
    async fn create_performance(
        &self,
        new: NewPerformance,
        audit: &Audit,
    ) -> StoreResult<Performance>;
    async fn performance(&self, id: PerformanceId) -> StoreResult<Option<Performance>>;
    /// The event's performances, soonest first.
    async fn performances_of_event(&self, event_id: EventId) -> StoreResult<Vec<Performance>>;
    /// Counts as a buyer sees them at `now` (expired holds count as available).
    async fn inventory(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<PerformanceInventory>;
    /// Every unit with its state at `now`, in seat-map order.
    async fn units(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Unit>>;

    // --- bookings -------------------------------------------------------------------

    /// How hold transactions behave on this engine ([`hold`]).
    fn hold_engine(&self) -> HoldEngine;
    /// Opens a transaction for holds (the hold use case runs in it).
    async fn begin_holds(&self) -> StoreResult<Box<dyn HoldTx>>;
    /// Opens a transaction for cancellations, expiry and blocking
    /// (`usher_app::inventory`).
    async fn begin_inventory(&self) -> StoreResult<Box<dyn InventoryTx>>;
    async fn booking(&self, id: BookingId) -> StoreResult<Option<Booking>>;
    /// The user's bookings, newest first.
    async fn bookings_of_user(
        &self,
        user_id: UserId,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Booking>>;
    /// Sales figures per performance of an event, at `now`.
    async fn sales(
        &self,
        event_id: EventId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PerformanceSales>>;
    /// A performance's bookings with their buyers, newest first, optionally only those
    /// reading `status` at `now`.
    async fn attendees(
        &self,
        performance_id: PerformanceId,
        status: Option<BookingStatus>,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Attendee>>;
    /// Up to `limit` bookings of a cancelled sale that are still held or confirmed.
    async fn live_bookings(&self, scope: SaleScope, limit: u32) -> StoreResult<Vec<Uuid>>;

    // --- the waiting list ([`waiting`]) ----------------------------------------------

    /// Opens the transaction a waiting-list join of this performance runs in, with the
    /// performance held against other joins and servings (`usher_app::waiting_list::join`).
    async fn begin_join(&self, performance_id: PerformanceId) -> StoreResult<Box<dyn JoinTx>>;
    async fn waitlist_entry(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>>;
    /// The user's entries, newest first.
    async fn waitlist_of_user(
        &self,
        user_id: UserId,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WaitlistEntry>>;
    /// Takes a waiting or offered entry off the list (an offer's hold is the caller's to
    /// cancel). The entry as it reads afterwards; `None` if there is no such entry.
    async fn waitlist_leave(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>>;
    /// Opens the transaction that serves the performance's waiting list, one serving
    /// per performance at a time (`usher_app::waiting_list`). `None` when nobody waits
    /// for it (or there is no such performance): nothing to serve.
    async fn begin_serving(
        &self,
        performance_id: PerformanceId,
    ) -> StoreResult<Option<Box<dyn ServeTx>>>;
    /// Performances on sale that someone waits for, with units free for them now.
    async fn waitlists_to_serve(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;

    // --- the waiting room ([`waiting`]) ----------------------------------------------

    /// Opens the transaction waiting-room joins and gatekeeper steps run in
    /// (`usher_app::waiting_room`).
    async fn begin_queue(&self) -> StoreResult<Box<dyn QueueTx>>;
    async fn queue_ticket(&self, id: Uuid) -> StoreResult<Option<QueueTicket>>;
    async fn queue_room(&self, performance_id: PerformanceId) -> StoreResult<Option<QueueRoom>>;
    /// Waiting rooms whose sale has opened (or opens now) with someone still waiting.
    async fn queue_rooms_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;

    // --- payments ------------------------------------------------------------------

    /// Opens the transaction a booking's payment state changes in (the use case is
    /// `usher_app::payments::transition`).
    async fn begin_transition(&self) -> StoreResult<Box<dyn LifecycleTx>>;
    /// Records the provider's checkout id and URL once the provider has answered.
    async fn attach_checkout(
        &self,
        payment_id: PaymentId,
        provider_ref: &str,
        checkout_url: &str,
    ) -> StoreResult<()>;
    async fn payment(&self, id: PaymentId) -> StoreResult<Option<Payment>>;
    /// Every payment of a booking, oldest first.
    async fn payments_of_booking(&self, booking_id: BookingId) -> StoreResult<Vec<Payment>>;
    /// The payment with this provider id: of its checkout, or of the captured payment.
    async fn payment_by_ref(
        &self,
        provider: &payments::Provider,
        provider_ref: &str,
    ) -> StoreResult<Option<Payment>>;

    // --- the box office ([`box_office`]) -------------------------------------------------

    /// The ticket with this serial, with what the door needs to judge it.
    async fn ticket(&self, serial: i64) -> StoreResult<Option<TicketRecord>>;
    /// Opens the transaction a scan at the door runs in
    /// (`usher_app::box_office::check_in`).
    async fn begin_check_in(&self) -> StoreResult<Box<dyn CheckInTx>>;
    /// Valid and checked-in tickets per performance of the event.
    async fn checkin_counts(&self, event_id: EventId) -> StoreResult<Vec<CheckInCount>>;
    /// The user's balances, one per currency they ever had, by currency.
    async fn wallet_balances(&self, user_id: UserId) -> StoreResult<Vec<usher_core::Money>>;
    /// The user's ledger, newest first.
    async fn wallet_entries(
        &self,
        user_id: UserId,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WalletEntry>>;
    /// Adds store credit, with its audit row, in one transaction.
    async fn wallet_credit(&self, credit: WalletCredit) -> StoreResult<WalletEntry>;
    /// The audit log, newest first.
    async fn audit_log(
        &self,
        scope: AuditScope,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<AuditEntry>>;

    // --- jobs (the outbox) ----------------------------------------------------------

    /// Claims up to `limit` due jobs (or running ones whose lease ran out: their worker
    /// died) until `lease_until` under the claim `lease`, counting an attempt for each.
    async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        lease: Uuid,
    ) -> StoreResult<Vec<Job>>;
    /// Marks the job done if `lease` is still its claim; false when another worker has
    /// taken it over (nothing is written then).
    async fn finish_job(&self, id: Uuid, lease: Uuid, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Records a failed attempt if `lease` is still the job's claim; the job runs again
    /// at `run_at`, or is parked as dead when `run_at` is `None`.
    async fn fail_job(
        &self,
        id: Uuid,
        lease: Uuid,
        error: &str,
        run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    async fn jobs(&self, state: JobState, limit: u32) -> StoreResult<Vec<Job>>;
    /// Puts a dead job back in the queue with a fresh count of attempts.
    async fn requeue_job(&self, id: Uuid, now: DateTime<Utc>, audit: &Audit) -> StoreResult<bool>;

    // --- emails ---------------------------------------------------------------------

    /// Whether the email of this kind  went to the booking's buyer.
    async fn email_sent(&self, booking_id: BookingId, kind: EmailKind) -> StoreResult<bool>;
    async fn record_email_sent(
        &self,
        booking_id: BookingId,
        kind: EmailKind,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- idempotency keys -----------------------------------------------------------

    async fn idempotency_start(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyStart>;
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> StoreResult<()>;
    /// Forgets a key whose request will not be stored (429, 5xx), so a retry runs again.
    async fn idempotency_abandon(&self, scope: &str, key: &str) -> StoreResult<()>;
    /// Deletes keys created before `before`. Returns how many.
    async fn idempotency_purge(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // --- the live feed ([`live`]) --------------------------------------------------------

    /// Changes committed by this process, as they commit.
    fn live_bus(&self) -> &LiveBus;
    /// Changes committed by any instance, announced as `(performance id, seq)`; `None`
    /// when the engine has no such channel (SQLite: one instance, the bus is all).
    async fn live_notices(&self) -> StoreResult<Option<LiveNotices>>;
    /// The performance's units and counts at `now`, with the `seq` they are as of.
    async fn live_snapshot(
        &self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSnapshot>>;
    /// Logged changes of a performance after `after`, oldest first, at most `limit`.
    async fn live_changes(
        &self,
        performance_id: PerformanceId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LiveChange>>;
    /// The latest `seq` of each of these performances that has changed at all.
    async fn live_heads(
        &self,
        performance_ids: &[PerformanceId],
    ) -> StoreResult<Vec<(PerformanceId, i64)>>;
    /// Forgets logged changes older than `before` (watchers that far behind take a new
    /// snapshot).
    async fn live_purge(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// A `users` row as both engines read it; turned into a [`User`] by [`UserRow::into_user`].
#[derive(Debug)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: self.id.into(),
            email: Email::from_stored(self.email),
            name: UserName::from_stored(self.name),
            role: Role::parse(&self.role).map_err(corrupt("users.role"))?,
            disabled: self.disabled,
            created_at: self.created_at,
        })
    }
}

/// An `events` row as both engines read it (attributes as JSON text).
#[derive(Debug)]
pub struct EventRow {
    pub id: Uuid,
    pub organizer_id: Uuid,
    pub title: String,
    pub description: String,
    pub venue: String,
    pub attributes: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventRow {
    pub fn into_event(self) -> StoreResult<Event> {
        let attributes = serde_json::from_str(&self.attributes)
            .map_err(|e| StoreError::Backend(format!("corrupt events.attributes: {e}")))?;
        Ok(Event {
            id: self.id.into(),
            organizer_id: self.organizer_id.into(),
            title: EventTitle::from_stored(self.title),
            description: EventText::from_stored(self.description),
            venue: EventText::from_stored(self.venue),
            attributes: EventAttributes::from_stored(attributes),
            status: EventStatus::parse(&self.status).map_err(corrupt("events.status"))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub fn corrupt_value(column: &'static str) -> impl Fn(usher_core::ParseError) -> StoreError {
    corrupt(column)
}

/// A stored value that no longer parses means the database was changed behind our back.
fn corrupt(column: &'static str) -> impl Fn(usher_core::ParseError) -> StoreError {
    move |e| StoreError::Backend(format!("corrupt {column}: {e}"))
}

/// The current time at the precision every engine keeps (microseconds, PostgreSQL's), so
/// a value read back equals the value written.
/// Ids as a statement returned them, typed ([`usher_core::ids`]).
pub fn typed<Id: From<Uuid>>(ids: Vec<Uuid>) -> Vec<Id> {
    ids.into_iter().map(Id::from).collect()
}

/// Typed ids as a statement binds them (an array of UUIDs).
pub fn uuids<Id: Copy + Into<Uuid>>(ids: &[Id]) -> Vec<Uuid> {
    ids.iter().map(|id| (*id).into()).collect()
}

/// Pairs of ids as a statement returned them (performance, unit), typed.
pub fn typed_pairs<A: From<Uuid>, B: From<Uuid>>(
    pairs: impl IntoIterator<Item = (Uuid, Uuid)>,
) -> Vec<(A, B)> {
    pairs
        .into_iter()
        .map(|(a, b)| (A::from(a), B::from(b)))
        .collect()
}

pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Lower-cases a title for search, the same way on every engine (SQLite's `LIKE` folds
/// only ASCII, PostgreSQL's `ILIKE` folds more; we fold in Rust and compare exactly).
pub fn search_key(text: &str) -> String {
    text.to_lowercase()
}

/// A `LIKE` pattern matching `needle` anywhere, with `%`, `_` and `\` escaped (use
/// `ESCAPE '\'`).
pub fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in search_key(needle).chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Builds the page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn page_from_rows(rows: Vec<EventRow>, limit: PageLimit) -> StoreResult<Page<Event>> {
    let rows = rows
        .into_iter()
        .map(EventRow::into_event)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(rows, limit, |e| e.id.uuid()))
}

/// Cuts `limit + 1` items down to a page, with a cursor when there was more.
pub fn paginate<T>(mut items: Vec<T>, limit: PageLimit, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let limit = limit.get() as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|item| Cursor::after(id(item)))
    } else {
        None
    };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_escapes_like_wildcards() {
        assert_eq!(contains_pattern("Jazz"), "%jazz%");
        assert_eq!(contains_pattern("100%_\\"), "%100\\%\\_\\\\%");
    }
}
