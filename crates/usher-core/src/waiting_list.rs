//! The waiting list's rules: who may join, who must wait rather than hold, and who is
//! offered next as the line is walked ([`Line`]; `usher_app::waiting_list::serve` walks
//! it, trying a hold for each entry it allows).

use crate::TicketTypeId;
use chrono::{DateTime, Utc};

use crate::SeatingKind;
use crate::hold::HoldFacts;

/// Why a join is refused before anyone's place is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    NoSuchPerformance,
    /// Cancelled, started, not yet on sale, or its event not published.
    NotOnSale,
    /// General admission: no such ticket type (or none given); reserved: one was given.
    WrongTicketType,
}

/// Whether a join for `ticket_type_id` (`None`: seats) may go on at `now`.
pub fn join_refusal(
    facts: Option<&HoldFacts>,
    ticket_type_id: Option<TicketTypeId>,
    now: DateTime<Utc>,
) -> Option<JoinRefusal> {
    let Some(facts) = facts else {
        return Some(JoinRefusal::NoSuchPerformance);
    };
    if !facts.on_sale(now) {
        return Some(JoinRefusal::NotOnSale);
    }
    let fits = match (facts.kind, ticket_type_id) {
        (SeatingKind::Reserved, None) => true,
        (SeatingKind::General, Some(ticket_type_id)) => facts.sells(ticket_type_id),
        _ => false,
    };
    (!fits).then_some(JoinRefusal::WrongTicketType)
}

/// Whether someone asking for `quantity` must wait: unless enough units are free and
/// nobody else waits for them (then they hold instead).
pub fn must_wait(
    facts: &HoldFacts,
    ticket_type_id: Option<TicketTypeId>,
    quantity: u32,
    free: u64,
) -> bool {
    free < u64::from(quantity) || facts.anyone_waits_for(ticket_type_id)
}

/// How often a later, smaller group may be served while the first in line cannot be.
/// After that nobody behind it is served until it is: units that come back stay with
/// the waiting list until there are enough for the first in line.
pub const MAX_PASSES: i64 = 3;

/// The walk down a waiting list, in line order. Per ticket type (or, `None`, the
/// seats) it remembers the first entry that could not be served, how often that entry
/// has been passed over, and the smallest group refused so far: only a smaller group may
/// go past it (units freed by others meanwhile must not let a later, larger group take
/// them ahead of an earlier one just refused), and at most [`MAX_PASSES`] times.
#[derive(Debug, Default)]
pub struct Line<Entry> {
    heads: Vec<Head<Entry>>,
}

#[derive(Debug)]
struct Head<Entry> {
    scope: Option<TicketTypeId>,
    entry: Entry,
    passed_over: i64,
    smallest_refused: i64,
}

impl<Entry: Copy> Line<Entry> {
    pub fn new() -> Self {
        Self { heads: Vec::new() }
    }

    fn head(&self, scope: Option<TicketTypeId>) -> Option<&Head<Entry>> {
        self.heads.iter().find(|h| h.scope == scope)
    }

    /// Whether a group of `quantity` waiting for `scope` may be tried now.
    pub fn may_try(&self, scope: Option<TicketTypeId>, quantity: i64) -> bool {
        self.head(scope)
            .is_none_or(|h| h.passed_over < MAX_PASSES && quantity < h.smallest_refused)
    }

    /// The group was served. If it went past a first-in-line for its scope, that entry
    /// is passed over once more: it is returned, to be recorded.
    pub fn served(&mut self, scope: Option<TicketTypeId>) -> Option<Entry> {
        let head = self.heads.iter_mut().find(|h| h.scope == scope)?;
        head.passed_over += 1;
        Some(head.entry)
    }

    /// The group could not be served: it becomes the first in line for its scope (as
    /// often passed over as stored), or lowers the bound on who may go past.
    pub fn refused(
        &mut self,
        scope: Option<TicketTypeId>,
        entry: Entry,
        passed_over: i64,
        quantity: i64,
    ) {
        match self.heads.iter_mut().find(|h| h.scope == scope) {
            Some(head) => head.smallest_refused = head.smallest_refused.min(quantity),
            None => self.heads.push(Head {
                scope,
                entry,
                passed_over,
                smallest_refused: quantity,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::Duration;

    use crate::Currency;

    fn facts(
        kind: SeatingKind,
        waited_for: Vec<Option<TicketTypeId>>,
    ) -> (HoldFacts, TicketTypeId) {
        let now = Utc::now();
        let ticket_type = TicketTypeId::generate();
        let facts = HoldFacts {
            currency: Currency::parse("EUR").unwrap(),
            kind,
            open: true,
            starts_at: now + Duration::days(1),
            on_sale_at: None,
            groups: vec![(ticket_type.uuid(), "Floor".into())],
            waited_for,
        };
        (facts, ticket_type)
    }

    #[test]
    fn a_join_fits_the_seating_and_needs_the_sale_open() {
        let now = Utc::now();
        let (general, floor) = facts(SeatingKind::General, vec![]);
        assert_eq!(join_refusal(Some(&general), Some(floor), now), None);
        assert_eq!(
            join_refusal(Some(&general), None, now),
            Some(JoinRefusal::WrongTicketType)
        );
        assert_eq!(
            join_refusal(Some(&general), Some(TicketTypeId::generate()), now),
            Some(JoinRefusal::WrongTicketType)
        );
        let (reserved, section) = facts(SeatingKind::Reserved, vec![]);
        assert_eq!(join_refusal(Some(&reserved), None, now), None);
        assert_eq!(
            join_refusal(Some(&reserved), Some(section), now),
            Some(JoinRefusal::WrongTicketType)
        );
        let later = now + Duration::days(2);
        assert_eq!(
            join_refusal(Some(&reserved), None, later),
            Some(JoinRefusal::NotOnSale)
        );
        assert_eq!(
            join_refusal(None, None, now),
            Some(JoinRefusal::NoSuchPerformance)
        );
    }

    #[test]
    fn nobody_waits_while_enough_is_free_and_nobody_is_ahead() {
        let (quiet, floor) = facts(SeatingKind::General, vec![]);
        assert!(!must_wait(&quiet, Some(floor), 2, 2));
        assert!(must_wait(&quiet, Some(floor), 3, 2));
        let (queued, floor) = facts(SeatingKind::General, vec![None]);
        assert!(must_wait(&queued, Some(floor), 1, 100), "someone is ahead");
    }

    #[test]
    fn the_first_refused_holds_its_place_against_larger_groups_and_too_many_passes() {
        let mut line = Line::new();
        let floor = Some(TicketTypeId::generate());
        assert!(line.may_try(floor, 4), "nobody refused yet: anyone may try");
        line.refused(floor, 1, 0, 4);
        assert!(!line.may_try(floor, 4) && !line.may_try(floor, 5));
        assert!(line.may_try(floor, 3), "a smaller group may go past");
        assert!(line.may_try(None, 8), "the seats have their own line");
        line.refused(floor, 2, 0, 2);
        assert!(
            !line.may_try(floor, 3),
            "the smallest refused bounds who goes past"
        );
        for passes in 1..=MAX_PASSES {
            assert!(line.may_try(floor, 1));
            assert_eq!(
                line.served(floor),
                Some(1),
                "entry 1 passed over ({passes})"
            );
        }
        assert!(
            !line.may_try(floor, 1),
            "passed over often enough: it waits for it"
        );
        assert_eq!(
            line.served(None),
            None,
            "nobody was first in line for the seats"
        );
    }

    #[test]
    fn passes_already_recorded_count() {
        let mut line = Line::new();
        line.refused(None, 'a', MAX_PASSES, 6);
        assert!(!line.may_try(None, 1));
    }
}
