//! The live feed's log on PostgreSQL (see [`usher_store::live`]): numbered and logged
//! in each changing transaction, announced with `pg_notify` when it commits, and
//! followed by every instance through one `LISTEN` connection.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use usher_store::live::{
    LiveNotices, LiveSnapshot, NOTIFY_CHANNEL, NoticeSource, forward_accounts, forward_live,
};
use usher_store::{AccountNotice, ChangeSet, LiveChange, StoreResult};

use crate::{PostgresStore, backend};

/// Notices waiting for the hub; when it falls behind, notices are dropped and the hub's
/// regular look at the heads catches up.
const NOTICE_QUEUE: usize = 4096;

/// Numbers, logs and announces the changes, one per performance in id order (the order
/// every transaction takes the heads' row locks in), in the caller's transaction: one
/// statement per performance.
pub(crate) async fn record(
    conn: &mut PgConnection,
    changes: ChangeSet,
    now: DateTime<Utc>,
) -> StoreResult<Vec<LiveChange>> {
    let mut logged = Vec::new();
    for (performance_id, moves) in changes.into_performances() {
        let body = LiveChange::log_body(&moves)?;
        let seq = sqlx::query_scalar!(
            r#"WITH head AS (
                   INSERT INTO live_heads (performance_id, seq) VALUES ($1, 1)
                   ON CONFLICT (performance_id) DO UPDATE SET seq = live_heads.seq + 1
                   RETURNING seq
               ), logged AS (
                   INSERT INTO live_changes (performance_id, seq, body, at)
                   SELECT $1, seq, $2, $3 FROM head
               )
               SELECT seq AS "seq!" FROM head, pg_notify($4, $1::text || ' ' || head.seq)"#,
            performance_id.uuid(),
            body,
            now,
            NOTIFY_CHANNEL
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        logged.push(LiveChange {
            performance_id,
            seq,
            changes: moves,
        });
    }
    Ok(logged)
}

impl PostgresStore {
    /// Follows the notices on a connection of its own, reconnecting when it drops (the
    /// hub's look at the heads covers what was missed meanwhile).
    pub(crate) async fn listen(&self) -> StoreResult<LiveNotices> {
        let source = Listening::on(&self.pool, NOTIFY_CHANNEL).await?;
        let (send, receive) = tokio::sync::mpsc::channel(NOTICE_QUEUE);
        tokio::spawn(forward_live(source, send));
        Ok(receive)
    }

    /// Follows account notices ([`AccountNotice`]) from every instance on a connection
    /// of its own ([`forward_accounts`]: a drop makes the receiver forget everything).
    pub(crate) async fn listen_accounts(
        &self,
    ) -> StoreResult<tokio::sync::mpsc::Receiver<AccountNotice>> {
        let source = Listening::on(&self.pool, AccountNotice::CHANNEL).await?;
        let (send, receive) = tokio::sync::mpsc::channel(NOTICE_QUEUE);
        tokio::spawn(forward_accounts(source, send));
        Ok(receive)
    }

    pub(crate) async fn do_live_snapshot(
        &self,
        performance_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSnapshot>> {
        // One snapshot for the units and the seq.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(kind) = sqlx::query_scalar!(
            "SELECT kind FROM performances WHERE id = $1",
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        else {
            return Ok(None);
        };
        let seq = sqlx::query_scalar!(
            "SELECT seq FROM live_heads WHERE performance_id = $1",
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .unwrap_or(0);
        let rows = sqlx::query!(
            "SELECT id, group_id, state, held_until FROM units WHERE performance_id = $1
             ORDER BY group_position, row_position, seat_position",
            performance_id
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let rows = rows
            .into_iter()
            .map(|r| (r.id, r.group_id, r.state, r.held_until));
        LiveSnapshot::assemble(performance_id.into(), &kind, seq, rows, now).map(Some)
    }

    pub(crate) async fn do_live_changes(
        &self,
        performance_id: Uuid,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LiveChange>> {
        sqlx::query!(
            "SELECT seq, body FROM live_changes WHERE performance_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
            performance_id,
            after,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| LiveChange::from_log(performance_id.into(), row.seq, &row.body))
        .collect()
    }

    pub(crate) async fn do_live_heads(&self, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
        let rows = sqlx::query!(
            "SELECT performance_id, seq FROM live_heads WHERE performance_id = ANY($1)",
            ids
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.performance_id, r.seq))
            .collect())
    }

    pub(crate) async fn do_live_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query!("DELETE FROM live_changes WHERE at < $1", before)
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}

/// A `LISTEN` connection of its own; sqlx reconnects it on the next call after a drop.
struct Listening(PgListener);

impl Listening {
    async fn on(pool: &sqlx::PgPool, channel: &str) -> StoreResult<Self> {
        let mut listener = PgListener::connect_with(pool).await.map_err(backend)?;
        listener.listen(channel).await.map_err(backend)?;
        Ok(Self(listener))
    }
}

#[async_trait::async_trait]
impl NoticeSource for Listening {
    async fn next(&mut self) -> Result<Option<String>, String> {
        let received = self.0.try_recv().await.map_err(|e| e.to_string())?;
        Ok(received.map(|notification| notification.payload().to_owned()))
    }
}
