//! The write pipeline: group commit for holds.
//!
//! One durable transaction per hold caps a rush at the disk's fsync rate, whatever the
//! language. Here holds are queued to a writer task (one per shard of performances);
//! the writer takes what is waiting — up to [`MAX_BATCH`] — and runs it as one
//! transaction in arrival order, each hold all-or-nothing on its own (a savepoint per
//! hold, so one loser never fails the rest), commits once, and only then answers each
//! caller. A lone hold commits at once, with no added wait; batches form by themselves
//! while the previous commit is in flight. The conditional writes inside stay the
//! arbiter, so several instances (each with its own pipeline) remain correct.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use usher_core::ids::PerformanceId;

use usher_core::hold::HoldCommand;
use usher_store::{CommandOutcome, StoreError, StoreResult};

/// The most holds one transaction takes.
pub const MAX_BATCH: usize = 128;
/// Holds waiting per shard before callers wait to enqueue (backpressure, not loss).
const QUEUE: usize = 4096;

/// How an engine runs holds, batched and alone.
#[async_trait]
pub trait HoldWriter: Send + Sync + 'static {
    /// Runs these holds in one transaction, in order, each all-or-nothing on its own.
    /// `Some(outcome)` for each hold the batch decided (answered after the commit);
    /// `None` for one it could not (it is then run alone). An `Err` means nothing was
    /// committed.
    async fn hold_batch(&self, holds: &[HoldCommand]) -> StoreResult<Vec<Option<CommandOutcome>>>;
    /// One hold in a transaction of its own.
    async fn hold_alone(&self, hold: &HoldCommand) -> StoreResult<CommandOutcome>;
}

struct Pending {
    hold: HoldCommand,
    reply: oneshot::Sender<StoreResult<CommandOutcome>>,
}

/// Queues holds to writer tasks; see the module documentation.
pub struct WritePipeline {
    shards: Vec<mpsc::Sender<Pending>>,
}

impl WritePipeline {
    /// Starts `shards` writer tasks on the current Tokio runtime. A performance always
    /// goes to the same shard, so its holds are decided in arrival order.
    pub fn start(writer: Arc<dyn HoldWriter>, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (send, receive) = mpsc::channel(QUEUE);
                tokio::spawn(run_writer(writer.clone(), receive));
                send
            })
            .collect();
        Self { shards }
    }

    pub async fn hold(&self, hold: HoldCommand) -> StoreResult<CommandOutcome> {
        let shard = &self.shards[shard_of(hold.performance_id, self.shards.len())];
        let (reply, answer) = oneshot::channel();
        shard
            .send(Pending { hold, reply })
            .await
            .map_err(|_| StoreError::Backend("the write pipeline has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the write pipeline dropped a hold".into()))?
    }
}

fn shard_of(performance_id: PerformanceId, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // Within one process the same id always hashes the same; that is all a shard needs.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    performance_id.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

async fn run_writer(writer: Arc<dyn HoldWriter>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A batch runs in a task of its own, so that a panic in an engine fails that
        // batch's holds (their callers hear an error) and never the shard: a writer
        // that died would refuse every later hold of its performances.
        let run = tokio::spawn(run_batch(writer.clone(), batch));
        match run.await {
            Ok(Some(why)) => {
                // The holds that queued meanwhile would each wait for the same dead
                // database in turn: they hear the same answer now.
                while let Ok(queued) = queue.try_recv() {
                    let _ = queued.reply.send(Err(StoreError::Unavailable(why.clone())));
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "a hold batch panicked; its holds failed, the writer goes on");
            }
        }
    }
}

/// Runs one batch and answers its callers; `Some(why)` when the database was unavailable.
async fn run_batch(writer: Arc<dyn HoldWriter>, batch: Vec<Pending>) -> Option<String> {
    metrics::histogram!("usher_hold_batch_size").record(batch.len() as f64);
    let holds: Vec<HoldCommand> = batch.iter().map(|p| p.hold.clone()).collect();
    let outcomes = match writer.hold_batch(&holds).await {
        Ok(outcomes) if outcomes.len() == batch.len() => outcomes,
        Ok(_) => {
            let error = "a hold batch answered the wrong number of outcomes";
            for pending in batch {
                let _ = pending.reply.send(Err(StoreError::Backend(error.into())));
            }
            return None;
        }
        Err(error) => {
            tracing::error!(%error, holds = batch.len(), "a hold batch failed; nothing was committed");
            for pending in batch {
                // An unavailable database stays that (503, retry), whatever else went
                // wrong is a backend failure.
                let _ = pending.reply.send(Err(match &error {
                    StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
                    other => StoreError::Backend(other.to_string()),
                }));
            }
            return match error {
                StoreError::Unavailable(why) => Some(why),
                _ => None,
            };
        }
    };
    let mut alone = Vec::new();
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        match outcome {
            // A caller that went away just does not hear the answer; its hold stands
            // (or expires) like any other.
            Some(outcome) => drop(pending.reply.send(Ok(outcome))),
            None => alone.push(pending),
        }
    }
    for pending in alone {
        let outcome = writer.hold_alone(&pending.hold).await;
        let _ = pending.reply.send(outcome);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use chrono::Utc;

    use usher_core::hold::Selection;
    use usher_core::{BookingId, UnitId, UserId};

    /// A stand-in engine that records its batches and takes 20 ms per commit.
    #[derive(Default)]
    struct SlowDisk {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl HoldWriter for SlowDisk {
        async fn hold_batch(
            &self,
            holds: &[HoldCommand],
        ) -> StoreResult<Vec<Option<CommandOutcome>>> {
            self.batches.lock().unwrap().push(holds.len());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            // Every other hold "loses" and one is left for running alone.
            Ok(holds
                .iter()
                .enumerate()
                .map(|(i, h)| match i % 3 {
                    0 => Some(CommandOutcome::UnknownUnits {
                        unit_ids: vec![UnitId::from_uuid(h.booking_id.uuid())],
                    }),
                    1 => Some(CommandOutcome::Unavailable { unit_ids: vec![] }),
                    _ => None,
                })
                .collect())
        }

        async fn hold_alone(&self, hold: &HoldCommand) -> StoreResult<CommandOutcome> {
            Ok(CommandOutcome::UnknownUnits {
                unit_ids: vec![UnitId::from_uuid(hold.booking_id.uuid()); 2],
            })
        }
    }

    fn hold(performance_id: PerformanceId) -> HoldCommand {
        let now = Utc::now();
        HoldCommand {
            booking_id: BookingId::generate(),
            user_id: UserId::generate(),
            performance_id,
            selection: Selection::BestAvailable { quantity: 1 },
            now,
            held_until: now,
            offer: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_hold_commits_at_once_and_a_crowd_is_batched() {
        let disk = Arc::new(SlowDisk::default());
        let pipeline = Arc::new(WritePipeline::start(disk.clone(), 1));
        let performance = PerformanceId::generate();
        pipeline.hold(hold(performance)).await.unwrap();
        assert_eq!(
            *disk.batches.lock().unwrap(),
            [1],
            "nobody waits for company"
        );
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let pipeline = pipeline.clone();
                let hold = hold(performance);
                let id = hold.booking_id;
                tokio::spawn(async move { (id, pipeline.hold(hold).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            // Each caller gets its own answer, whether the batch or a lone run decided it.
            let (id, outcome) = task.await.unwrap();
            match outcome {
                CommandOutcome::UnknownUnits { unit_ids } => {
                    assert_eq!(unit_ids[0].uuid(), id.uuid())
                }
                CommandOutcome::Unavailable { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        let batches = disk.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 61);
        assert!(
            batches.iter().any(|&size| size > 1),
            "holds that wait for a commit form a batch: {batches:?}"
        );
    }

    /// An engine whose database is gone: each batch waits a while for it, then fails;
    /// a hold for the `poison` performance panics instead.
    struct DeadDatabase {
        batches: Mutex<usize>,
        poison: PerformanceId,
    }

    #[async_trait]
    impl HoldWriter for DeadDatabase {
        async fn hold_batch(
            &self,
            holds: &[HoldCommand],
        ) -> StoreResult<Vec<Option<CommandOutcome>>> {
            if holds.iter().any(|h| h.performance_id == self.poison) {
                panic!("an engine bug");
            }
            *self.batches.lock().unwrap() += 1;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Err(StoreError::Unavailable("connection refused".into()))
        }

        async fn hold_alone(&self, _: &HoldCommand) -> StoreResult<CommandOutcome> {
            unreachable!("a batch never hands a hold over when the database is gone")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holds_queued_behind_an_unavailable_database_hear_so_at_once() {
        let poison = PerformanceId::generate();
        let disk = Arc::new(DeadDatabase {
            batches: Mutex::new(0),
            poison,
        });
        let pipeline = Arc::new(WritePipeline::start(disk.clone(), 1));
        let performance = PerformanceId::generate();
        let first = {
            let pipeline = pipeline.clone();
            tokio::spawn(async move { pipeline.hold(hold(performance)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..20)
            .map(|_| {
                let pipeline = pipeline.clone();
                tokio::spawn(async move { pipeline.hold(hold(performance)).await })
            })
            .collect();
        for task in std::iter::once(first).chain(queued) {
            assert!(matches!(
                task.await.unwrap(),
                Err(StoreError::Unavailable(_))
            ));
        }
        // One wait for the database, not one per batch in the queue.
        assert_eq!(*disk.batches.lock().unwrap(), 1);

        // A batch that panics fails its own hold; the writer goes on with the next.
        assert!(pipeline.hold(hold(poison)).await.is_err());
        assert!(matches!(
            pipeline.hold(hold(performance)).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn a_performance_always_lands_on_the_same_shard() {
        let id = PerformanceId::generate();
        let shard = shard_of(id, 4);
        assert!((0..10).all(|_| shard_of(id, 4) == shard));
        assert_eq!(shard_of(id, 1), 0);
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|_| shard_of(PerformanceId::generate(), 4))
            .collect();
        assert!(spread.len() > 1, "performances spread over the shards");
    }
}
