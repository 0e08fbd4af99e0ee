//! The storage story: one script of what the server asks of a store, run on SQLite and
//! on PostgreSQL. A difference between the engines is a bug in one of them.

use std::sync::Arc;

use chrono::{Duration, Utc};
use usher_core::ids::UserId;
use uuid::Uuid;

use usher_core::{
    Cursor, Email, EventAttributes, EventStatus, EventText, EventTitle, PageLimit, Role, Standing,
    UserName,
};
use usher_store::{
    Audit, EventPatch, EventQuery, EventScope, NewEvent, NewRefreshToken, NewUser, Rotation, Store,
    StoreError, UserChange,
};
use usher_testkit::on_each_engine;

fn new_user(email: &str, first_account_is_admin: bool) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        name: UserName::parse("Test Person").unwrap(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        role: Role::Customer,
        first_account_is_admin,
    }
}

fn new_event(organizer_id: UserId, title: &str) -> NewEvent {
    NewEvent {
        organizer_id,
        title: EventTitle::parse(title).unwrap(),
        description: EventText::parse("An evening", 1000).unwrap(),
        venue: EventText::parse("Main Hall", 200).unwrap(),
        attributes: EventAttributes::parse(serde_json::json!({"genre": "jazz", "age": 18}))
            .unwrap(),
    }
}

fn token(user_id: UserId, family_id: Uuid, hash: &[u8], expires_in: Duration) -> NewRefreshToken {
    NewRefreshToken {
        id: Uuid::now_v7(),
        family_id,
        user_id,
        token_hash: hash.to_vec(),
        expires_at: Utc::now() + expires_in,
    }
}

fn query(scope: EventScope, q: Option<&str>, limit: u32, after: Option<Cursor>) -> EventQuery {
    EventQuery {
        scope,
        title_contains: q.map(str::to_owned),
        limit: PageLimit::parse(Some(limit)).unwrap(),
        after,
    }
}

fn role(role: Role) -> UserChange {
    UserChange {
        role: Some(role),
        disabled: None,
    }
}

fn disabling(disabled: bool) -> UserChange {
    UserChange {
        role: None,
        disabled: Some(disabled),
    }
}

async fn organizer(store: &Arc<dyn Store>, email: &str) -> Uuid {
    let user = store.create_user(new_user(email, true)).await.unwrap();
    (usher_app::accounts::update_user(
        store.as_ref(),
        user.id,
        role(Role::Organizer),
        usher_store::now(),
        &Audit::system(),
    )
    .await
    .unwrap()
    .unwrap()
    .id)
        .uuid()
}

on_each_engine! {
    async fn migrations_are_current_and_idempotent(engine) {
        let store = engine.fresh_store().await;
        store.migrate().await.unwrap();
        let readiness = store.readiness().await.unwrap();
        assert!(readiness.is_current(), "{readiness:?}");
        assert!(readiness.known_migrations >= 1);
    }

    async fn first_account_is_admin_and_later_ones_are_not(engine) {
        let store = engine.fresh_store().await;
        let first = store.create_user(new_user("first@example.com", true)).await.unwrap();
        let second = store.create_user(new_user("second@example.com", true)).await.unwrap();
        assert_eq!(first.role, Role::Admin);
        assert_eq!(second.role, Role::Customer);
    }

    async fn first_account_rule_off_when_an_admin_email_is_configured(engine) {
        let store = engine.fresh_store().await;
        let first = store.create_user(new_user("first@example.com", false)).await.unwrap();
        assert_eq!(first.role, Role::Customer);
        // The marker was taken, so turning the rule on later promotes nobody.
        let second = store.create_user(new_user("second@example.com", true)).await.unwrap();
        assert_eq!(second.role, Role::Customer);
    }

    async fn concurrent_first_signups_make_exactly_one_admin(engine) {
        let store = engine.fresh_store().await;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.create_user(new_user(&format!("u{i}@example.com"), true)).await
                })
            })
            .collect();
        let mut admins = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().role == Role::Admin {
                admins += 1;
            }
        }
        assert_eq!(admins, 1);
    }

    async fn duplicate_email_is_a_domain_error(engine) {
        let store = engine.fresh_store().await;
        store.create_user(new_user("ann@example.com", true)).await.unwrap();
        let again = store.create_user(new_user("ANN@example.com ", true)).await;
        assert!(matches!(again, Err(StoreError::EmailTaken)), "{again:?}");
    }

    async fn users_are_found_by_id_and_email(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        assert_eq!(store.user(ann.id).await.unwrap(), Some(ann.clone()));
        let creds = store
            .credentials_by_email(&Email::parse("Ann@Example.com").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(creds.user, ann);
        assert_eq!(creds.password_hash, "$argon2id$not-a-real-hash");
        assert!(store.user(Uuid::now_v7().into()).await.unwrap().is_none());
        assert!(usher_app::accounts::update_user(store.as_ref(), Uuid::now_v7().into(), role(Role::Admin), usher_store::now(), &Audit::system()).await.unwrap().is_none());
    }

    async fn refresh_rotation_then_reuse_revokes_the_family(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        let family = Uuid::now_v7();
        store.insert_refresh_token(token(ann.id, family, b"t1", Duration::days(1))).await.unwrap();
        let now = Utc::now();

        // The caller's family/user are ignored; the presented token's are kept.
        let rotated = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"t1", token(Uuid::nil().into(), Uuid::nil(), b"t2", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(rotated, Rotation::Rotated { user_id: ann.id, session_id: family });
        let rotated = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"t2", token(ann.id, family, b"t3", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(rotated, Rotation::Rotated { user_id: ann.id, session_id: family });

        // t1 was already used: replaying it revokes t3 too.
        let replay = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"t1", token(ann.id, family, b"t4", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(replay, Rotation::Reused { session_id: family });
        let after = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"t3", token(ann.id, family, b"t5", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(after, Rotation::Reused { session_id: family });
        // The replacement of the refused rotation was never stored.
        let t4 = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"t4", token(ann.id, family, b"t6", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(t4, Rotation::Invalid);
    }

    async fn rotation_leaves_other_families_alone(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        let (phone, laptop_family) = (Uuid::now_v7(), Uuid::now_v7());
        store.insert_refresh_token(token(ann.id, phone, b"phone", Duration::days(1))).await.unwrap();
        store.insert_refresh_token(token(ann.id, laptop_family, b"laptop", Duration::days(1))).await.unwrap();
        assert_eq!(store.revoke_refresh_family(b"phone", Utc::now()).await.unwrap(), Some(phone));
        let laptop = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"laptop", token(ann.id, Uuid::nil(), b"laptop2", Duration::days(1)), Utc::now())
            .await
            .unwrap();
        assert_eq!(laptop, Rotation::Rotated { user_id: ann.id, session_id: laptop_family });
        assert_eq!(store.revoke_refresh_family(b"unknown", Utc::now()).await.unwrap(), None);
    }

    async fn a_sessions_standing_follows_its_account_and_its_tokens(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        let bob = store.create_user(new_user("bob@example.com", true)).await.unwrap();
        let (phone, laptop) = (Uuid::now_v7(), Uuid::now_v7());
        store.insert_refresh_token(token(ann.id, phone, b"phone", Duration::days(1))).await.unwrap();
        store.insert_refresh_token(token(ann.id, laptop, b"laptop", Duration::days(1))).await.unwrap();
        let standing = |user: Uuid, session: Uuid| {
            let store = store.clone();
            async move { store.standing(user.into(), session).await.unwrap() }
        };
        assert_eq!(
            standing(ann.id.uuid(), phone).await,
            Some(Standing { role: Role::Admin, disabled: false, session_live: true })
        );
        assert_eq!(store.session_of_refresh_token(b"phone").await.unwrap(), Some(phone));
        // A session is someone's: Bob cannot stand on Ann's.
        assert!(!standing(bob.id.uuid(), phone).await.unwrap().session_live);
        assert_eq!(standing(Uuid::now_v7(), phone).await, None);

        // A rotation keeps the session live; a role change shows at once.
        usher_app::accounts::rotate_refresh_token(store.as_ref(), b"phone", token(ann.id, Uuid::nil(), b"phone2", Duration::days(1)), Utc::now())
            .await
            .unwrap();
        usher_app::accounts::update_user(store.as_ref(), ann.id, role(Role::Customer), usher_store::now(), &Audit::system()).await.unwrap();
        assert_eq!(
            standing(ann.id.uuid(), phone).await,
            Some(Standing { role: Role::Customer, disabled: false, session_live: true })
        );

        // Logging one session out (its refresh token's family) leaves the other.
        assert_eq!(store.revoke_refresh_family(b"phone2", Utc::now()).await.unwrap(), Some(phone));
        assert!(!standing(ann.id.uuid(), phone).await.unwrap().session_live);
        assert!(standing(ann.id.uuid(), laptop).await.unwrap().session_live);

        // Disabling ends every session and shows on the account; enabling lets it sign in
        // again but does not bring old sessions back.
        let disabled = usher_app::accounts::update_user(store.as_ref(), ann.id, disabling(true), usher_store::now(), &Audit::system()).await.unwrap().unwrap();
        assert!(disabled.disabled);
        let now = standing(ann.id.uuid(), laptop).await.unwrap();
        assert!(now.disabled && !now.session_live);
        assert!(store.credentials_by_email(&Email::parse("ann@example.com").unwrap()).await.unwrap().unwrap().user.disabled);
        let enabled = usher_app::accounts::update_user(store.as_ref(), ann.id, disabling(false), usher_store::now(), &Audit::system()).await.unwrap().unwrap();
        assert!(!enabled.disabled);
        assert!(!standing(ann.id.uuid(), laptop).await.unwrap().session_live);
        assert!(usher_app::accounts::update_user(store.as_ref(), Uuid::now_v7().into(), disabling(true), usher_store::now(), &Audit::system()).await.unwrap().is_none());
    }

    async fn expired_and_unknown_refresh_tokens_are_invalid(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        store.insert_refresh_token(token(ann.id, Uuid::now_v7(), b"old", Duration::seconds(-1))).await.unwrap();
        let now = Utc::now();
        let expired = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"old", token(ann.id, Uuid::nil(), b"new", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(expired, Rotation::Invalid);
        let unknown = usher_app::accounts::rotate_refresh_token(store.as_ref(), b"nope", token(ann.id, Uuid::nil(), b"new2", Duration::days(1)), now)
            .await
            .unwrap();
        assert_eq!(unknown, Rotation::Invalid);
    }

    async fn concurrent_rotations_of_one_token_let_at_most_one_through(engine) {
        let store = engine.fresh_store().await;
        let ann = store.create_user(new_user("ann@example.com", true)).await.unwrap();
        store.insert_refresh_token(token(ann.id, Uuid::now_v7(), b"shared", Duration::days(1))).await.unwrap();
        let tasks: Vec<_> = (0..10u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    usher_app::accounts::rotate_refresh_token(store.as_ref(), b"shared", token(ann.id, Uuid::nil(), &[b'n', i], Duration::days(1)), Utc::now())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut rotated = 0;
        for task in tasks {
            match task.await.unwrap() {
                Rotation::Rotated { .. } => rotated += 1,
                Rotation::Reused { .. } => {}
                Rotation::Invalid => panic!("a known token is never invalid here"),
            }
        }
        assert_eq!(rotated, 1);
    }

    async fn settings_keep_the_first_value(engine) {
        let store = engine.fresh_store().await;
        assert_eq!(store.setting_or_insert("jwt", "a").await.unwrap(), "a");
        assert_eq!(store.setting_or_insert("jwt", "b").await.unwrap(), "a");
    }

    async fn events_round_trip_with_attributes(engine) {
        let store = engine.fresh_store().await;
        let org = organizer(&store, "org@example.com").await;
        let created = store.create_event(new_event(org.into(), "Jazz Night"), &Audit::system()).await.unwrap();
        assert_eq!(created.status, EventStatus::Draft);
        assert_eq!(created.attributes.as_value()["genre"], "jazz");
        let read = store.event(created.id).await.unwrap().unwrap();
        assert_eq!(read, created);
        assert!(store.event(Uuid::now_v7().into()).await.unwrap().is_none());
    }

    async fn patch_changes_only_given_fields_and_guards_status(engine) {
        let store = engine.fresh_store().await;
        let org = organizer(&store, "org@example.com").await;
        let event = store.create_event(new_event(org.into(), "Jazz Night"), &Audit::system()).await.unwrap();
        let patched = usher_app::catalog::update_event(store.as_ref(), event.id, EventPatch {
                title: Some(EventTitle::parse("Late Jazz").unwrap()),
                status: Some(EventStatus::Published),
                ..Default::default()
            }, usher_store::now(), &Audit::system()).await
            .unwrap()
            .unwrap();
        assert_eq!(patched.title.as_str(), "Late Jazz");
        assert_eq!(patched.venue, event.venue);
        assert_eq!(patched.status, EventStatus::Published);
        assert!(patched.updated_at >= event.updated_at);
        assert_eq!(store.event(event.id).await.unwrap().unwrap(), patched);

        usher_app::catalog::update_event(store.as_ref(), event.id, EventPatch { status: Some(EventStatus::Cancelled), ..Default::default() }, usher_store::now(), &Audit::system()).await
            .unwrap();
        let revive = usher_app::catalog::update_event(store.as_ref(), event.id, EventPatch { status: Some(EventStatus::Published), ..Default::default() }, usher_store::now(), &Audit::system()).await;
        assert!(matches!(revive, Err(StoreError::IllegalStatusChange { .. })), "{revive:?}");
        assert_eq!(store.event(event.id).await.unwrap().unwrap().status, EventStatus::Cancelled);
        assert!(usher_app::catalog::update_event(store.as_ref(), Uuid::now_v7().into(), EventPatch::default(), usher_store::now(), &Audit::system()).await.unwrap().is_none());
    }

    async fn listing_respects_scope_search_and_pages(engine) {
        let store = engine.fresh_store().await;
        let ann = organizer(&store, "ann@example.com").await;
        let bob = organizer(&store, "bob@example.com").await;
        let publish = EventPatch { status: Some(EventStatus::Published), ..Default::default() };
        let mut published = Vec::new();
        for i in 0..5 {
            let e = store.create_event(new_event(ann.into(), &format!("Jazz {i}")), &Audit::system()).await.unwrap();
            usher_app::catalog::update_event(store.as_ref(), e.id, publish.clone(), usher_store::now(), &Audit::system()).await.unwrap();
            published.push(e.id);
        }
        let ann_draft = store.create_event(new_event(ann.into(), "Ann's 100% _draft_"), &Audit::system()).await.unwrap();
        let bob_draft = store.create_event(new_event(bob.into(), "Bob's Draft"), &Audit::system()).await.unwrap();

        let public = store.list_events(query(EventScope::Public, None, 100, None)).await.unwrap();
        let ids: Vec<_> = public.items.iter().map(|e| e.id).collect();
        published.reverse();
        assert_eq!(ids, published, "public sees published events, newest first");
        assert!(public.next.is_none());

        let anns = store.list_events(query(EventScope::PublicAndOwnedBy(ann), None, 100, None)).await.unwrap();
        assert_eq!(anns.items.len(), 6);
        assert!(anns.items.iter().any(|e| e.id == ann_draft.id));
        assert!(!anns.items.iter().any(|e| e.id == bob_draft.id));

        let all = store.list_events(query(EventScope::All, None, 100, None)).await.unwrap();
        assert_eq!(all.items.len(), 7);

        // Only one's own, drafts included, nobody else's published events.
        let bobs_own = store.list_events(query(EventScope::OwnedBy(bob), None, 100, None)).await.unwrap();
        assert_eq!(bobs_own.items.iter().map(|e| e.id).collect::<Vec<_>>(), [bob_draft.id]);
        let anns_own = store.list_events(query(EventScope::OwnedBy(ann), None, 100, None)).await.unwrap();
        assert_eq!(anns_own.items.len(), 6);
        assert!(anns_own.items.iter().all(|e| e.organizer_id == ann.into()));

        // Pages of two walk the five published events without gaps or repeats.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_events(query(EventScope::Public, None, 2, after)).await.unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.iter().map(|e| e.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, published);

        // Search is a case-insensitive substring; LIKE wildcards in q match literally.
        let jazz = store.list_events(query(EventScope::Public, Some("JAZZ 3"), 100, None)).await.unwrap();
        assert_eq!(jazz.items.len(), 1);
        let literal = store.list_events(query(EventScope::All, Some("100% _d"), 100, None)).await.unwrap();
        assert_eq!(literal.items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ann_draft.id]);
        let wildcard = store.list_events(query(EventScope::All, Some("%"), 100, None)).await.unwrap();
        assert_eq!(wildcard.items.len(), 1);
    }

    async fn search_folds_non_ascii_case_the_same_on_every_engine(engine) {
        let store = engine.fresh_store().await;
        let org = organizer(&store, "org@example.com").await;
        let e = store.create_event(new_event(org.into(), "ÉTÉ Festival"), &Audit::system()).await.unwrap();
        let found = store.list_events(query(EventScope::All, Some("été"), 10, None)).await.unwrap();
        assert_eq!(found.items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![e.id]);
    }
}
