//! Property tests for the parsers at the boundary: whatever a client sends, they answer
//! (never panic), what they accept keeps its promises, and what we hand out parses back.

use proptest::prelude::*;
use uuid::Uuid;

use usher_core::inventory::{
    MAX_UNITS_PER_PERFORMANCE, PriceInput, RowInput, SeatingInput, SeatingPlan, SeatsInput,
    SectionInput, TicketTypeInput,
};
use usher_core::{Currency, Cursor, Money, PageLimit};

fn price() -> impl Strategy<Value = PriceInput> {
    (
        prop_oneof![Just(-1i64), 0..=Money::MAX_PRICE + 1, any::<i64>()],
        prop_oneof![Just("EUR".to_owned()), Just("JPY".to_owned()), ".{0,4}"],
    )
        .prop_map(|(amount, currency)| PriceInput { amount, currency })
}

fn seats() -> impl Strategy<Value = SeatsInput> {
    prop_oneof![
        prop_oneof![-2i64..40, any::<i64>()].prop_map(SeatsInput::Count),
        prop::collection::vec("[A-Z0-9]{0,3}|.{0,25}", 0..6).prop_map(SeatsInput::Labels),
    ]
}

fn seating() -> impl Strategy<Value = SeatingInput> {
    let row = ("[A-Z]{1,2}|.{0,25}", seats()).prop_map(|(label, seats)| RowInput { label, seats });
    let section = (
        "[A-Za-z ]{1,12}|.{0,120}",
        price(),
        prop::collection::vec(row, 0..5),
    )
        .prop_map(|(name, price, rows)| SectionInput { name, price, rows });
    let ticket_type = (
        "[A-Za-z ]{1,12}|.{0,120}",
        price(),
        prop_oneof![-1i64..600, any::<i64>()],
    )
        .prop_map(|(name, price, capacity)| TicketTypeInput {
            name,
            price,
            capacity,
        });
    prop_oneof![
        prop::collection::vec(section, 0..4)
            .prop_map(|sections| SeatingInput::Reserved { sections }),
        prop::collection::vec(ticket_type, 0..4)
            .prop_map(|ticket_types| SeatingInput::General { ticket_types }),
    ]
}

/// Units a plan should have, counted from the input it was built from.
fn expected_units(input: &SeatingInput) -> i128 {
    match input {
        SeatingInput::Reserved { sections } => sections
            .iter()
            .flat_map(|s| &s.rows)
            .map(|row| match &row.seats {
                SeatsInput::Count(n) => i128::from(*n),
                SeatsInput::Labels(labels) => labels.len() as i128,
            })
            .sum(),
        SeatingInput::General { ticket_types } => {
            ticket_types.iter().map(|t| i128::from(t.capacity)).sum()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_seating_plan_is_refused_with_reasons_or_holds_exactly_what_was_asked(input in seating()) {
        let expected = expected_units(&input);
        match SeatingPlan::parse(input, "seating") {
            Ok(plan) => {
                let units = plan.units();
                prop_assert_eq!(units.len(), plan.capacity());
                prop_assert_eq!(units.len() as i128, expected);
                prop_assert!(plan.capacity() >= 1 && plan.capacity() <= MAX_UNITS_PER_PERFORMANCE);
            }
            Err(issues) => {
                prop_assert!(!issues.is_empty());
            }
        }
    }

    #[test]
    fn a_currency_is_three_capital_letters_and_nothing_else(raw in ".{0,5}") {
        let ok = raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase());
        prop_assert_eq!(Currency::parse(&raw).is_ok(), ok);
        if let Ok(currency) = Currency::parse(&raw) {
            prop_assert_eq!(currency.as_str(), raw.as_str());
        }
    }

    #[test]
    fn a_price_is_accepted_exactly_within_its_bounds(amount in any::<i64>(), small in -10i64..=10) {
        for amount in [amount, small, Money::MAX_PRICE + small] {
            let accepted = Money::price(amount, "EUR").is_ok();
            prop_assert_eq!(accepted, (0..=Money::MAX_PRICE).contains(&amount));
        }
    }

    #[test]
    fn a_cursor_we_hand_out_parses_back_and_nothing_else_panics(id in any::<u128>(), raw in ".{0,40}") {
        let cursor = Cursor::after(Uuid::from_u128(id));
        prop_assert_eq!(Cursor::parse(&cursor.encode()).unwrap(), cursor);
        if let Ok(parsed) = Cursor::parse(&raw) {
            prop_assert_eq!(Cursor::parse(&parsed.encode()).unwrap(), parsed);
        }
    }

    #[test]
    fn a_page_limit_is_between_one_and_a_hundred(limit in any::<u32>()) {
        prop_assert_eq!(PageLimit::parse(Some(limit)).is_ok(), (1..=100).contains(&limit));
    }
}
