//! Accounts: an admin changes someone's role, or disables or enables the account.

use chrono::{DateTime, Utc};
use usher_core::ids::UserId;

use usher_core::User;
use usher_store::box_office::{AuditAction, AuditTarget};
use usher_store::{
    AccountTx, Audit, AuditEntry, NewRefreshToken, Rotation, Store, StoreResult, UserChange,
};

/// Changes an account's role, disables or enables it, or both, in one transaction with
/// an audit row per change; disabling revokes every session of it there too. `None`
/// when there is no such account.
pub async fn update_user(
    store: &dyn Store,
    id: UserId,
    change: UserChange,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<Option<User>> {
    let mut tx = store.begin_accounts().await?;
    let ran = change_in(tx.as_mut(), id, change, now, audit).await;
    crate::settle(tx, ran, Option::is_some).await
}

async fn change_in(
    tx: &mut dyn AccountTx,
    id: UserId,
    change: UserChange,
    now: DateTime<Utc>,
    audit: &Audit,
) -> StoreResult<Option<User>> {
    let Some(user) = tx.change_user(id, change, now).await? else {
        return Ok(None);
    };
    if change.disabled == Some(true) {
        tx.revoke_sessions(id, now).await?;
    }
    for entry in user_change_audit(audit, id, change, now) {
        tx.insert_audit(&entry).await?;
    }
    Ok(Some(user))
}

/// The audit rows of an admin's change to an account: one per thing changed.
pub fn user_change_audit(
    audit: &Audit,
    user_id: UserId,
    change: UserChange,
    now: DateTime<Utc>,
) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    if let Some(role) = change.role {
        let audit = audit.clone().note("role", role.as_str());
        entries.push(audit.entry(
            AuditAction::UserRoleChanged,
            AuditTarget::User(user_id),
            None,
            now,
        ));
    }
    if let Some(disabled) = change.disabled {
        let kind = if disabled {
            AuditAction::UserDisabled
        } else {
            AuditAction::UserEnabled
        };
        entries.push(audit.entry(kind, AuditTarget::User(user_id), None, now));
    }
    entries
}

/// Rotates a refresh token: the live token with `presented_hash` is used up and
/// `replacement` joins its family (its `family_id` and `user_id` are taken from the
/// presented token, whatever the caller put there). A token presented again after it
/// was used or revoked is a replay: its whole family is revoked, and with it the
/// session. Anything else changes nothing.
pub async fn rotate_refresh_token(
    store: &dyn Store,
    presented_hash: &[u8],
    replacement: NewRefreshToken,
    now: DateTime<Utc>,
) -> StoreResult<Rotation> {
    let mut tx = store.begin_accounts().await?;
    let ran = rotate_in(tx.as_mut(), presented_hash, replacement, now).await;
    crate::settle(tx, ran, |rotation| !matches!(rotation, Rotation::Invalid)).await
}

async fn rotate_in(
    tx: &mut dyn AccountTx,
    presented_hash: &[u8],
    replacement: NewRefreshToken,
    now: DateTime<Utc>,
) -> StoreResult<Rotation> {
    if let Some((family_id, user_id)) = tx.use_refresh_token(presented_hash, now).await? {
        let replacement = NewRefreshToken {
            family_id,
            user_id: user_id.into(),
            ..replacement
        };
        tx.insert_refresh_token(&replacement, now).await?;
        return Ok(Rotation::Rotated {
            user_id: user_id.into(),
            session_id: family_id,
        });
    }
    let Some(family_id) = tx.spent_token_family(presented_hash).await? else {
        return Ok(Rotation::Invalid);
    };
    tx.revoke_family(family_id, now).await?;
    Ok(Rotation::Reused {
        session_id: family_id,
    })
}
