//! The door: what a scanned ticket's booking and earlier scans say about letting its
//! holder in.

use chrono::{DateTime, Utc};

use crate::BookingStatus;

/// What the door says of a ticket that was not admitted just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Confirmed and never scanned: let in (the conditional write decides who, of
    /// several scanners racing).
    Admit,
    /// Let in before, at this time.
    Already { at: DateTime<Utc> },
    /// The booking is not (or no longer) confirmed: refunded.
    Void,
    /// No such ticket.
    Unknown,
}

/// The verdict on a ticket as stored: its booking's status and when it was let in, if
/// it was; `None` when there is no such ticket.
pub fn judge(ticket: Option<(BookingStatus, Option<DateTime<Utc>>)>) -> Verdict {
    match ticket {
        None => Verdict::Unknown,
        Some((status, _)) if status != BookingStatus::Confirmed => Verdict::Void,
        Some((_, Some(at))) => Verdict::Already { at },
        Some((_, None)) => Verdict::Admit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_confirmed_ticket_never_scanned_is_let_in() {
        let at = Utc::now();
        assert_eq!(judge(None), Verdict::Unknown);
        assert_eq!(judge(Some((BookingStatus::Refunded, None))), Verdict::Void);
        assert_eq!(
            judge(Some((BookingStatus::Refunded, Some(at)))),
            Verdict::Void
        );
        assert_eq!(
            judge(Some((BookingStatus::Confirmed, Some(at)))),
            Verdict::Already { at }
        );
        assert_eq!(
            judge(Some((BookingStatus::Confirmed, None))),
            Verdict::Admit
        );
    }
}
