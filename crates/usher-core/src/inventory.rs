//! Inventory: performances (dated showings of an event), their seating plans, and the
//! units — one row per sellable place — that holds and bookings take.
//!
//! Reserved seating and general admission share one mechanism: a GA ticket type is a
//! set of units without labels. A hold takes units; it never decrements a counter.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Currency, Money};
use crate::{
    BookingId, EventId, FieldIssue, ParseError, PaymentId, PerformanceId, TicketTypeId, UnitId,
    UserId,
};

/// The most units one performance may have.
pub const MAX_UNITS_PER_PERFORMANCE: usize = 200_000;
/// The most seats one row may have.
pub const MAX_SEATS_PER_ROW: usize = 1_000;
const MAX_NAME_CHARS: usize = 100;
const MAX_LABEL_CHARS: usize = 20;

/// How long a hold lasts before its units go back on sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldTtl(u32);

impl HoldTtl {
    pub const MIN_SECONDS: u32 = 30;
    pub const MAX_SECONDS: u32 = 3_600;
    pub const DEFAULT_SECONDS: u32 = 600;

    pub fn parse(seconds: i64) -> Result<Self, ParseError> {
        if !(i64::from(Self::MIN_SECONDS)..=i64::from(Self::MAX_SECONDS)).contains(&seconds) {
            return Err(ParseError::new(format!(
                "a hold lasts between {} and {} seconds",
                Self::MIN_SECONDS,
                Self::MAX_SECONDS
            )));
        }
        Ok(Self(seconds as u32))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::seconds(i64::from(self.0))
    }
}

impl Default for HoldTtl {
    fn default() -> Self {
        Self(Self::DEFAULT_SECONDS)
    }
}

/// How many units one booking may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPerBooking(u32);

impl MaxPerBooking {
    pub const LIMIT: u32 = 100;
    pub const DEFAULT: u32 = 10;

    pub fn parse(count: i64) -> Result<Self, ParseError> {
        if !(1..=i64::from(Self::LIMIT)).contains(&count) {
            return Err(ParseError::new(format!(
                "max_per_booking is between 1 and {}",
                Self::LIMIT
            )));
        }
        Ok(Self(count as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxPerBooking {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatingKind {
    Reserved,
    General,
}

impl SeatingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatingKind::Reserved => "reserved",
            SeatingKind::General => "general",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "reserved" => Ok(SeatingKind::Reserved),
            "general" => Ok(SeatingKind::General),
            _ => Err(ParseError::new(
                "seating kind is \"reserved\" or \"general\"",
            )),
        }
    }
}

// --- seating plans as organizers send them ------------------------------------------

/// A price as sent: minor units and a currency code, not yet checked.
#[derive(Debug, Clone)]
pub struct PriceInput {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone)]
pub enum SeatsInput {
    /// Seats labelled `1` to `n`.
    Count(i64),
    /// Seats with these labels, in order from one end of the row to the other.
    Labels(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RowInput {
    pub label: String,
    pub seats: SeatsInput,
}

#[derive(Debug, Clone)]
pub struct SectionInput {
    pub name: String,
    pub price: PriceInput,
    pub rows: Vec<RowInput>,
}

#[derive(Debug, Clone)]
pub struct TicketTypeInput {
    pub name: String,
    pub price: PriceInput,
    pub capacity: i64,
}

#[derive(Debug, Clone)]
pub enum SeatingInput {
    Reserved { sections: Vec<SectionInput> },
    General { ticket_types: Vec<TicketTypeInput> },
}

// --- seating plans once checked -------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    pub label: String,
    pub seats: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionPlan {
    pub name: String,
    pub price: Money,
    pub rows: Vec<RowPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTypePlan {
    pub name: String,
    pub price: Money,
    pub capacity: u32,
}

/// A valid seating plan: non-empty, no duplicate names or labels, one currency, at most
/// [`MAX_UNITS_PER_PERFORMANCE`] units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatingPlan {
    pub currency: Currency,
    pub layout: SeatingLayout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatingLayout {
    Reserved(Vec<SectionPlan>),
    General(Vec<TicketTypePlan>),
}

impl SeatingPlan {
    /// Checks a plan, reporting every problem with the path of the field (`field_prefix`
    /// is where the plan sits in the request, e.g. `seating`).
    pub fn parse(input: SeatingInput, field_prefix: &str) -> Result<Self, Vec<FieldIssue>> {
        let mut issues = Vec::new();
        let mut currency: Option<Currency> = None;
        let mut total: usize = 0;
        let mut check = Checking {
            issues: &mut issues,
            currency: &mut currency,
            total: &mut total,
        };
        let layout = match input {
            SeatingInput::Reserved { sections } => {
                SeatingLayout::Reserved(parse_sections(sections, field_prefix, &mut check))
            }
            SeatingInput::General { ticket_types } => {
                SeatingLayout::General(parse_ticket_types(ticket_types, field_prefix, &mut check))
            }
        };
        if total > MAX_UNITS_PER_PERFORMANCE {
            issues.push(FieldIssue::new(
                field_prefix,
                format!("a performance has at most {MAX_UNITS_PER_PERFORMANCE} places; this plan has {total}"),
            ));
        }
        match currency {
            // Every price parsed and agreed on one currency.
            Some(currency) if issues.is_empty() => Ok(SeatingPlan { currency, layout }),
            _ => Err(issues),
        }
    }

    pub fn kind(&self) -> SeatingKind {
        match self.layout {
            SeatingLayout::Reserved(_) => SeatingKind::Reserved,
            SeatingLayout::General(_) => SeatingKind::General,
        }
    }

    /// The plan's priced groups (sections or ticket types), in the organizer's order.
    pub fn price_groups(&self) -> Vec<PriceGroupPlan<'_>> {
        match &self.layout {
            SeatingLayout::Reserved(sections) => sections
                .iter()
                .map(|s| PriceGroupPlan {
                    name: &s.name,
                    price: s.price,
                    capacity: s.rows.iter().map(|r| r.seats.len() as u32).sum(),
                })
                .collect(),
            SeatingLayout::General(types) => types
                .iter()
                .map(|t| PriceGroupPlan {
                    name: &t.name,
                    price: t.price,
                    capacity: t.capacity,
                })
                .collect(),
        }
    }

    /// Every sellable place of the plan, in seat-map order. General admission units
    /// have no labels and sit in one "row" of their ticket type.
    pub fn units(&self) -> Vec<UnitPlan<'_>> {
        let mut units = Vec::with_capacity(self.capacity());
        match &self.layout {
            SeatingLayout::Reserved(sections) => {
                for (group, section) in sections.iter().enumerate() {
                    for (row, row_plan) in section.rows.iter().enumerate() {
                        for (seat, label) in row_plan.seats.iter().enumerate() {
                            units.push(UnitPlan {
                                group,
                                row,
                                seat,
                                row_label: Some(&row_plan.label),
                                seat_label: Some(label),
                                price: section.price,
                            });
                        }
                    }
                }
            }
            SeatingLayout::General(types) => {
                for (group, ticket_type) in types.iter().enumerate() {
                    for seat in 0..ticket_type.capacity as usize {
                        units.push(UnitPlan {
                            group,
                            row: 0,
                            seat,
                            row_label: None,
                            seat_label: None,
                            price: ticket_type.price,
                        });
                    }
                }
            }
        }
        units
    }

    pub fn capacity(&self) -> usize {
        match &self.layout {
            SeatingLayout::Reserved(sections) => sections
                .iter()
                .flat_map(|s| &s.rows)
                .map(|r| r.seats.len())
                .sum(),
            SeatingLayout::General(types) => types.iter().map(|t| t.capacity as usize).sum(),
        }
    }
}

/// What checking a plan gathers as it goes: every problem, the one currency of its
/// prices, and how many places it has.
struct Checking<'a> {
    issues: &'a mut Vec<FieldIssue>,
    currency: &'a mut Option<Currency>,
    total: &'a mut usize,
}

/// Reserved seating: sections of rows of seats, names and labels unique where they
/// must be.
fn parse_sections(
    sections: Vec<SectionInput>,
    field_prefix: &str,
    check: &mut Checking<'_>,
) -> Vec<SectionPlan> {
    let (issues, currency, total) = (&mut *check.issues, &mut *check.currency, &mut *check.total);
    let path = format!("{field_prefix}.sections");
    if sections.is_empty() {
        issues.push(FieldIssue::new(&path, "at least one section is required"));
    }
    let mut names = HashSet::new();
    let mut plans = Vec::with_capacity(sections.len());
    for (i, section) in sections.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = check_name(&section.name, &format!("{at}.name"), issues);
        if let Some(name) = &name
            && !names.insert(name.to_lowercase())
        {
            issues.push(FieldIssue::new(
                format!("{at}.name"),
                "another section already has this name",
            ));
        }
        let price = check_price(&section.price, &format!("{at}.price"), currency, issues);
        if section.rows.is_empty() {
            issues.push(FieldIssue::new(
                format!("{at}.rows"),
                "a section needs at least one row",
            ));
        }
        let mut row_labels = HashSet::new();
        let mut rows = Vec::with_capacity(section.rows.len());
        for (j, row) in section.rows.into_iter().enumerate() {
            let row_at = format!("{at}.rows[{j}]");
            let label = check_label(&row.label, &format!("{row_at}.label"), issues);
            if let Some(label) = &label
                && !row_labels.insert(label.clone())
            {
                issues.push(FieldIssue::new(
                    format!("{row_at}.label"),
                    "another row of this section already has this label",
                ));
            }
            let seats = check_seats(row.seats, &format!("{row_at}.seats"), issues);
            *total = total.saturating_add(seats.as_ref().map_or(0, Vec::len));
            if let (Some(label), Some(seats)) = (label, seats) {
                rows.push(RowPlan { label, seats });
            }
        }
        if let (Some(name), Some(price)) = (name, price) {
            plans.push(SectionPlan { name, price, rows });
        }
    }
    plans
}

/// General admission: ticket types with their capacities, names unique.
fn parse_ticket_types(
    ticket_types: Vec<TicketTypeInput>,
    field_prefix: &str,
    check: &mut Checking<'_>,
) -> Vec<TicketTypePlan> {
    let (issues, currency, total) = (&mut *check.issues, &mut *check.currency, &mut *check.total);
    let path = format!("{field_prefix}.ticket_types");
    if ticket_types.is_empty() {
        issues.push(FieldIssue::new(
            &path,
            "at least one ticket type is required",
        ));
    }
    let mut names = HashSet::new();
    let mut plans = Vec::with_capacity(ticket_types.len());
    for (i, ticket_type) in ticket_types.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = check_name(&ticket_type.name, &format!("{at}.name"), issues);
        if let Some(name) = &name
            && !names.insert(name.to_lowercase())
        {
            issues.push(FieldIssue::new(
                format!("{at}.name"),
                "another ticket type already has this name",
            ));
        }
        let price = check_price(&ticket_type.price, &format!("{at}.price"), currency, issues);
        let capacity = if !(1..=MAX_UNITS_PER_PERFORMANCE as i64).contains(&ticket_type.capacity) {
            issues.push(FieldIssue::new(
                format!("{at}.capacity"),
                format!("capacity is between 1 and {MAX_UNITS_PER_PERFORMANCE}"),
            ));
            None
        } else {
            Some(ticket_type.capacity as u32)
        };
        *total = total.saturating_add(capacity.unwrap_or(0) as usize);
        if let (Some(name), Some(price), Some(capacity)) = (name, price, capacity) {
            plans.push(TicketTypePlan {
                name,
                price,
                capacity,
            });
        }
    }
    plans
}

/// A section or ticket type as stored: a priced group of units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceGroupPlan<'a> {
    pub name: &'a str,
    pub price: Money,
    pub capacity: u32,
}

/// One unit to create: its group, row and seat positions (for ordering and adjacency),
/// its labels (reserved seating only) and its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPlan<'a> {
    pub group: usize,
    pub row: usize,
    pub seat: usize,
    pub row_label: Option<&'a str>,
    pub seat_label: Option<&'a str>,
    pub price: Money,
}

fn check_name(raw: &str, field: &str, issues: &mut Vec<FieldIssue>) -> Option<String> {
    crate::text::required(raw, MAX_NAME_CHARS, crate::text::Lines::One, "a name")
        .map_err(|e| issues.push(FieldIssue::new(field, e.0)))
        .ok()
}

fn check_label(raw: &str, field: &str, issues: &mut Vec<FieldIssue>) -> Option<String> {
    crate::text::required(raw, MAX_LABEL_CHARS, crate::text::Lines::One, "a label")
        .map_err(|e| issues.push(FieldIssue::new(field, e.0)))
        .ok()
}

fn check_price(
    price: &PriceInput,
    field: &str,
    currency: &mut Option<Currency>,
    issues: &mut Vec<FieldIssue>,
) -> Option<Money> {
    match Money::price(price.amount, &price.currency) {
        Err(e) => {
            issues.push(FieldIssue::new(field, e.0));
            None
        }
        Ok(money) => match currency {
            Some(first) if *first != money.currency => {
                issues.push(FieldIssue::new(
                    format!("{field}.currency"),
                    format!("all prices of a performance are in one currency ({first})"),
                ));
                None
            }
            _ => {
                *currency = Some(money.currency);
                Some(money)
            }
        },
    }
}

fn check_seats(
    seats: SeatsInput,
    field: &str,
    issues: &mut Vec<FieldIssue>,
) -> Option<Vec<String>> {
    match seats {
        SeatsInput::Count(n) => {
            if !(1..=MAX_SEATS_PER_ROW as i64).contains(&n) {
                issues.push(FieldIssue::new(
                    field,
                    format!("a row has between 1 and {MAX_SEATS_PER_ROW} seats"),
                ));
                return None;
            }
            Some((1..=n).map(|i| i.to_string()).collect())
        }
        SeatsInput::Labels(labels) => {
            if labels.is_empty() || labels.len() > MAX_SEATS_PER_ROW {
                issues.push(FieldIssue::new(
                    field,
                    format!("a row has between 1 and {MAX_SEATS_PER_ROW} seats"),
                ));
                return None;
            }
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(labels.len());
            let before = issues.len();
            for (k, raw) in labels.iter().enumerate() {
                if let Some(label) = check_label(raw, &format!("{field}[{k}]"), issues) {
                    if !seen.insert(label.clone()) {
                        issues.push(FieldIssue::new(
                            format!("{field}[{k}]"),
                            format!("seat label \"{label}\" appears twice in this row"),
                        ));
                    }
                    out.push(label);
                }
            }
            (issues.len() == before).then_some(out)
        }
    }
}

// --- stored inventory ---------------------------------------------------------------------

/// One sellable place's state as stored. A hold past its `held_until` is free for the
/// next buyer even before the sweeper has run; [`UnitState::effective`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    Available,
    Held,
    Sold,
    Blocked,
}

impl UnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Available => "available",
            UnitState::Held => "held",
            UnitState::Sold => "sold",
            UnitState::Blocked => "blocked",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "available" => Ok(UnitState::Available),
            "held" => Ok(UnitState::Held),
            "sold" => Ok(UnitState::Sold),
            "blocked" => Ok(UnitState::Blocked),
            _ => Err(ParseError::new(format!("unknown unit state {raw:?}"))),
        }
    }

    /// The state a buyer sees at `now`.
    pub fn effective(self, held_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match (self, held_until) {
            (UnitState::Held, Some(until)) if until <= now => UnitState::Available,
            (UnitState::Held, None) => UnitState::Available,
            (state, _) => state,
        }
    }

    /// Whether a hold may take the unit at `now`: it is available, or its hold ran out.
    pub fn free(self, held_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        self.effective(held_until, now) == UnitState::Available
    }

    /// Whether the unit is someone's at `now`: sold, or held by a hold that has not run
    /// out. (A blocked unit is nobody's.)
    pub fn taken(self, held_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        matches!(
            self.effective(held_until, now),
            UnitState::Held | UnitState::Sold
        )
    }

    /// Whether `booking` may have the unit at `now` (a payment arriving for it): the
    /// booking holds it still, even past its time, or the unit is free.
    pub fn takeable_by(
        self,
        holder: Option<BookingId>,
        held_until: Option<DateTime<Utc>>,
        booking: BookingId,
        now: DateTime<Utc>,
    ) -> bool {
        (self == UnitState::Held && holder == Some(booking)) || self.free(held_until, now)
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketType {
    pub id: TicketTypeId,
    pub name: String,
    pub price: Money,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub id: Uuid,
    pub name: String,
    pub price: Money,
}

/// Whether a performance takes place. Cancelling is final: holds are released and
/// confirmed bookings refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerformanceStatus {
    Scheduled,
    Cancelled,
}

impl PerformanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PerformanceStatus::Scheduled => "scheduled",
            PerformanceStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "scheduled" => Ok(PerformanceStatus::Scheduled),
            "cancelled" => Ok(PerformanceStatus::Cancelled),
            _ => Err(ParseError::new(
                "a performance status is \"scheduled\" or \"cancelled\"",
            )),
        }
    }
}

impl fmt::Display for PerformanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dated showing of an event with its own inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Performance {
    pub id: PerformanceId,
    pub event_id: EventId,
    pub starts_at: DateTime<Utc>,
    pub status: PerformanceStatus,
    /// Holds are refused before this moment (none: on sale once the event is published).
    pub on_sale_at: Option<DateTime<Utc>>,
    /// Buyers queue in a waiting room and hold only with an admission from it.
    pub waiting_room: bool,
    pub hold_ttl: HoldTtl,
    pub max_per_booking: MaxPerBooking,
    pub kind: SeatingKind,
    pub currency: Currency,
    pub sections: Vec<Section>,
    pub ticket_types: Vec<TicketType>,
    pub created_at: DateTime<Utc>,
}

/// One sellable place as the seat map shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub id: UnitId,
    pub section: Option<String>,
    pub row: Option<String>,
    pub label: Option<String>,
    pub ticket_type_id: Option<TicketTypeId>,
    pub price: Money,
    /// Effective at the time of reading.
    pub state: UnitState,
}

/// Counts of a performance, or of one section or ticket type, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub blocked: u64,
}

// --- bookings -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    Held,
    Confirmed,
    Expired,
    Cancelled,
    Refunded,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Held => "held",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Expired => "expired",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "held" => Ok(BookingStatus::Held),
            "confirmed" => Ok(BookingStatus::Confirmed),
            "expired" => Ok(BookingStatus::Expired),
            "cancelled" => Ok(BookingStatus::Cancelled),
            "refunded" => Ok(BookingStatus::Refunded),
            _ => Err(ParseError::new(format!("unknown booking status {raw:?}"))),
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BookingStatus::Expired | BookingStatus::Cancelled | BookingStatus::Refunded
        )
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit as a booking took it (its price is the price at the time of the hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedUnit {
    pub unit_id: UnitId,
    pub section: Option<String>,
    pub row: Option<String>,
    pub label: Option<String>,
    pub ticket_type_id: Option<TicketTypeId>,
    pub price: Money,
    /// The ticket's serial, numbered when the booking was confirmed.
    pub ticket: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub id: BookingId,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    /// As stored; see [`Booking::status_at`] for what a reader sees.
    pub status: BookingStatus,
    pub held_until: DateTime<Utc>,
    pub total: Money,
    pub units: Vec<BookedUnit>,
    /// The one payment that confirmed the booking.
    pub paid_by: Option<PaymentId>,
    /// Made by the waiting list for its buyer (an offer), not taken by them.
    pub offer: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Booking {
    /// A held booking past its hold reads as expired, whether or not the sweeper has
    /// recorded it yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> BookingStatus {
        if self.status == BookingStatus::Held && self.held_until <= now {
            BookingStatus::Expired
        } else {
            self.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_hold_is_free_a_live_one_taken_and_its_own_booking_may_still_have_it() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let (past, future) = (
            Some(now - chrono::Duration::seconds(1)),
            Some(now + chrono::Duration::seconds(1)),
        );
        let (mine, theirs) = (
            BookingId::from_uuid(Uuid::from_u128(1)),
            BookingId::from_uuid(Uuid::from_u128(2)),
        );
        use UnitState::*;
        assert!(Available.free(None, now) && !Available.taken(None, now));
        assert!(
            Held.free(past, now) && !Held.taken(past, now),
            "expired: free"
        );
        assert!(Held.free(Some(now), now), "at its deadline, free");
        assert!(!Held.free(future, now) && Held.taken(future, now));
        assert!(!Sold.free(None, now) && Sold.taken(None, now));
        assert!(
            !Blocked.free(None, now) && !Blocked.taken(None, now),
            "blocked: nobody's"
        );
        assert!(
            Held.takeable_by(Some(mine), past, mine, now),
            "still mine past its time"
        );
        assert!(Held.takeable_by(Some(mine), future, mine, now));
        assert!(!Held.takeable_by(Some(theirs), future, mine, now));
        assert!(
            Held.takeable_by(Some(theirs), past, mine, now),
            "theirs ran out"
        );
        assert!(Available.takeable_by(None, None, mine, now));
        assert!(!Sold.takeable_by(Some(mine), None, mine, now));
        assert!(!Blocked.takeable_by(None, None, mine, now));
    }

    fn price(amount: i64) -> PriceInput {
        PriceInput {
            amount,
            currency: "EUR".into(),
        }
    }

    fn row(label: &str, seats: SeatsInput) -> RowInput {
        RowInput {
            label: label.into(),
            seats,
        }
    }

    fn fields(result: Result<SeatingPlan, Vec<FieldIssue>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|i| i.field).collect()
    }

    #[test]
    fn reserved_plan_expands_counts_into_labels() {
        let plan = SeatingPlan::parse(
            SeatingInput::Reserved {
                sections: vec![SectionInput {
                    name: "Stalls".into(),
                    price: price(4500),
                    rows: vec![
                        row("A", SeatsInput::Count(3)),
                        row("B", SeatsInput::Labels(vec!["10".into(), "11".into()])),
                    ],
                }],
            },
            "seating",
        )
        .unwrap();
        assert_eq!(plan.capacity(), 5);
        assert_eq!(plan.kind(), SeatingKind::Reserved);
        let SeatingLayout::Reserved(sections) = plan.layout else {
            panic!()
        };
        assert_eq!(sections[0].rows[0].seats, ["1", "2", "3"]);
    }

    #[test]
    fn duplicate_seat_labels_in_a_row_are_named() {
        let result = SeatingPlan::parse(
            SeatingInput::Reserved {
                sections: vec![SectionInput {
                    name: "Stalls".into(),
                    price: price(4500),
                    rows: vec![row(
                        "A",
                        SeatsInput::Labels(vec!["1".into(), "2".into(), "1".into()]),
                    )],
                }],
            },
            "seating",
        );
        assert_eq!(fields(result), ["seating.sections[0].rows[0].seats[2]"]);
    }

    #[test]
    fn empty_sections_rows_and_bad_prices_are_named() {
        let result = SeatingPlan::parse(
            SeatingInput::Reserved {
                sections: vec![
                    SectionInput {
                        name: "A".into(),
                        price: price(-5),
                        rows: vec![],
                    },
                    SectionInput {
                        name: "a".into(),
                        price: price(10),
                        rows: vec![row("1", SeatsInput::Count(0))],
                    },
                ],
            },
            "seating",
        );
        assert_eq!(
            fields(result),
            [
                "seating.sections[0].price",
                "seating.sections[0].rows",
                "seating.sections[1].name",
                "seating.sections[1].rows[0].seats",
            ]
        );
        assert_eq!(
            fields(SeatingPlan::parse(
                SeatingInput::Reserved { sections: vec![] },
                "seating"
            )),
            ["seating.sections"]
        );
    }

    #[test]
    fn general_capacity_is_bounded_per_type_and_in_total() {
        let tt = |name: &str, capacity| TicketTypeInput {
            name: name.into(),
            price: price(100),
            capacity,
        };
        assert_eq!(
            fields(SeatingPlan::parse(
                SeatingInput::General {
                    ticket_types: vec![tt("Floor", 0)]
                },
                "seating"
            )),
            ["seating.ticket_types[0].capacity"]
        );
        assert_eq!(
            fields(SeatingPlan::parse(
                SeatingInput::General {
                    ticket_types: vec![tt("A", 150_000), tt("B", 150_000)]
                },
                "seating"
            )),
            ["seating"]
        );
        let ok = SeatingPlan::parse(
            SeatingInput::General {
                ticket_types: vec![tt("Floor", 100)],
            },
            "seating",
        );
        assert_eq!(ok.unwrap().capacity(), 100);
    }

    #[test]
    fn one_currency_per_performance() {
        let result = SeatingPlan::parse(
            SeatingInput::General {
                ticket_types: vec![
                    TicketTypeInput {
                        name: "A".into(),
                        price: price(100),
                        capacity: 1,
                    },
                    TicketTypeInput {
                        name: "B".into(),
                        price: PriceInput {
                            amount: 100,
                            currency: "USD".into(),
                        },
                        capacity: 1,
                    },
                ],
            },
            "seating",
        );
        assert_eq!(fields(result), ["seating.ticket_types[1].price.currency"]);
    }

    #[test]
    fn an_expired_hold_reads_as_available() {
        let now = Utc::now();
        assert_eq!(
            UnitState::Held.effective(Some(now), now),
            UnitState::Available
        );
        assert_eq!(
            UnitState::Held.effective(Some(now + Duration::seconds(1)), now),
            UnitState::Held
        );
        assert_eq!(UnitState::Sold.effective(None, now), UnitState::Sold);
    }

    #[test]
    fn ttl_and_max_per_booking_are_bounded() {
        assert!(HoldTtl::parse(29).is_err());
        assert!(HoldTtl::parse(3601).is_err());
        assert_eq!(HoldTtl::parse(600).unwrap().seconds(), 600);
        assert!(MaxPerBooking::parse(0).is_err());
        assert!(MaxPerBooking::parse(101).is_err());
    }
}
