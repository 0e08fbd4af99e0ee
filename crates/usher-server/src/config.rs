//! The server's configuration, as the binary hands it over (flags and environment are
//! the binary's business; tests build this directly).

use std::time::Duration;

use secrecy::SecretString;

use usher_core::{Email, HoldTtl};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Signing key for access tokens; when `None`, one is generated on first start and
    /// kept in the database so that restarts and other instances share it.
    pub jwt_secret: Option<SecretString>,
    /// This account is admin; when `None`, the first account created is.
    pub admin_email: Option<Email>,
    /// Origins allowed to call the API from a browser (CORS). Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// A request still running after this answers 503.
    pub request_timeout: Duration,
    /// Hold time of performances created without one.
    pub default_hold_ttl: HoldTtl,
    /// How often this instance sweeps expired holds (`None`: never, for tests that
    /// sweep by hand).
    pub sweep_interval: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            admin_email: None,
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            default_hold_ttl: HoldTtl::default(),
            sweep_interval: Some(Duration::from_secs(5)),
        }
    }
}
