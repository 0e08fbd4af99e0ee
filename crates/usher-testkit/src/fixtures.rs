//! Small builders for inventory tests: an organizer with an event, and seating plans.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use usher_core::inventory::{
    PriceInput, RowInput, SeatingInput, SeatsInput, SectionInput, TicketTypeInput,
};
use usher_core::{
    Email, EventAttributes, EventStatus, EventText, EventTitle, HoldTtl, MaxPerBooking,
    Performance, Role, SeatingPlan, UserName,
};
use usher_store::{Audit, EventPatch, NewEvent, NewPerformance, NewUser, Store};

/// Creates a user with this email (a customer unless it is the first account).
pub async fn user(store: &Arc<dyn Store>, email: &str) -> Uuid {
    (store
        .create_user(NewUser {
            email: Email::parse(email).expect("email"),
            name: UserName::parse("Test Person").expect("name"),
            password_hash: "$argon2id$not-a-real-hash".into(),
            role: Role::Customer,
            first_account_is_admin: false,
        })
        .await
        .expect("create user")
        .id)
        .uuid()
}

/// An organizer and a draft event of theirs; returns the event id.
pub async fn event(store: &Arc<dyn Store>) -> Uuid {
    let organizer = user(
        store,
        &format!("org-{}@example.com", Uuid::new_v4().simple()),
    )
    .await;
    (store
        .create_event(
            NewEvent {
                organizer_id: organizer.into(),
                title: EventTitle::parse("Test Night").expect("title"),
                description: EventText::default(),
                venue: EventText::default(),
                attributes: EventAttributes::empty(),
            },
            &Audit::system(),
        )
        .await
        .expect("create event")
        .id)
        .uuid()
}

/// Sections of rows, each row `seats` seats, at 1000 + 100 × section index cents.
pub fn reserved(sections: &[(&str, &[u32])]) -> SeatingPlan {
    let input = SeatingInput::Reserved {
        sections: sections
            .iter()
            .enumerate()
            .map(|(i, (name, rows))| SectionInput {
                name: (*name).into(),
                price: PriceInput {
                    amount: 1000 + 100 * i as i64,
                    currency: "EUR".into(),
                },
                rows: rows
                    .iter()
                    .enumerate()
                    .map(|(r, seats)| RowInput {
                        label: ((b'A' + r as u8) as char).to_string(),
                        seats: SeatsInput::Count(i64::from(*seats)),
                    })
                    .collect(),
            })
            .collect(),
    };
    SeatingPlan::parse(input, "seating").expect("valid plan")
}

/// General admission ticket types with these capacities, at 500 cents each.
pub fn general(types: &[(&str, u32)]) -> SeatingPlan {
    let input = SeatingInput::General {
        ticket_types: types
            .iter()
            .map(|(name, capacity)| TicketTypeInput {
                name: (*name).into(),
                price: PriceInput {
                    amount: 500,
                    currency: "EUR".into(),
                },
                capacity: i64::from(*capacity),
            })
            .collect(),
    };
    SeatingPlan::parse(input, "seating").expect("valid plan")
}

/// A performance on sale a week from `now` (its event published) with this plan, a
/// 10-minute hold and at most `max_per_booking` units per booking.
pub async fn performance(
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
    seating: SeatingPlan,
    max_per_booking: u32,
) -> Performance {
    let event_id = event(store).await;
    usher_app::catalog::update_event(
        store.as_ref(),
        event_id.into(),
        EventPatch {
            status: Some(EventStatus::Published),
            ..EventPatch::default()
        },
        now,
        &Audit::system(),
    )
    .await
    .expect("publish event");
    store
        .create_performance(
            NewPerformance {
                event_id: event_id.into(),
                starts_at: now + Duration::days(7),
                on_sale_at: None,
                waiting_room: false,
                hold_ttl: HoldTtl::default(),
                max_per_booking: MaxPerBooking::parse(i64::from(max_per_booking)).expect("max"),
                seating,
            },
            &Audit::system(),
        )
        .await
        .expect("create performance")
}
