//! The waiting list's rules for joining: who may join, and who must wait rather than
//! hold. (Who is served next is `usher_app::waiting_list::serve`'s walk down the line.)

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
}
