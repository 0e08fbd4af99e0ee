//! The live feed's log on SQLite (see [`usher_store::live`]).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use usher_core::ids::PerformanceId;
use uuid::Uuid;

use usher_store::live::LiveSnapshot;
use usher_store::{ChangeSet, LiveChange, StoreResult};

use crate::{SqliteStore, backend};

/// Numbers and logs the changes, one per performance, in the caller's transaction.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    changes: ChangeSet,
    now: DateTime<Utc>,
) -> StoreResult<Vec<LiveChange>> {
    let mut logged = Vec::new();
    for (performance_id, moves) in changes.into_performances() {
        let body = LiveChange::log_body(&moves)?;
        let seq = sqlx::query_scalar!(
            r#"INSERT INTO live_heads (performance_id, seq) VALUES (?1, 1)
               ON CONFLICT (performance_id) DO UPDATE SET seq = seq + 1
               RETURNING seq AS "seq!: i64""#,
            performance_id
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        sqlx::query!(
            "INSERT INTO live_changes (performance_id, seq, body, at) VALUES (?1, ?2, ?3, ?4)",
            performance_id,
            seq,
            body,
            now
        )
        .execute(&mut *conn)
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

impl SqliteStore {
    pub(crate) async fn do_live_snapshot(
        &self,
        performance_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<LiveSnapshot>> {
        // One read transaction: the units and the seq come from one WAL snapshot.
        let mut tx = self.readers.begin().await.map_err(backend)?;
        let Some(kind) = sqlx::query_scalar!(
            "SELECT kind FROM performances WHERE id = ?1",
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        else {
            return Ok(None);
        };
        let seq = sqlx::query_scalar!(
            r#"SELECT seq AS "seq!: i64" FROM live_heads WHERE performance_id = ?1"#,
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .unwrap_or(0);
        let rows = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", group_id AS "group_id!: Uuid", state,
                      held_until AS "held_until?: DateTime<Utc>"
               FROM units WHERE performance_id = ?1
               ORDER BY group_position, row_position, seat_position"#,
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
        let limit = i64::from(limit);
        sqlx::query!(
            r#"SELECT seq AS "seq!: i64", body FROM live_changes
               WHERE performance_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"#,
            performance_id,
            after,
            limit
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| LiveChange::from_log(performance_id.into(), row.seq, &row.body))
        .collect()
    }

    pub(crate) async fn do_live_heads(
        &self,
        ids: &[PerformanceId],
    ) -> StoreResult<Vec<(Uuid, i64)>> {
        let list = crate::inventory::id_list(ids);
        let rows = sqlx::query!(
            r#"SELECT performance_id AS "performance_id!: Uuid", seq AS "seq!: i64"
               FROM live_heads WHERE performance_id IN (SELECT unhex(value) FROM json_each(?1))"#,
            list
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.performance_id, r.seq))
            .collect())
    }

    pub(crate) async fn do_live_purge(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query!("DELETE FROM live_changes WHERE at < ?1", before)
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
