//! The inventory story on both engines: performances, holds, cancellations, expiry and
//! the on-sale races, with the invariants of docs/ARCHITECTURE.md checked after each.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use usher_core::ids::{BookingId, PerformanceId, TicketTypeId, UnitId, UserId};
use uuid::Uuid;

use usher_app::Holds;
use usher_core::{BookingStatus, Clock, ManualClock, SeatingKind, SystemClock, UnitState};
use usher_store::{CommandOutcome, HoldCommand, InventoryCommand, Selection, Store};
use usher_testkit::fixtures::{general, performance, reserved, user};
use usher_testkit::invariants::check_performance;
use usher_testkit::on_each_engine;

const TTL: i64 = 600;

fn hold(
    user_id: UserId,
    performance_id: PerformanceId,
    selection: Selection,
    now: DateTime<Utc>,
) -> HoldCommand {
    HoldCommand {
        booking_id: BookingId::generate(),
        user_id,
        performance_id,
        selection,
        now,
        held_until: now + Duration::seconds(TTL),
        offer: false,
    }
}

async fn held(holds: &Holds, command: HoldCommand) -> usher_core::Booking {
    match holds.hold(command).await.unwrap() {
        CommandOutcome::Held(booking) => booking,
        other => panic!("expected a hold, got {other:?}"),
    }
}

/// Unit ids of a performance in seat-map order.
async fn unit_ids(
    store: &Arc<dyn Store>,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
) -> Vec<UnitId> {
    store
        .units(performance_id, now)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect()
}

on_each_engine! {
    async fn a_reserved_performance_has_one_unit_per_seat(engine) {
        let store = engine.fresh_store().await;
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("Stalls", &[4, 5]), ("Balcony", &[3])]), 10).await;
        assert_eq!(perf.kind, SeatingKind::Reserved);
        assert_eq!(perf.sections.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Stalls", "Balcony"]);
        assert_eq!(store.performance(perf.id).await.unwrap().unwrap(), perf);
        assert_eq!(store.performances_of_event(perf.event_id).await.unwrap(), vec![perf.clone()]);

        let units = store.units(perf.id, now).await.unwrap();
        assert_eq!(units.len(), 12);
        assert_eq!(units[0].section.as_deref(), Some("Stalls"));
        assert_eq!((units[0].row.as_deref(), units[0].label.as_deref()), (Some("A"), Some("1")));
        assert_eq!((units[4].row.as_deref(), units[4].label.as_deref()), (Some("B"), Some("1")));
        assert_eq!(units[11].section.as_deref(), Some("Balcony"));
        assert_eq!(units[11].price.amount, 1100);
        assert!(units.iter().all(|u| u.state == UnitState::Available && u.ticket_type_id.is_none()));

        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!((inventory.total.capacity, inventory.total.available), (12, 12));
        assert_eq!(inventory.parts.len(), 2);
        assert_eq!(inventory.parts[0].0, perf.sections[0].id);
        assert_eq!(inventory.parts[0].1.capacity, 9);
    }

    async fn a_general_performance_has_unlabelled_units_per_ticket_type(engine) {
        let store = engine.fresh_store().await;
        let now = SystemClock.now();
        let perf = performance(&store, now, general(&[("Floor", 50), ("VIP", 5)]), 10).await;
        assert_eq!(perf.ticket_types.len(), 2);
        assert_eq!(perf.ticket_types[1].capacity, 5);
        let units = store.units(perf.id, now).await.unwrap();
        assert_eq!(units.len(), 55);
        assert!(units.iter().all(|u| u.label.is_none() && u.section.is_none()));
        assert_eq!(units.iter().filter(|u| u.ticket_type_id == Some(perf.ticket_types[1].id)).count(), 5);
    }

    async fn a_hold_takes_exactly_the_asked_seats_and_prices_them(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("Stalls", &[10])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let ids = unit_ids(&store, perf.id, now).await;
        let booking = held(&holds, hold(buyer.into(), perf.id, Selection::Units(vec![ids[2], ids[3]]), now)).await;
        assert_eq!(booking.status, BookingStatus::Held);
        assert_eq!(booking.user_id, buyer.into());
        assert_eq!(booking.units.iter().map(|u| u.unit_id).collect::<Vec<_>>(), [ids[2], ids[3]]);
        assert_eq!(booking.total.amount, 2000);
        assert_eq!(booking.total.currency.as_str(), "EUR");
        assert_eq!(booking.held_until, now + Duration::seconds(TTL));
        assert_eq!(store.booking(booking.id).await.unwrap().unwrap(), booking);
        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!((inventory.total.available, inventory.total.held), (8, 2));
        check_performance(store.as_ref(), perf.id, &[booking.id], now).await.unwrap();
    }

    async fn a_hold_with_any_taken_seat_holds_nothing_and_names_the_taken_ones(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("Stalls", &[10])]), 10).await;
        let (ann, bob) = (user(&store, "ann@example.com").await, user(&store, "bob@example.com").await);
        let ids = unit_ids(&store, perf.id, now).await;
        let first = held(&holds, hold(ann.into(), perf.id, Selection::Units(vec![ids[3]]), now)).await;
        let losing = hold(bob.into(), perf.id, Selection::Units(vec![ids[2], ids[3], ids[4]]), now);
        let HoldCommand { booking_id: lost_id, .. } = &losing;
        let lost_id = *lost_id;
        match holds.hold(losing).await.unwrap() {
            CommandOutcome::Unavailable { unit_ids } => assert_eq!(unit_ids, [ids[3]]),
            other => panic!("{other:?}"),
        }
        assert!(store.booking(lost_id).await.unwrap().is_none());
        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!(inventory.total.held, 1, "seats 2 and 4 were not kept");
        check_performance(store.as_ref(), perf.id, &[first.id], now).await.unwrap();
    }

    async fn units_of_another_performance_are_unknown(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let a = performance(&store, now, reserved(&[("S", &[3])]), 10).await;
        let b = performance(&store, now, reserved(&[("S", &[3])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let foreign = unit_ids(&store, b.id, now).await[0];
        let made_up = UnitId::generate();
        match holds.hold(hold(buyer.into(), a.id, Selection::Units(vec![foreign, made_up]), now)).await.unwrap() {
            CommandOutcome::UnknownUnits { unit_ids } => assert_eq!(unit_ids, [foreign, made_up]),
            other => panic!("{other:?}"),
        }
        let general_on_reserved = hold(buyer.into(), a.id, Selection::General { ticket_type_id: a.sections[0].id.into(), quantity: 1 }, now);
        // A section's id is no ticket type: the hold names what it did not find.
        let section = TicketTypeId::from_uuid(a.sections[0].id);
        assert_eq!(
            holds.hold(general_on_reserved).await.unwrap(),
            CommandOutcome::UnknownTicketType { ticket_type_id: section }
        );
        assert_eq!(store.inventory(b.id, now).await.unwrap().total.held, 0);
    }

    async fn general_admission_holds_any_free_units_until_sold_out(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, general(&[("Floor", 5), ("VIP", 2)]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let floor = perf.ticket_types[0].id;
        let first = held(&holds, hold(buyer.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 3 }, now)).await;
        assert_eq!(first.units.len(), 3);
        assert!(first.units.iter().all(|u| u.ticket_type_id == Some(floor)));
        assert_eq!(first.total.amount, 1500);
        let too_many = holds.hold(hold(buyer.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 3 }, now)).await.unwrap();
        assert_eq!(too_many, CommandOutcome::Unavailable { unit_ids: vec![] });
        let rest = held(&holds, hold(buyer.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 2 }, now)).await;
        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!(inventory.parts[0].1.available, 0);
        assert_eq!(inventory.parts[1].1.available, 2, "VIP untouched");
        check_performance(store.as_ref(), perf.id, &[first.id, rest.id], now).await.unwrap();
    }

    async fn best_available_picks_adjacent_centre_seats_in_the_best_row(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("Stalls", &[6, 6]), ("Balcony", &[6])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let units = store.units(perf.id, now).await.unwrap();
        let first = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await;
        let labels: Vec<_> = first.units.iter().map(|u| format!("{}{}", u.row.clone().unwrap(), u.label.clone().unwrap())).collect();
        assert_eq!(labels, ["A3", "A4"]);
        // Row A now has 1-2 and 5-6 free: four seats fit only in row B.
        let second = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 4 }, now)).await;
        assert!(second.units.iter().all(|u| u.row.as_deref() == Some("B")));
        let ids: HashSet<_> = second.units.iter().map(|u| u.unit_id).collect();
        let positions: Vec<usize> = units.iter().enumerate().filter(|(_, u)| ids.contains(&u.id)).map(|(i, _)| i).collect();
        assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "adjacent: {positions:?}");
        check_performance(store.as_ref(), perf.id, &[first.id, second.id], now).await.unwrap();
    }

    async fn best_available_avoids_stranding_a_seat_next_to_a_taken_one(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("Stalls", &[8])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let ids = unit_ids(&store, perf.id, now).await;
        // Seats 1 and 8 taken: x......x. A centred pair at 4-5 leaves 2+2; never 3-4 or 5-6
        // (which would leave a lone seat beside a taken one at 2 or 7 only when off by one).
        held(&holds, hold(buyer.into(), perf.id, Selection::Units(vec![ids[0], ids[7]]), now)).await;
        let pair = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await;
        let labels: Vec<_> = pair.units.iter().map(|u| u.label.clone().unwrap()).collect();
        assert_eq!(labels, ["4", "5"]);
        // Now x..xx..x: three seats cannot be adjacent, so they are split.
        let three = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 3 }, now)).await;
        assert_eq!(three.units.len(), 3);
        let none = holds.hold(hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await.unwrap();
        assert_eq!(none, CommandOutcome::Unavailable { unit_ids: vec![] });
    }

    async fn best_available_reads_wide_rows_and_full_sections_and_takes_seats_whose_hold_ran_out(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        // Rows that one reading of free seats runs past, then a section of two rows.
        let perf = performance(&store, now, reserved(&[("Stalls", &[1000, 600]), ("Balcony", &[6, 6])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let ids = unit_ids(&store, perf.id, now).await;
        let label = |b: &usher_core::Booking| -> Vec<String> {
            b.units.iter().map(|u| format!("{}{}", u.row.clone().unwrap(), u.label.clone().unwrap())).collect()
        };
        let centre = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await;
        assert_eq!(label(&centre), ["A500", "A501"]);
        // Seats A495-A498 held by a hold that has run out (nobody has swept it), every
        // other stalls seat held now.
        let earlier = now - Duration::seconds(TTL + 60);
        let ran_out = held(&holds, hold(buyer.into(), perf.id, Selection::Units(ids[494..498].to_vec()), earlier)).await;
        let rest: Vec<UnitId> = ids[..1600].iter().enumerate().filter(|(i, _)| !(494..498).contains(i) && !(499..501).contains(i)).map(|(_, id)| *id).collect();
        let rest = held(&holds, hold(buyer.into(), perf.id, Selection::Units(rest), now)).await;
        let four = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 4 }, now)).await;
        assert_eq!(label(&four), ["A495", "A496", "A497", "A498"]);
        // The stalls are full: the balcony's first row, in its centre.
        let balcony = held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await;
        assert_eq!(label(&balcony), ["A3", "A4"]);
        assert!(balcony.units.iter().all(|u| !ids[..1600].contains(&u.unit_id)));
        let bookings = [centre.id, ran_out.id, rest.id, four.id, balcony.id];
        check_performance(store.as_ref(), perf.id, &bookings, now).await.unwrap();
    }

    async fn cancel_releases_units_at_once_and_only_once(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("S", &[4])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let ids = unit_ids(&store, perf.id, now).await;
        let booking = held(&holds, hold(buyer.into(), perf.id, Selection::Units(ids.clone()), now)).await;
        let cancelled = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Cancel { booking_id: booking.id, now }).await.unwrap();
        let CommandOutcome::Cancelled(cancelled) = cancelled else { panic!("{cancelled:?}") };
        assert_eq!(cancelled.status, BookingStatus::Cancelled);
        assert_eq!(cancelled.units.len(), 4, "a cancelled booking still shows what it had");
        assert_eq!(store.inventory(perf.id, now).await.unwrap().total.available, 4);
        let again = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Cancel { booking_id: booking.id, now }).await.unwrap();
        assert_eq!(again, CommandOutcome::NotCancellable { status: BookingStatus::Cancelled });
        let missing = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Cancel { booking_id: BookingId::generate(), now }).await.unwrap();
        assert_eq!(missing, CommandOutcome::NoSuchBooking);
        // The seats can be held again.
        held(&holds, hold(buyer.into(), perf.id, Selection::Units(ids), now)).await;
    }

    async fn an_expired_hold_is_free_for_the_next_buyer_before_and_after_the_sweep(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let clock = ManualClock::starting_now();
        let perf = performance(&store, clock.now(), reserved(&[("S", &[4])]), 10).await;
        let (ann, bob, cy) = (
            user(&store, "ann@example.com").await,
            user(&store, "bob@example.com").await,
            user(&store, "cy@example.com").await,
        );
        let ids = unit_ids(&store, perf.id, clock.now()).await;
        let anns = held(&holds, hold(ann.into(), perf.id, Selection::Units(vec![ids[0], ids[1]]), clock.now())).await;
        let taken = holds.hold(hold(bob.into(), perf.id, Selection::Units(vec![ids[0]]), clock.now())).await.unwrap();
        assert!(matches!(taken, CommandOutcome::Unavailable { .. }));

        clock.advance(Duration::seconds(TTL));
        let now = clock.now();
        // Before any sweep: reads as expired and available, and can be taken.
        assert_eq!(store.booking(anns.id).await.unwrap().unwrap().status_at(now), BookingStatus::Expired);
        assert_eq!(store.inventory(perf.id, now).await.unwrap().total.available, 4);
        let units = store.units(perf.id, now).await.unwrap();
        assert!(units.iter().all(|u| u.state == UnitState::Available));
        let bobs = held(&holds, hold(bob.into(), perf.id, Selection::Units(vec![ids[0]]), now)).await;
        // Ann cannot cancel what has expired.
        let cancel = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Cancel { booking_id: anns.id, now }).await.unwrap();
        assert_eq!(cancel, CommandOutcome::NotCancellable { status: BookingStatus::Expired });

        // The sweep expires Ann's booking and frees only the unit she still holds.
        let swept = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Sweep { now, limit: 100 }).await.unwrap();
        assert_eq!(swept, CommandOutcome::Swept { expired: vec![anns.id], released_units: 1 });
        assert_eq!(store.booking(anns.id).await.unwrap().unwrap().status, BookingStatus::Expired);
        assert_eq!(store.booking(bobs.id).await.unwrap().unwrap().status, BookingStatus::Held);
        let again = usher_app::inventory::execute(store.as_ref(), InventoryCommand::Sweep { now, limit: 100 }).await.unwrap();
        assert_eq!(again, CommandOutcome::Swept { expired: vec![], released_units: 0 });
        // After the sweep the free unit is still available to the next buyer.
        let cys = held(&holds, hold(cy.into(), perf.id, Selection::Units(vec![ids[1]]), now)).await;
        check_performance(store.as_ref(), perf.id, &[anns.id, bobs.id, cys.id], now).await.unwrap();
    }

    async fn concurrent_sweepers_expire_each_booking_once(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let clock = ManualClock::starting_now();
        let perf = performance(&store, clock.now(), general(&[("Floor", 60)]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        let floor = perf.ticket_types[0].id;
        let mut bookings = Vec::new();
        for _ in 0..30 {
            let b = held(&holds, hold(buyer.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 2 }, clock.now())).await;
            bookings.push(b.id);
        }
        clock.advance(Duration::seconds(TTL + 1));
        let now = clock.now();
        let sweepers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut expired = Vec::new();
                    let mut released = 0;
                    loop {
                        match usher_app::inventory::execute(store.as_ref(), InventoryCommand::Sweep { now, limit: 7 }).await.unwrap() {
                            CommandOutcome::Swept { expired: e, released_units } if !e.is_empty() => {
                                expired.extend(e);
                                released += released_units;
                            }
                            _ => return (expired, released),
                        }
                    }
                })
            })
            .collect();
        let mut expired = Vec::new();
        let mut released = 0;
        for sweeper in sweepers {
            let (e, r) = sweeper.await.unwrap();
            expired.extend(e);
            released += r;
        }
        expired.sort();
        let mut expected = bookings.clone();
        expected.sort();
        assert_eq!(expired, expected, "each booking expired exactly once");
        assert_eq!(released, 60);
        assert_eq!(store.inventory(perf.id, now).await.unwrap().total.available, 60);
        check_performance(store.as_ref(), perf.id, &bookings, now).await.unwrap();
    }

    async fn my_bookings_page_newest_first(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, general(&[("Floor", 10)]), 10).await;
        let (ann, bob) = (user(&store, "ann@example.com").await, user(&store, "bob@example.com").await);
        let floor = perf.ticket_types[0].id;
        let mut anns = Vec::new();
        for _ in 0..5 {
            anns.push(held(&holds, hold(ann.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 1 }, now)).await.id);
        }
        held(&holds, hold(bob.into(), perf.id, Selection::General { ticket_type_id: floor, quantity: 1 }, now)).await;
        anns.reverse();
        let limit = usher_core::PageLimit::parse(Some(2)).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.bookings_of_user(ann.into(), limit, after).await.unwrap();
            seen.extend(page.items.iter().map(|b| b.id));
            assert!(page.items.iter().all(|b| b.units.len() == 1));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, anns);
    }

    async fn sales_count_every_performance_of_an_event(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, reserved(&[("S", &[5])]), 10).await;
        let buyer = user(&store, "buyer@example.com").await;
        held(&holds, hold(buyer.into(), perf.id, Selection::BestAvailable { quantity: 2 }, now)).await;
        let sales = store.sales(perf.event_id, now).await.unwrap();
        assert_eq!(sales.len(), 1);
        assert_eq!(sales[0].performance_id, perf.id);
        assert_eq!((sales[0].counts.capacity, sales[0].counts.available, sales[0].counts.held, sales[0].counts.sold), (5, 3, 2, 0));
        assert_eq!(sales[0].revenue.amount, 0);
    }

    async fn race_500_buyers_for_100_reserved_seats_with_overlapping_requests(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        race_for_reserved_seats(store, holds).await;
    }

    async fn race_500_buyers_for_100_reserved_seats_one_transaction_each(engine) {
        // The same race without group commit (USHER_GROUP_COMMIT=off).
        let url = engine.fresh_database_url().await;
        let store = engine.open(&url).await;
        let holds = Arc::new(Holds::start(store.clone(), false));
        race_for_reserved_seats(store, holds).await;
    }

    async fn race_500_buyers_for_a_100_unit_general_admission_type(engine) {
        // 500 tasks ask for 1–4 units of one 100-unit ticket type. Nobody gets more or
        // fewer than asked, and no more than 100 units are ever held.
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let perf = performance(&store, now, general(&[("Floor", 100)]), 10).await;
        let floor = perf.ticket_types[0].id;
        let buyer = user(&store, "buyer@example.com").await;
        let tasks: Vec<_> = (0..500u32)
            .map(|i| {
                let holds = holds.clone();
                let perf_id = perf.id;
                tokio::spawn(async move {
                    let quantity = 1 + i % 4;
                    let command = hold(buyer.into(), perf_id, Selection::General { ticket_type_id: floor, quantity }, now);
                    let HoldCommand { booking_id, .. } = &command;
                    let booking_id = *booking_id;
                    (booking_id, quantity, holds.hold(command).await.unwrap())
                })
            })
            .collect();
        let mut held_units = 0;
        let mut all = Vec::new();
        for task in tasks {
            let (booking_id, quantity, outcome) = task.await.unwrap();
            match outcome {
                CommandOutcome::Held(booking) => {
                    assert_eq!(booking.units.len() as u32, quantity);
                    assert!(booking.units.iter().all(|u| u.ticket_type_id == Some(floor)));
                    held_units += quantity;
                    all.push(booking_id);
                }
                CommandOutcome::Unavailable { .. } => {
                    assert!(store.booking(booking_id).await.unwrap().is_none());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(held_units <= 100);
        assert!(held_units >= 90, "the type nearly sells out: {held_units}");
        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!(inventory.total.held, u64::from(held_units));
        check_performance(store.as_ref(), perf.id, &all, now).await.unwrap();
    }

    async fn race_general_admission_never_refuses_while_enough_units_are_free(engine) {
        // 300 tasks ask for 1–3 units of a ticket type that has exactly enough for all of
        // them. Every one must get its units: skipping units other buyers are locking
        // right now must never turn into a false "sold out".
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let asked: Vec<u32> = (0..300u32).map(|i| 1 + i % 3).collect();
        let capacity: u32 = asked.iter().sum();
        let perf = performance(&store, now, general(&[("Floor", capacity)]), 10).await;
        let floor = perf.ticket_types[0].id;
        let buyer = user(&store, "buyer@example.com").await;
        let tasks: Vec<_> = asked
            .iter()
            .map(|&quantity| {
                let holds = holds.clone();
                let perf_id = perf.id;
                tokio::spawn(async move {
                    let command = hold(buyer.into(), perf_id, Selection::General { ticket_type_id: floor, quantity }, now);
                    let HoldCommand { booking_id, .. } = &command;
                    let booking_id = *booking_id;
                    (booking_id, holds.hold(command).await.unwrap())
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let (booking_id, outcome) = task.await.unwrap();
            assert!(matches!(outcome, CommandOutcome::Held(_)), "{outcome:?}");
            all.push(booking_id);
        }
        let inventory = store.inventory(perf.id, now).await.unwrap();
        assert_eq!((inventory.total.held, inventory.total.available), (u64::from(capacity), 0));
        check_performance(store.as_ref(), perf.id, &all, now).await.unwrap();
    }
}

/// PostgreSQL only: a general-admission hold whose units are row-locked by another
/// transaction (a sweeper releasing them, a blocked-seat change, a buyer about to roll
/// back) waits for the lock instead of answering "sold out" while enough are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_general_admission_waits_for_locked_units_instead_of_refusing() {
    use sqlx::{Connection, Executor};

    let (store, url) = usher_testkit::Engine::Postgres.fresh_store_with_url().await;
    let holds = usher_testkit::holds(&store);
    let now = SystemClock.now();
    let perf = performance(&store, now, general(&[("Floor", 4)]), 10).await;
    let floor = perf.ticket_types[0].id;
    let buyer = user(&store, "buyer@example.com").await;
    // Another transaction holds row locks on two of the four free units.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    let locked =
        sqlx::query("SELECT id FROM units WHERE group_id = $1 ORDER BY id LIMIT 2 FOR UPDATE")
            .bind(floor)
            .fetch_all(&mut other)
            .await
            .unwrap();
    assert_eq!(locked.len(), 2);
    let waiting = {
        let holds = holds.clone();
        tokio::spawn(async move {
            let command = hold(
                buyer.into(),
                perf.id,
                Selection::General {
                    ticket_type_id: floor,
                    quantity: 3,
                },
                now,
            );
            holds.hold(command).await.unwrap()
        })
    };
    // The hold is seen waiting on a row lock (not merely not yet run): PostgreSQL says
    // so in pg_stat_activity, read outside any transaction (inside one it is a snapshot).
    // Until then it must not have answered.
    let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            !waiting.is_finished(),
            "the hold answered before waiting for the locks"
        );
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if blocked > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hold never waited on a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the hold waits for the locks rather than refusing"
    );
    other.execute("ROLLBACK").await.unwrap();
    let outcome = waiting.await.unwrap();
    let CommandOutcome::Held(booking) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(booking.units.len(), 3);
    check_performance(store.as_ref(), perf.id, &[booking.id], now)
        .await
        .unwrap();
}

/// 500 tasks race for 100 seats in 10 rows, each asking for 1–4 adjacent seats at a
/// pseudo-random place, so requests overlap heavily. Afterwards: no seat in two live
/// bookings, counts add up, every winner got exactly what it asked for, every loser
/// holds nothing.
async fn race_for_reserved_seats(store: Arc<dyn Store>, holds: Arc<Holds>) {
    let now = SystemClock.now();
    let perf = performance(&store, now, reserved(&[("Stalls", &[10; 10])]), 10).await;
    let ids = Arc::new(unit_ids(&store, perf.id, now).await);
    let buyers: Vec<Uuid> = {
        let mut v = Vec::new();
        for i in 0..20 {
            v.push(user(&store, &format!("b{i}@example.com")).await);
        }
        v
    };
    let tasks: Vec<_> = (0..500u64)
        .map(|i| {
            let (holds, ids) = (holds.clone(), ids.clone());
            let buyer = buyers[(i % 20) as usize];
            let perf_id = perf.id;
            tokio::spawn(async move {
                let x = i.wrapping_mul(2_654_435_761) % 100;
                let n = 1 + (i % 4);
                let start = (x - x % 10 + (x % 10).min(10 - n)) as usize;
                let asked: Vec<UnitId> = ids[start..start + n as usize].to_vec();
                let command = hold(buyer.into(), perf_id, Selection::Units(asked.clone()), now);
                let HoldCommand { booking_id, .. } = &command;
                let booking_id = *booking_id;
                (booking_id, asked, holds.hold(command).await.unwrap())
            })
        })
        .collect();
    let mut winners = 0;
    let mut all = Vec::new();
    for task in tasks {
        let (booking_id, asked, outcome) = task.await.unwrap();
        match outcome {
            CommandOutcome::Held(booking) => {
                winners += 1;
                all.push(booking_id);
                let got: Vec<UnitId> = booking.units.iter().map(|u| u.unit_id).collect();
                assert_eq!(got, asked, "a winner got exactly the seats it asked for");
            }
            CommandOutcome::Unavailable { unit_ids } => {
                assert!(!unit_ids.is_empty() && unit_ids.iter().all(|u| asked.contains(u)));
                assert!(
                    store.booking(booking_id).await.unwrap().is_none(),
                    "a loser holds nothing"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        winners >= 25,
        "at least a quarter of the house sold: {winners}"
    );
    check_performance(store.as_ref(), perf.id, &all, now)
        .await
        .unwrap();
}

mod answers {
    use super::*;

    on_each_engine! {
        async fn the_booking_a_hold_answers_is_the_booking_stored(engine) {
            // Engines may build the answer from what their statements returned instead
            // of reading it back; it must be the same booking either way.
            let store = engine.fresh_store().await;
            let holds = usher_testkit::holds(&store);
            let now = SystemClock.now();
            let seated = performance(&store, now, reserved(&[("Stalls", &[5, 5]), ("Balcony", &[4])]), 10).await;
            let ga = performance(&store, now, general(&[("Floor", 5), ("Pit", 5)]), 10).await;
            let buyer = user(&store, "buyer@example.com").await;
            let ids = unit_ids(&store, seated.id, now).await;
            let selections = [
                (seated.id, Selection::Units(vec![ids[12], ids[1], ids[0]])),
                (seated.id, Selection::BestAvailable { quantity: 2 }),
                (ga.id, Selection::General { ticket_type_id: ga.ticket_types[1].id, quantity: 3 }),
            ];
            for (performance_id, selection) in selections {
                let outcome = holds.hold(hold(buyer.into(), performance_id, selection, now)).await.unwrap();
                let CommandOutcome::Held(answered) = outcome else { panic!("{outcome:?}") };
                let stored = store.booking(answered.id).await.unwrap().unwrap();
                assert_eq!(answered, stored);
            }
        }
    }
}

mod best_available_race {
    use super::*;

    on_each_engine! {
        async fn race_300_best_available_holds_for_100_seats(engine) {
            // 300 tasks ask for the best 1–3 seats at once; many land in one batch and
            // choose from one seat map: nobody may be offered a seat another took.
            let store = engine.fresh_store().await;
            let holds = usher_testkit::holds(&store);
            let now = SystemClock.now();
            let perf = performance(&store, now, reserved(&[("Stalls", &[10; 10])]), 10).await;
            let buyer = user(&store, "buyer@example.com").await;
            let tasks: Vec<_> = (0..300u32)
                .map(|i| {
                    let holds = holds.clone();
                    let perf_id = perf.id;
                    tokio::spawn(async move {
                        let command = hold(buyer.into(), perf_id, Selection::BestAvailable { quantity: 1 + i % 3 }, now);
                        let HoldCommand { booking_id, .. } = &command;
                        let booking_id = *booking_id;
                        (booking_id, 1 + i % 3, holds.hold(command).await.unwrap())
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut held = 0;
            for task in tasks {
                let (booking_id, quantity, outcome) = task.await.unwrap();
                match outcome {
                    CommandOutcome::Held(booking) => {
                        assert_eq!(booking.units.len() as u32, quantity);
                        held += quantity;
                        all.push(booking_id);
                    }
                    CommandOutcome::Unavailable { .. } => {
                        assert!(store.booking(booking_id).await.unwrap().is_none(), "a loser holds nothing");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!((90..=100).contains(&held), "the house nearly sells out: {held}");
            check_performance(store.as_ref(), perf.id, &all, now).await.unwrap();
        }
    }
}

on_each_engine! {
    async fn the_live_log_numbers_what_committed_and_nothing_else(engine) {
        let store = engine.fresh_store().await;
        let holds = usher_testkit::holds(&store);
        let now = SystemClock.now();
        let buyer = user(&store, "buyer@example.com").await;
        let perf = performance(&store, now, reserved(&[("Stalls", &[3])]), 3).await;
        let ids = unit_ids(&store, perf.id, now).await;
        let mut bus = store.live_bus().subscribe();
        assert_eq!(store.live_snapshot(perf.id, now).await.unwrap().unwrap().seq, 0);

        let first = held(&holds, hold(buyer.into(), perf.id, Selection::Units(vec![ids[0], ids[1]]), now)).await;
        // A refused hold (a taken seat) writes nothing and numbers nothing.
        let refused = holds.hold(hold(buyer.into(), perf.id, Selection::Units(vec![ids[1]]), now)).await.unwrap();
        assert!(matches!(refused, CommandOutcome::Unavailable { .. }));
        usher_app::inventory::execute(store.as_ref(), InventoryCommand::Cancel { booking_id: first.id, now }).await.unwrap();

        let logged = store.live_changes(perf.id, 0, 100).await.unwrap();
        assert_eq!(logged.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
        let states = |i: usize| logged[i].changes.iter().map(|m| (m.unit_id, m.state)).collect::<Vec<_>>();
        assert_eq!(states(0), [(ids[0], UnitState::Held), (ids[1], UnitState::Held)]);
        assert_eq!(states(1), [(ids[0], UnitState::Available), (ids[1], UnitState::Available)]);
        // The bus carried the same changes, as they committed.
        assert_eq!(bus.recv().await.unwrap(), logged[0]);
        assert_eq!(bus.recv().await.unwrap(), logged[1]);
        assert_eq!(store.live_heads(&[perf.id, Uuid::now_v7().into()]).await.unwrap(), [(perf.id, 2)]);
        assert_eq!(store.live_changes(perf.id, 1, 100).await.unwrap(), logged[1..]);

        // Purging forgets the log, not the numbering.
        assert_eq!(store.live_purge(now + Duration::seconds(1)).await.unwrap(), 2);
        assert!(store.live_changes(perf.id, 0, 100).await.unwrap().is_empty());
        let snapshot = store.live_snapshot(perf.id, now).await.unwrap().unwrap();
        assert_eq!(snapshot.seq, 2);
        assert!(snapshot.units.iter().all(|u| u.state == UnitState::Available));
        assert!(store.live_snapshot(Uuid::now_v7().into(), now).await.unwrap().is_none());
    }
}

/// The invariant check itself fails on what it cannot account for: an acknowledged
/// booking that is gone, one acknowledged on another performance, and a unit held with
/// no live booking behind it (written behind the store's back, as a lost write would
/// leave it). PostgreSQL only: the last needs a raw statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invariant_check_fails_on_what_it_cannot_account_for() {
    use sqlx::Connection;

    let (store, url) = usher_testkit::Engine::Postgres.fresh_store_with_url().await;
    let holds = usher_testkit::holds(&store);
    let now = SystemClock.now();
    let perf = performance(&store, now, reserved(&[("Stalls", &[4])]), 10).await;
    let other = performance(&store, now, reserved(&[("Stalls", &[4])]), 10).await;
    let buyer = user(&store, "buyer@example.com").await;
    let ids = unit_ids(&store, perf.id, now).await;
    let booking = held(
        &holds,
        hold(buyer.into(), perf.id, Selection::Units(vec![ids[0]]), now),
    )
    .await;
    let elsewhere = held(
        &holds,
        hold(
            buyer.into(),
            other.id,
            Selection::BestAvailable { quantity: 1 },
            now,
        ),
    )
    .await;
    check_performance(store.as_ref(), perf.id, &[booking.id], now)
        .await
        .unwrap();

    let lost = Uuid::now_v7();
    let error = check_performance(store.as_ref(), perf.id, &[booking.id, lost.into()], now)
        .await
        .unwrap_err();
    assert!(
        error.contains(&lost.to_string()) && error.contains("gone"),
        "{error}"
    );
    let error = usher_testkit::invariants::check_money(store.as_ref(), &[lost])
        .await
        .unwrap_err();
    assert!(error.contains("gone"), "{error}");
    let error = usher_testkit::invariants::check_payments(store.as_ref(), &[lost])
        .await
        .unwrap_err();
    assert!(error.contains("gone"), "{error}");
    let error = check_performance(store.as_ref(), perf.id, &[elsewhere.id], now)
        .await
        .unwrap_err();
    assert!(error.contains("is on"), "{error}");

    // A second seat marked held for the booking, which does not list it.
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE units SET state = 'held', booking_id = $1, held_until = $2 WHERE id = $3")
        .bind(booking.id)
        .bind(booking.held_until)
        .bind(ids[1])
        .execute(&mut raw)
        .await
        .unwrap();
    let error = check_performance(store.as_ref(), perf.id, &[booking.id], now)
        .await
        .unwrap_err();
    assert!(
        error.contains("2 units held but live bookings hold 1"),
        "{error}"
    );
}
