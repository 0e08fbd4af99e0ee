//! What every handler can reach: the store, the token keys and the configuration.

use crate::reads::Reads;
use std::sync::Arc;

use usher_app::Holds;
use usher_core::Clock;
use usher_mail::Mailer;
use usher_payments::PaymentProvider;
use usher_store::Store;

use crate::access::Access;
use crate::auth::{PasswordPool, TokenKeys};
use crate::config::ServerConfig;
use crate::extract::Caller;
use crate::live::LiveHub;
use crate::performance_cache::PerformanceCache;
use crate::problem::ApiError;
use crate::rate_limit::RateLimits;
use crate::redis::Redis;
use crate::sealed::Sealer;
use crate::seat_maps::SeatMaps;
use crate::waiting::WaitingRoom;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    reads: Reads,
    holds: Holds,
    tokens: TokenKeys,
    access: Access,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    payments: Arc<dyn PaymentProvider>,
    mailer: Arc<dyn Mailer>,
    public_url: String,
    /// Key from which ticket codes are derived.
    ticket_secret: Vec<u8>,
    /// Encrypts the answers kept for idempotency keys.
    sealer: Sealer,
    passwords: PasswordPool,
    performances: PerformanceCache,
    seat_maps: SeatMaps,
    live: LiveHub,
    rate_limits: Arc<RateLimits>,
    redis: Option<Redis>,
    waiting_room: WaitingRoom,
}

/// Everything the handlers use besides the configuration.
pub struct Services {
    pub store: Arc<dyn Store>,
    /// Where public reads go (the primary, or a streaming replica while it keeps up).
    pub reads: Reads,
    pub tokens: TokenKeys,
    pub clock: Arc<dyn Clock>,
    pub payments: Arc<dyn PaymentProvider>,
    pub mailer: Arc<dyn Mailer>,
    pub public_url: String,
    pub ticket_secret: Vec<u8>,
    pub sealer: Sealer,
    pub redis: Option<Redis>,
}

impl AppState {
    pub fn new(services: Services, config: ServerConfig) -> Self {
        let passwords = PasswordPool::new(config.password_workers, config.password_queue);
        let live = LiveHub::new(
            services.store.clone(),
            services.clock.clone(),
            config.live_backlog,
        );
        let rate_limits = Arc::new(RateLimits::new(
            services.clock.clone(),
            services.redis.clone(),
        ));
        let waiting_room = WaitingRoom::start(services.store.clone());
        let holds = Holds::start(services.store.clone(), config.group_commit);
        Self {
            inner: Arc::new(Inner {
                store: services.store,
                reads: services.reads,
                holds,
                tokens: services.tokens,
                access: Access::default(),
                config,
                clock: services.clock,
                payments: services.payments,
                mailer: services.mailer,
                public_url: services.public_url,
                ticket_secret: services.ticket_secret,
                sealer: services.sealer,
                passwords,
                performances: PerformanceCache::default(),
                seat_maps: SeatMaps::default(),
                live,
                rate_limits,
                redis: services.redis,
                waiting_room,
            }),
        }
    }

    /// A booking's payment state changes (the lifecycle use case).
    pub async fn transition(
        &self,
        request: usher_store::TransitionRequest,
    ) -> usher_store::StoreResult<usher_store::Transitioned> {
        usher_app::payments::transition(self.store(), request).await
    }

    /// Where public reads go: see [`Reads`].
    pub fn reads(&self) -> &Reads {
        &self.inner.reads
    }

    /// The hold use case, with its write pipeline.
    pub fn holds(&self) -> &Holds {
        &self.inner.holds
    }

    /// Queue joins in batches and the queues' latest states ([`crate::waiting`]).
    pub fn waiting_room(&self) -> &WaitingRoom {
        &self.inner.waiting_room
    }

    pub fn payments(&self) -> &dyn PaymentProvider {
        self.inner.payments.as_ref()
    }

    pub fn mailer(&self) -> &dyn Mailer {
        self.inner.mailer.as_ref()
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Performances and events as the hold path reads them, kept for a second.
    pub fn performances(&self) -> &PerformanceCache {
        &self.inner.performances
    }

    /// Seat maps as served, built at most once per max age.
    pub fn seat_maps(&self) -> &SeatMaps {
        &self.inner.seat_maps
    }

    /// Live seat maps: the change feed, per watched performance.
    pub fn live(&self) -> &LiveHub {
        &self.inner.live
    }

    pub fn rate_limits(&self) -> &RateLimits {
        &self.inner.rate_limits
    }

    pub fn rate_limits_arc(&self) -> Arc<RateLimits> {
        self.inner.rate_limits.clone()
    }

    /// The Redis link, when `REDIS_URL` is set.
    pub fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    /// Where passwords are hashed and checked, a few at a time.
    pub fn passwords(&self) -> &PasswordPool {
        &self.inner.passwords
    }

    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    pub fn ticket_secret(&self) -> &[u8] {
        &self.inner.ticket_secret
    }

    pub fn store_arc(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    pub fn clock_arc(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.inner.tokens
    }

    /// Who these claims' account and session admit, as the database says now.
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// The caller an access token stands for now: its signature and expiry, then its
    /// account and session as they are ([`crate::access`]).
    pub async fn authorize(&self, token: &str) -> Result<Caller, ApiError> {
        let claims = self.tokens().verify_access(token)?;
        self.access().authorize(self.store(), claims).await
    }

    /// After a commit that changed what authorizes requests: forget it here at once, and
    /// tell the other instances. A failed announcement is logged, not an error: the change
    /// is committed, and other instances forget within [`crate::access::REMEMBERED_FOR`].
    pub async fn account_changed(&self, notice: usher_store::AccountNotice) {
        self.access().forget(notice);
        if let Err(error) = self.store().announce_account(notice).await {
            tracing::warn!(%error, ?notice, "could not tell other instances of an account change");
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}
