//! Authorization against the account as it is now.
//!
//! An access token only says who is calling and in which session; the role, whether
//! the account is disabled or gone, and whether the session was logged out or revoked
//! are read from the database. So a demoted admin is refused admin work on the very next
//! request, and a logout ends the access token with its session.
//!
//! To keep that read off the hot path, each instance remembers answers per session for
//! a few seconds. Every change that matters (a role or state change, a logout, a
//! revocation) makes the instance that did it forget at once and announce the change
//! through the store (PostgreSQL notifications reach every instance; SQLite runs one), so
//! other instances forget as well. [`REMEMBERED_FOR`] only bounds how long a lost
//! announcement (a crash between commit and notify, a dropped link) can keep an old
//! answer; a dropped link also makes the receiver forget everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use usher_core::{AccessRefusal, Role, Standing};
use usher_store::{AccountNotice, Store};

use crate::auth::AccessClaims;
use crate::extract::Caller;
use crate::problem::ApiError;

/// How long an answer is remembered without any announcement.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(5);
/// Sessions remembered at most; past this, answers past their time are dropped first.
const MOST_REMEMBERED: usize = 100_000;

/// The per-instance memory of who may do what.
#[derive(Default)]
pub struct Access {
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    sessions: HashMap<Uuid, Remembered>,
    /// Rises with every forgetting; an answer read before it is not kept after it.
    generation: u64,
}

struct Remembered {
    user_id: Uuid,
    verdict: Result<Role, AccessRefusal>,
    at: Instant,
}

impl Access {
    /// The caller these claims stand for, if the account and session admit them now.
    pub async fn authorize(
        &self,
        store: &dyn Store,
        claims: AccessClaims,
    ) -> Result<Caller, ApiError> {
        let verdict = match self.recall(claims) {
            Some(verdict) => verdict,
            None => {
                let generation = self.generation();
                let standing = store
                    .standing(claims.user_id.into(), claims.session_id)
                    .await?;
                let verdict = Standing::admit(standing);
                self.remember(claims, verdict, generation);
                verdict
            }
        };
        match verdict {
            Ok(role) => Ok(Caller {
                id: claims.user_id,
                role,
                session_id: claims.session_id,
            }),
            Err(refusal) => {
                metrics::counter!("usher_access_refused_total", "why" => refusal_label(refusal))
                    .increment(1);
                Err(ApiError::Unauthorized(refusal.message()))
            }
        }
    }

    /// Drops what is remembered of the account or session the notice names.
    pub fn forget(&self, notice: AccountNotice) {
        let Ok(mut memory) = self.memory.lock() else {
            return;
        };
        memory.generation += 1;
        match notice {
            AccountNotice::Account(user_id) => {
                memory.sessions.retain(|_, r| r.user_id != user_id);
            }
            AccountNotice::Session(session_id) => {
                memory.sessions.remove(&session_id);
            }
            AccountNotice::Everything => memory.sessions.clear(),
        }
    }

    fn recall(&self, claims: AccessClaims) -> Option<Result<Role, AccessRefusal>> {
        let memory = self.memory.lock().ok()?;
        let remembered = memory.sessions.get(&claims.session_id)?;
        (remembered.user_id == claims.user_id && remembered.at.elapsed() < REMEMBERED_FOR)
            .then_some(remembered.verdict)
    }

    fn generation(&self) -> u64 {
        self.memory.lock().map_or(0, |m| m.generation)
    }

    /// Keeps an answer read at `generation`, unless something was forgotten since (the
    /// answer may predate that change).
    fn remember(
        &self,
        claims: AccessClaims,
        verdict: Result<Role, AccessRefusal>,
        generation: u64,
    ) {
        let Ok(mut memory) = self.memory.lock() else {
            return;
        };
        if memory.generation != generation {
            return;
        }
        if memory.sessions.len() >= MOST_REMEMBERED {
            memory
                .sessions
                .retain(|_, r| r.at.elapsed() < REMEMBERED_FOR);
            if memory.sessions.len() >= MOST_REMEMBERED {
                return;
            }
        }
        memory.sessions.insert(
            claims.session_id,
            Remembered {
                user_id: claims.user_id,
                verdict,
                at: Instant::now(),
            },
        );
    }
}

fn refusal_label(refusal: AccessRefusal) -> &'static str {
    match refusal {
        AccessRefusal::NoAccount => "no_account",
        AccessRefusal::Disabled => "disabled",
        AccessRefusal::SessionEnded => "session_ended",
    }
}

/// Applies other instances' notices (and this one's, coming back) until `stop`.
pub async fn follow(state: crate::state::AppState, mut stop: watch::Receiver<bool>) {
    let mut notices = match state.store().account_notices().await {
        Ok(Some(notices)) => notices,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "could not follow account notices; answers are kept only {REMEMBERED_FOR:?}");
            return;
        }
    };
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => state.access().forget(notice),
                None => return,
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            user_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn an_answer_is_recalled_until_its_account_or_session_is_forgotten() {
        let access = Access::default();
        let (ann, bob) = (claims(), claims());
        for who in [ann, bob] {
            access.remember(who, Ok(Role::Admin), access.generation());
        }
        assert_eq!(access.recall(ann), Some(Ok(Role::Admin)));
        access.forget(AccountNotice::Account(ann.user_id));
        assert_eq!(access.recall(ann), None);
        assert_eq!(access.recall(bob), Some(Ok(Role::Admin)));
        access.forget(AccountNotice::Session(bob.session_id));
        assert_eq!(access.recall(bob), None);
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept_after_it() {
        let access = Access::default();
        let ann = claims();
        let read_at = access.generation();
        // The role changes while the old answer is on its way back from the database.
        access.forget(AccountNotice::Account(ann.user_id));
        access.remember(ann, Ok(Role::Admin), read_at);
        assert_eq!(access.recall(ann), None);
    }

    #[test]
    fn a_session_is_recalled_only_for_its_own_user() {
        let access = Access::default();
        let ann = claims();
        access.remember(ann, Ok(Role::Customer), access.generation());
        let other = AccessClaims {
            user_id: Uuid::now_v7(),
            session_id: ann.session_id,
        };
        assert_eq!(access.recall(other), None);
    }
}
