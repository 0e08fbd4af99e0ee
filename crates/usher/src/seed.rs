//! `usher seed`: demo accounts and events, safe to run again (it only adds what is
//! missing). The demo passwords are printed because they are public by design: never
//! seed a production database.

use anyhow::Context;

use usher_core::{
    Email, EventAttributes, EventStatus, EventText, EventTitle, PageLimit, Password, Role, User,
    UserName,
};
use usher_store::{EventPatch, EventQuery, EventScope, NewEvent, NewUser, Store};

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
    for (title, venue, description) in EVENTS {
        ensure_event(store, organizer, title, venue, description).await?;
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
            let password_hash = usher_server::auth::hash_password(Password::parse(password)?)
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
    store
        .set_role(user.id, role)
        .await?
        .context("demo account vanished")
}

async fn ensure_event(
    store: &dyn Store,
    organizer: &User,
    title: &str,
    venue: &str,
    description: &str,
) -> anyhow::Result<()> {
    let existing = store
        .list_events(EventQuery {
            scope: EventScope::All,
            title_contains: Some(title.to_owned()),
            limit: PageLimit::parse(Some(PageLimit::MAX))?,
            after: None,
        })
        .await?;
    if existing
        .items
        .iter()
        .any(|e| e.organizer_id == organizer.id && e.title.as_str() == title)
    {
        return Ok(());
    }
    let event = store
        .create_event(NewEvent {
            organizer_id: organizer.id,
            title: EventTitle::parse(title)?,
            description: EventText::parse(description, EventText::DESCRIPTION_MAX_CHARS)?,
            venue: EventText::parse(venue, EventText::VENUE_MAX_CHARS)?,
            attributes: EventAttributes::parse(serde_json::json!({ "demo": true }))?,
        })
        .await?;
    store
        .update_event(
            event.id,
            EventPatch {
                status: Some(EventStatus::Published),
                ..Default::default()
            },
        )
        .await?;
    Ok(())
}
