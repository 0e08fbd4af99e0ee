//! A property-based state-machine test: random sequences of holds, cancellations, clock
//! moves and sweeps run against a store and against a tiny in-memory model of the
//! booking rules. After every step the two must agree on every unit and every booking.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use usher_core::ids::{BookingId, UnitId};
use uuid::Uuid;

use usher_core::{BookingStatus, Clock, ManualClock, UnitState};
use usher_store::{CommandOutcome, HoldCommand, InventoryCommand, Selection};
use usher_testkit::Engine;
use usher_testkit::fixtures::{general, performance, reserved, user};

const TTL_SECONDS: i64 = 600;
const SEATS: usize = 8;
const GA_UNITS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    HoldSeats(Vec<usize>),
    HoldGeneral(u32),
    Cancel(usize),
    Advance(i64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::btree_set(0..SEATS, 1..=3).prop_map(|s| Op::HoldSeats(s.into_iter().collect())),
        2 => (1u32..=3).prop_map(Op::HoldGeneral),
        2 => (0usize..64).prop_map(Op::Cancel),
        2 => (0i64..=400).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone)]
struct ModelBooking {
    id: BookingId,
    /// Indexes into the model's unit list.
    units: Vec<usize>,
    status: BookingStatus,
    held_until: DateTime<Utc>,
}

impl ModelBooking {
    fn status_at(&self, now: DateTime<Utc>) -> BookingStatus {
        if self.status == BookingStatus::Held && self.held_until <= now {
            BookingStatus::Expired
        } else {
            self.status
        }
    }
}

/// The rules, as plainly as they can be said.
#[derive(Debug, Default)]
struct Model {
    /// Per unit (seats first, then GA units): the booking (index) holding it.
    holder: Vec<Option<usize>>,
    bookings: Vec<ModelBooking>,
}

impl Model {
    fn is_free(&self, unit: usize, now: DateTime<Utc>) -> bool {
        match self.holder[unit] {
            None => true,
            Some(b) => self.bookings[b].status_at(now) != BookingStatus::Held,
        }
    }

    fn release(&mut self, booking: usize) {
        for unit in self.bookings[booking].units.clone() {
            if self.holder[unit] == Some(booking) {
                self.holder[unit] = None;
            }
        }
    }
}

fn run(engine: Engine, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let clock = ManualClock::starting_now();
        let seated = performance(&store, clock.now(), reserved(&[("S", &[4, 4])]), 10).await;
        let ga = performance(
            &store,
            clock.now(),
            general(&[("Floor", GA_UNITS as u32)]),
            10,
        )
        .await;
        let floor = ga.ticket_types[0].id;
        let buyer = user(&store, "buyer@example.com").await;
        let mut unit_ids: Vec<UnitId> = store
            .units(seated.id, clock.now())
            .await
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect();
        unit_ids.extend(
            store
                .units(ga.id, clock.now())
                .await
                .unwrap()
                .iter()
                .map(|u| u.id),
        );
        let index_of = |id: Uuid| unit_ids.iter().position(|u| *u == id.into()).unwrap();
        let mut model = Model {
            holder: vec![None; SEATS + GA_UNITS],
            bookings: Vec::new(),
        };

        for op in ops {
            let now = clock.now();
            let hold = |performance_id, selection| HoldCommand {
                booking_id: BookingId::generate(),
                user_id: buyer.into(),
                performance_id,
                selection,
                now,
                held_until: now + Duration::seconds(TTL_SECONDS),
                offer: false,
            };
            match op {
                Op::HoldSeats(seats) => {
                    let ids: Vec<UnitId> = seats.iter().map(|s| unit_ids[*s]).collect();
                    let outcome = holds
                        .hold(hold(seated.id, Selection::Units(ids.into_iter().collect())))
                        .await
                        .unwrap();
                    let taken: Vec<usize> = seats
                        .iter()
                        .copied()
                        .filter(|s| !model.is_free(*s, now))
                        .collect();
                    if taken.is_empty() {
                        let CommandOutcome::Held(booking) = outcome else {
                            return Err(TestCaseError::fail(format!(
                                "model holds {seats:?}, store said {outcome:?}"
                            )));
                        };
                        let b = model.bookings.len();
                        for s in &seats {
                            model.holder[*s] = Some(b);
                        }
                        model.bookings.push(ModelBooking {
                            id: booking.id,
                            units: seats,
                            status: BookingStatus::Held,
                            held_until: booking.held_until,
                        });
                    } else {
                        let expected: Vec<UnitId> = taken.iter().map(|s| unit_ids[*s]).collect();
                        prop_assert_eq!(
                            outcome,
                            CommandOutcome::Unavailable {
                                unit_ids: expected.into_iter().collect()
                            }
                        );
                    }
                }
                Op::HoldGeneral(quantity) => {
                    let outcome = holds
                        .hold(hold(
                            ga.id,
                            Selection::General {
                                ticket_type_id: floor,
                                quantity,
                            },
                        ))
                        .await
                        .unwrap();
                    let free = (SEATS..SEATS + GA_UNITS)
                        .filter(|u| model.is_free(*u, now))
                        .count();
                    if free >= quantity as usize {
                        let CommandOutcome::Held(booking) = outcome else {
                            return Err(TestCaseError::fail(format!(
                                "model has {free} free, store said {outcome:?}"
                            )));
                        };
                        let units: Vec<usize> = booking
                            .units
                            .iter()
                            .map(|u| index_of(u.unit_id.uuid()))
                            .collect();
                        prop_assert_eq!(units.len(), quantity as usize);
                        let b = model.bookings.len();
                        for u in &units {
                            prop_assert!(model.is_free(*u, now), "store gave a taken GA unit");
                            model.holder[*u] = Some(b);
                        }
                        model.bookings.push(ModelBooking {
                            id: booking.id,
                            units,
                            status: BookingStatus::Held,
                            held_until: booking.held_until,
                        });
                    } else {
                        prop_assert_eq!(outcome, CommandOutcome::Unavailable { unit_ids: vec![] });
                    }
                }
                Op::Cancel(pick) => {
                    if model.bookings.is_empty() {
                        continue;
                    }
                    let b = pick % model.bookings.len();
                    let outcome = usher_app::inventory::execute(
                        store.as_ref(),
                        InventoryCommand::Cancel {
                            booking_id: model.bookings[b].id,
                            now,
                        },
                    )
                    .await
                    .unwrap();
                    let status = model.bookings[b].status_at(now);
                    if status == BookingStatus::Held {
                        prop_assert!(
                            matches!(outcome, CommandOutcome::Cancelled(_)),
                            "{:?}",
                            outcome
                        );
                        model.bookings[b].status = BookingStatus::Cancelled;
                        model.release(b);
                    } else {
                        prop_assert_eq!(outcome, CommandOutcome::NotCancellable { status });
                    }
                }
                Op::Advance(seconds) => clock.advance(Duration::seconds(seconds)),
                Op::Sweep => {
                    let outcome = usher_app::inventory::execute(
                        store.as_ref(),
                        InventoryCommand::Sweep { now, limit: 1000 },
                    )
                    .await
                    .unwrap();
                    let CommandOutcome::Swept { mut expired, .. } = outcome else {
                        return Err(TestCaseError::fail(format!("{outcome:?}")));
                    };
                    let mut expected = Vec::new();
                    for b in 0..model.bookings.len() {
                        if model.bookings[b].status == BookingStatus::Held
                            && model.bookings[b].held_until <= now
                        {
                            model.bookings[b].status = BookingStatus::Expired;
                            model.release(b);
                            expected.push(model.bookings[b].id);
                        }
                    }
                    expired.sort();
                    expected.sort();
                    prop_assert_eq!(expired, expected);
                }
            }

            // The store and the model agree on every unit and every booking, now.
            let now = clock.now();
            let mut units = store.units(seated.id, now).await.unwrap();
            units.extend(store.units(ga.id, now).await.unwrap());
            for (i, unit) in units.iter().enumerate() {
                let expected = if model.is_free(i, now) {
                    UnitState::Available
                } else {
                    UnitState::Held
                };
                prop_assert_eq!(unit.state, expected, "unit {}", i);
            }
            for booking in &model.bookings {
                let stored = store.booking(booking.id).await.unwrap().unwrap();
                prop_assert_eq!(stored.status_at(now), booking.status_at(now));
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_engine_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Engine::Sqlite, ops)?;
    }

    #[test]
    fn postgres_engine_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Engine::Postgres, ops)?;
    }
}
