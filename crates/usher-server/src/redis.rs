//! The link to Redis (`REDIS_URL`), shared by the rate limits and the live feed's
//! fan-out across instances.
//!
//! Redis is never on the path to correctness: bookings only ever depend on the
//! database. So the link degrades instead of failing requests: every command has a
//! short deadline; a failure marks the link down (logged once, counted, and
//! `usher_redis_up` drops to 0), callers fall back (in-process rate limits; the log and
//! PostgreSQL notifications for the feed), and the link tries again at most once a
//! second until Redis answers, then says it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use usher_store::LiveChange;

/// The pub/sub channel of the live feed.
const CHANGES_CHANNEL: &str = "usher:live";
/// A command slower than this counts as a failure.
pub const COMMAND_DEADLINE: Duration = Duration::from_millis(250);
/// How long after a failure the link tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    next_try: Mutex<Instant>,
}

impl Redis {
    /// Opens the link; an unreachable Redis is not an error (the link starts down).
    pub fn open(url: &str) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("REDIS_URL is not usable: {e}"))?;
        metrics::gauge!("usher_redis_up").set(0.0);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                connection: RwLock::new(None),
                up: AtomicBool::new(false),
                next_try: Mutex::new(Instant::now()),
            }),
        })
    }

    /// Whether the last command succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// A connection, or `None` while the link is down and not due for another try.
    pub async fn connection(&self) -> Option<MultiplexedConnection> {
        if let Some(connection) = self.inner.connection.read().ok()?.as_ref() {
            return Some(connection.clone());
        }
        {
            let mut next_try = self.inner.next_try.lock().ok()?;
            if Instant::now() < *next_try {
                return None;
            }
            *next_try = Instant::now() + RETRY_AFTER;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_DEADLINE))
            .set_response_timeout(Some(COMMAND_DEADLINE));
        match self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(connection) => {
                if let Ok(mut slot) = self.inner.connection.write() {
                    *slot = Some(connection.clone());
                }
                self.mark_up();
                Some(connection)
            }
            Err(error) => {
                self.mark_down(&error.to_string());
                None
            }
        }
    }

    fn mark_up(&self) {
        if !self.inner.up.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis is reachable; shared rate limits and fan-out through it");
            metrics::gauge!("usher_redis_up").set(1.0);
        }
    }

    /// Called by users of a connection when a command failed or ran out of time.
    pub fn mark_down(&self, error: &str) {
        if let Ok(mut slot) = self.inner.connection.write() {
            *slot = None;
        }
        if let Ok(mut next_try) = self.inner.next_try.lock() {
            *next_try = Instant::now() + RETRY_AFTER;
        }
        metrics::counter!("usher_redis_failures_total").increment(1);
        if self.inner.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                error,
                "Redis failed; falling back to in-process until it is back"
            );
            metrics::gauge!("usher_redis_up").set(0.0);
        }
    }

    /// Publishes a committed change for other instances, without waiting for it.
    pub fn publish_change(&self, change: &LiveChange) {
        let Ok(body) = serde_json::to_string(change) else {
            return;
        };
        let redis = self.clone();
        tokio::spawn(async move {
            let Some(mut connection) = redis.connection().await else {
                return;
            };
            let published = tokio::time::timeout(
                COMMAND_DEADLINE,
                redis::cmd("PUBLISH")
                    .arg(CHANGES_CHANNEL)
                    .arg(body)
                    .query_async::<i64>(&mut connection),
            )
            .await;
            match published {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => redis.mark_down(&error.to_string()),
                Err(_) => redis.mark_down("PUBLISH timed out"),
            }
        });
    }

    /// Hands every change other instances publish to `deliver`, resubscribing after any
    /// failure, until `stop`.
    pub async fn follow_changes(
        &self,
        mut stop: watch::Receiver<bool>,
        deliver: impl Fn(LiveChange) + Send + 'static,
    ) {
        loop {
            let subscribed = async {
                let mut pubsub = self.inner.client.get_async_pubsub().await?;
                pubsub.subscribe(CHANGES_CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                subscribed = tokio::time::timeout(COMMAND_DEADLINE * 4, subscribed) => subscribed,
                _ = stop.changed() => return,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    tracing::info!("following other instances' changes through Redis");
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => {
                                    let Ok(body) = message.get_payload::<String>() else { continue };
                                    match serde_json::from_str::<LiveChange>(&body) {
                                        Ok(change) => deliver(change),
                                        Err(error) => tracing::warn!(%error, "an unreadable live change on Redis"),
                                    }
                                }
                                None => break,
                            },
                            changed = stop.changed() => {
                                if changed.is_err() || *stop.borrow() {
                                    return;
                                }
                            }
                        }
                    }
                    self.mark_down("the Redis subscription ended");
                }
                Ok(Err(error)) => self.mark_down(&error.to_string()),
                Err(_) => self.mark_down("subscribing on Redis timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_AFTER) => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
