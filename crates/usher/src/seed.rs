//! `usher seed`: demo accounts and events, safe to run again (it only adds what is
//! missing). The demo passwords are printed because they are public by design: never
//! seed a production database.

use anyhow::Context;

use chrono::Duration;
use usher_core::inventory::{
    PriceInput, RowInput, SeatingInput, SeatsInput, SectionInput, TicketTypeInput,
};
use usher_core::{
    Currency, Email, EventAttributes, EventStatus, EventText, EventTitle, HoldTtl, MaxPerBooking,
    Money, PageLimit, Password, Role, SeatingPlan, User, UserName,
};
use usher_store::{
    EventPatch, EventQuery, EventScope, NewEvent, NewPerformance, NewUser, Store, WalletCredit,
};

const ACCOUNTS: [(&str, &str, &str, Role); 3] = [
    (
        "admin@usher.example",
        "Ada Admin",
        "usher-demo-admin",
        Role::Admin,
    ),
    (
        "organizer@usher.example",
        "Olu Organizer",
        "usher-demo-organizer",
        Role::Organizer,
    ),
    (
        "customer@usher.example",
        "Cat Customer",
        "usher-demo-customer",
        Role::Customer,
    ),
];

/// The demo customer's store credit, in euro cents.
const DEMO_CREDIT: i64 = 5_000;

const EVENTS: [(&str, &str, &str); 2] = [
    (
        "Jazz on the Roof",
        "Skyline Hall",
        "An evening of modern jazz under the open sky.",
    ),
    (
        "Midnight Cinema: Metropolis",
        "Odeon Screen 2",
        "The 1927 classic, restored, with a live score.",
    ),
];

pub async fn run(store: &dyn Store) -> anyhow::Result<()> {
    let mut users = Vec::new();
    for (email, name, password, role) in ACCOUNTS {
        users.push(ensure_user(store, email, name, password, role).await?);
    }
    let organizer = &users[1];
    for (i, (title, venue, description)) in EVENTS.into_iter().enumerate() {
        let event_id = ensure_event(store, organizer, title, venue, description).await?;
        // The first event has reserved seating, the second general admission.
        if store
            .performances_of_event(event_id.into())
            .await?
            .is_empty()
        {
            let seating = if i == 0 { demo_hall() } else { demo_floor() };
            for days in [7, 14] {
                store
                    .create_performance(
                        NewPerformance {
                            on_sale_at: None,
                            waiting_room: false,
                            event_id: event_id.into(),
                            starts_at: usher_store::now() + Duration::days(days),
                            hold_ttl: HoldTtl::default(),
                            max_per_booking: MaxPerBooking::default(),
                            seating: seating.clone(),
                        },
                        &usher_store::Audit::system().note("by", "usher seed"),
                    )
                    .await?;
            }
        }
    }
    // The demo customer has store credit to try paying from the wallet (given once).
    let customer = &users[2];
    if store.wallet_balances(customer.id).await?.is_empty() {
        store
            .wallet_credit(WalletCredit {
                user_id: customer.id,
                amount: Money::new(DEMO_CREDIT, Currency::parse("EUR")?),
                reason: "Demo store credit".to_owned(),
                audit: usher_store::Audit::system().note("by", "usher seed"),
                now: usher_store::now(),
            })
            .await?;
    }
    println!("Demo data is in place. Accounts (email / password / role):");
    for (email, _, password, role) in ACCOUNTS {
        println!("  {email:<26} {password:<22} {role}");
    }
    Ok(())
}

async fn ensure_user(
    store: &dyn Store,
    email: &str,
    name: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<User> {
    let email = Email::parse(email)?;
    let user = match store.credentials_by_email(&email).await? {
        Some(existing) => existing.user,
        None => {
            let password_hash = usher_server::auth::PasswordPool::new(1, 1)
                .hash(Password::parse(password)?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store
                .create_user(NewUser {
                    email,
                    name: UserName::parse(name)?,
                    password_hash,
                    role,
                    first_account_is_admin: false,
                })
                .await
                .context("creating a demo account")?
        }
    };
    if user.role == role {
        return Ok(user);
    }
    usher_app::accounts::update_user(
        store,
        user.id,
        usher_store::UserChange {
            role: Some(role),
            disabled: None,
        },
        usher_store::now(),
        &usher_store::Audit::system().note("by", "usher seed"),
    )
    .await?
    .context("demo account vanished")
}

/// Two sections: 10 stalls rows of 20 seats, 4 balcony rows of 12.
fn demo_hall() -> SeatingPlan {
    let section = |name: &str, amount, rows: usize, seats| SectionInput {
        name: name.into(),
        price: PriceInput {
            amount,
            currency: "EUR".into(),
        },
        rows: (0..rows)
            .map(|r| RowInput {
                label: ((b'A' + r as u8) as char).to_string(),
                seats: SeatsInput::Count(seats),
            })
            .collect(),
    };
    let input = SeatingInput::Reserved {
        sections: vec![
            section("Stalls", 4500, 10, 20),
            section("Balcony", 2900, 4, 12),
        ],
    };
    SeatingPlan::parse(input, "seating").unwrap_or_else(|_| unreachable!("demo plan is valid"))
}

/// Standing tickets and a few VIP ones.
fn demo_floor() -> SeatingPlan {
    let ticket = |name: &str, amount, capacity| TicketTypeInput {
        name: name.into(),
        price: PriceInput {
            amount,
            currency: "EUR".into(),
        },
        capacity,
    };
    let input = SeatingInput::General {
        ticket_types: vec![ticket("Standing", 1500, 300), ticket("VIP", 6000, 20)],
    };
    SeatingPlan::parse(input, "seating").unwrap_or_else(|_| unreachable!("demo plan is valid"))
}

async fn ensure_event(
    store: &dyn Store,
    organizer: &User,
    title: &str,
    venue: &str,
    description: &str,
) -> anyhow::Result<uuid::Uuid> {
    let existing = store
        .list_events(EventQuery {
            scope: EventScope::All,
            title_contains: Some(title.to_owned()),
            limit: PageLimit::parse(Some(PageLimit::MAX))?,
            after: None,
        })
        .await?;
    if let Some(event) = existing
        .items
        .iter()
        .find(|e| e.organizer_id == organizer.id && e.title.as_str() == title)
    {
        return Ok(event.id.uuid());
    }
    let event = store
        .create_event(
            NewEvent {
                organizer_id: organizer.id,
                title: EventTitle::parse(title)?,
                description: EventText::parse(description, EventText::DESCRIPTION_MAX_CHARS)?,
                venue: EventText::parse(venue, EventText::VENUE_MAX_CHARS)?,
                attributes: EventAttributes::parse(serde_json::json!({ "demo": true }))?,
            },
            &usher_store::Audit::system().note("by", "usher seed"),
        )
        .await?;
    usher_app::catalog::update_event(
        store,
        event.id,
        EventPatch {
            status: Some(EventStatus::Published),
            ..Default::default()
        },
        usher_store::now(),
        &usher_store::Audit::system().note("by", "usher seed"),
    )
    .await?;
    Ok(event.id.uuid())
}
