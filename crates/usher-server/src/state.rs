//! What every handler can reach: the store, the token keys and the configuration.

use std::sync::Arc;

use usher_core::Clock;
use usher_store::Store;

use crate::auth::TokenKeys;
use crate::config::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    tokens: TokenKeys,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenKeys,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                tokens,
                config,
                clock,
            }),
        }
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

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}
