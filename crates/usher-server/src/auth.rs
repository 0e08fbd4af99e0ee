//! Credentials: argon2id password hashes, JWT access tokens and opaque refresh tokens.
//!
//! Access tokens are short-lived JWTs (HS256) naming the user and the session (the
//! refresh-token family) they were issued for — never the role: what a caller may do
//! is read from the account as it is now ([`crate::access`]), so a demotion, a disabled
//! account or a logout takes effect on the next request. Refresh tokens are 256 random
//! bits shown to the client once; the store keeps only their SHA-256, so a leaked
//! database does not leak sessions.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Block, Params, PasswordHash, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use usher_core::Password;

use crate::problem::ApiError;

/// How long an access token lives. Short, though a logout or a revoked session ends it
/// at once anyway.
pub const ACCESS_TOKEN_TTL: Duration = Duration::minutes(15);
/// How long a refresh token lives if never used.
pub const REFRESH_TOKEN_TTL: Duration = Duration::days(30);
const ISSUER: &str = "usher";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    /// The session: the refresh-token family this token was issued with.
    sid: Uuid,
    iss: String,
    iat: i64,
    exp: i64,
}

/// What a well-signed, unexpired access token says: who, in which session. Not yet
/// whether that account and session still stand ([`crate::access::Access`] says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessClaims {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// Signs and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iss: ISSUER.into(),
            iat: now.timestamp(),
            exp: (now + ACCESS_TOKEN_TTL).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("sign access token: {e}")))
    }

    /// The token's signature, issuer and expiry; a token from before sessions were named
    /// (no `sid`) is refused like any other bad token, and the client refreshes.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("the access token has expired; refresh it")
                }
                _ => ApiError::Unauthorized("the access token is not valid"),
            })?;
        Ok(AccessClaims {
            user_id: data.claims.sub,
            session_id: data.claims.sid,
        })
    }
}

/// What an admission from a waiting room says: this user may hold at this performance
/// until `exp`.
#[derive(Debug, Serialize, Deserialize)]
struct AdmissionClaims {
    sub: Uuid,
    performance_id: Uuid,
    ticket_id: Uuid,
    iss: String,
    aud: String,
    exp: i64,
}

/// The audience of admission tokens: never mistaken for an access token (which has
/// none, and a role) or the other way round.
const ADMISSION_AUDIENCE: &str = "usher-admission";

impl TokenKeys {
    pub fn issue_admission(
        &self,
        user_id: Uuid,
        performance_id: Uuid,
        ticket_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let claims = AdmissionClaims {
            sub: user_id,
            performance_id,
            ticket_id,
            iss: ISSUER.into(),
            aud: ADMISSION_AUDIENCE.into(),
            exp: expires_at.timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("sign admission: {e}")))
    }

    /// Whether `token` admits `user_id` to hold at `performance_id` at `now`; why not if
    /// not. Its expiry is judged by the service's clock, the one that admitted it.
    pub fn verify_admission(
        &self,
        token: &str,
        user_id: Uuid,
        performance_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        let mut validation = self.validation.clone();
        validation.set_audience(&[ADMISSION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<AdmissionClaims>(token, &self.decoding, &validation)
            .map_err(|_| "this admission is not valid")?;
        if data.claims.sub != user_id || data.claims.performance_id != performance_id {
            return Err("this admission is for someone else or another performance");
        }
        if data.claims.exp <= now.timestamp() {
            return Err("this admission has expired");
        }
        Ok(())
    }
}

/// A fresh refresh token: what the client gets, and what the store keeps.
pub struct RefreshToken {
    pub token: String,
    pub hash: Vec<u8>,
}

impl RefreshToken {
    pub fn generate() -> Result<Self, ApiError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("random source failed: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_refresh_token(&token);
        Ok(Self { token, hash })
    }
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A random secret for signing tokens when none is configured.
pub fn generate_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Runs password hashing (argon2id: tens of milliseconds and 19 MiB each, on purpose)
/// on a fixed set of threads, one per core, with a bounded queue in front of them. A
/// login rush beyond what the cores can hash is told to come back (503 with
/// `Retry-After`) instead of piling up hashes in memory: 64 concurrent hashes on
/// throwaway threads took a server to 7.9 GB. Fixed threads also keep the allocator's
/// per-thread memory to one hash's worth per core, reused hash after hash.
pub struct PasswordPool {
    queue: std::sync::mpsc::SyncSender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

impl PasswordPool {
    /// `workers` hashes at once (the cores), `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let (send, receive) = std::sync::mpsc::sync_channel::<HashJob>(queue);
        let receive = Arc::new(std::sync::Mutex::new(receive));
        for i in 0..workers.max(1) {
            let receive = receive.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("usher-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking the next job.
                        let job = match receive.lock() {
                            Ok(receive) => receive.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            // The pool was dropped: the thread ends.
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a password hashing thread");
            }
        }
        Self { queue: send }
    }

    /// Hashes a password for storage.
    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        self.run(move || hash_with_reused_memory(password.expose().as_bytes()))
            .await?
    }

    /// Checks a password against a stored hash. With no hash (unknown email) it checks
    /// against a dummy one, so both failures take the same time and look the same.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        self.run(move || {
            let known = stored.is_some();
            let hash = match stored {
                Some(hash) => hash,
                None => dummy_hash().to_owned(),
            };
            let matches = verify_with_reused_memory(password.as_bytes(), &hash)?;
            Ok(known && matches)
        })
        .await?
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let _ = reply.send(work());
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                metrics::counter!("usher_password_hashes_refused_total").increment(1);
                return Err(ApiError::Busy {
                    retry_after_seconds: 1,
                    what: "sign-ins",
                });
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(ApiError::Internal(
                    "password hashing threads are gone".into(),
                ));
            }
        }
        answer
            .await
            .map_err(|_| ApiError::Internal("a password hash was dropped".into()))
    }
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_with_reused_memory(b"usher-timing-equaliser").unwrap_or_default())
}

thread_local! {
    /// Argon2's working memory (19 MiB at the default cost), kept by each hashing
    /// thread and reused hash after hash: no allocation per login, so memory stays flat
    /// and no time goes to mapping and zeroing fresh pages.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_blocks<T>(count: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() != count {
            blocks.clear();
            blocks.resize(count, Block::default());
        }
        work(&mut blocks[..])
    })
}

/// An argon2id PHC string for `password`, with a fresh random salt and the default cost.
fn hash_with_reused_memory(password: &[u8]) -> Result<String, ApiError> {
    let argon2 = Argon2::default();
    let params = argon2.params().clone();
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    let mut out = [0u8; 32];
    with_blocks(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, &salt, &mut out, blocks)
    })
    .map_err(|e| ApiError::Internal(format!("hash password: {e}")))?;
    let phc =
        |e: argon2::password_hash::phc::Error| ApiError::Internal(format!("hash format: {e}"));
    let hash = PasswordHash {
        algorithm: Argon2Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|e| ApiError::Internal(format!("hash params: {e}")))?,
        salt: Some(Salt::new(&salt).map_err(phc)?),
        hash: Some(Output::new(&out).map_err(phc)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches a stored PHC string, comparing in constant time.
fn verify_with_reused_memory(password: &[u8], stored: &str) -> Result<bool, ApiError> {
    let unreadable = |why: String| ApiError::Internal(format!("stored hash unreadable: {why}"));
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(e.to_string()))?;
    let algorithm = Argon2Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|e| unreadable(e.to_string()))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| unreadable(e.to_string()))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| unreadable(e.to_string()))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(unreadable("no salt or hash".into()));
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    with_blocks(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(password, salt, &mut out, blocks)
    })
    .map_err(|e| unreadable(e.to_string()))?;
    // `Output`'s equality is constant-time.
    let computed = Output::new(&out).map_err(|e| unreadable(e.to_string()))?;
    Ok(&computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret.to_owned()))
    }

    #[test]
    fn access_token_round_trips() {
        let keys = keys("a-test-secret-of-enough-length-0123456789");
        let (id, session) = (Uuid::now_v7(), Uuid::now_v7());
        let token = keys.issue_access(id, session, Utc::now()).unwrap();
        let claims = keys.verify_access(&token).unwrap();
        assert_eq!((claims.user_id, claims.session_id), (id, session));
    }

    #[test]
    fn token_signed_with_another_key_or_expired_is_refused() {
        let ours = keys("a-test-secret-of-enough-length-0123456789");
        let theirs = keys("another-secret-of-enough-length-987654321");
        let (id, session) = (Uuid::now_v7(), Uuid::now_v7());
        let forged = theirs.issue_access(id, session, Utc::now()).unwrap();
        assert!(ours.verify_access(&forged).is_err());
        let old = ours
            .issue_access(id, session, Utc::now() - Duration::hours(1))
            .unwrap();
        assert!(ours.verify_access(&old).is_err());
        assert!(ours.verify_access("not.a.jwt").is_err());
    }

    #[test]
    fn a_token_that_names_no_session_is_refused() {
        // What tokens looked like before sessions were named: a role, no `sid`.
        #[derive(Serialize)]
        struct Old {
            sub: Uuid,
            role: &'static str,
            iss: &'static str,
            exp: i64,
        }
        let secret = "a-test-secret-of-enough-length-0123456789";
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Old {
                sub: Uuid::now_v7(),
                role: "admin",
                iss: ISSUER,
                exp: (Utc::now() + Duration::minutes(5)).timestamp(),
            },
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert!(keys(secret).verify_access(&old).is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = RefreshToken::generate().unwrap();
        let b = RefreshToken::generate().unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, hash_refresh_token(&a.token));
        assert_eq!(a.hash.len(), 32);
    }

    #[tokio::test]
    async fn password_verifies_only_with_the_right_password() {
        let pool = PasswordPool::new(1, 1);
        let hash = pool
            .hash(Password::parse("correct horse battery").unwrap())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            pool.verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !pool
                .verify("wrong horse battery".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !pool
                .verify("usher-timing-equaliser".into(), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_format_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Stored by an earlier release (argon2's own hashing), checked by ours …
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        assert!(verify_with_reused_memory(b"correct horse battery", &theirs).unwrap());
        assert!(!verify_with_reused_memory(b"wrong horse battery", &theirs).unwrap());
        // … and ours checked by argon2's own verifier.
        let ours = hash_with_reused_memory(b"correct horse battery").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert_ne!(
            ours,
            hash_with_reused_memory(b"correct horse battery").unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_queue_hashing_answers_busy() {
        // One hash at a time and one waiting: of eight at once, at least six are told
        // to come back, and none waits without bound.
        let pool = Arc::new(PasswordPool::new(1, 1));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.verify("whatever password".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(false) => {}
                Err(ApiError::Busy {
                    retry_after_seconds,
                    ..
                }) => {
                    assert_eq!(retry_after_seconds, 1);
                    busy += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(busy >= 6, "{busy} refused");
    }
}
