//! How pages write money, times and the API's messages.

use chrono::{DateTime, Utc};

use crate::routes::performances::MoneyView;

/// A value for a URL's query string.
pub fn query_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A seat in a few characters: `Stalls A3`.
pub fn seat_short(section: &str, row: &str, label: &str) -> String {
    format!("{section} {row}{label}")
}

/// `€45.00`, `$12.50`, `£8.00`, `¥4500`, or `12.00 CHF` for currencies without a
/// common sign; the digits after the point are the currency's own minor units.
pub fn money(amount: i64, currency: &str) -> String {
    let written = match usher_core::Currency::parse(currency) {
        Ok(known) => known.format_amount(amount),
        Err(_) => usher_core::Currency::parse("EUR")
            .map(|two| two.format_amount(amount))
            .unwrap_or_else(|_| amount.to_string()),
    };
    let (sign, digits) = match written.strip_prefix('-') {
        Some(digits) => ("-", digits.to_owned()),
        None => ("", written),
    };
    match currency {
        "EUR" => format!("{sign}€{digits}"),
        "USD" => format!("{sign}${digits}"),
        "GBP" => format!("{sign}£{digits}"),
        "JPY" => format!("{sign}¥{digits}"),
        other => format!("{sign}{digits} {other}"),
    }
}

pub fn price(money_view: &MoneyView) -> String {
    money(money_view.amount, &money_view.currency)
}

/// Parses what an organizer types as a price ("45", "45.5", "45.50"; "1500" yen;
/// "4.250" dinar) into the currency's minor units.
pub fn parse_price(text: &str, currency: &str) -> Option<i64> {
    let digits = usher_core::Currency::parse(currency)
        .map(|c| c.minor_units())
        .unwrap_or(2) as usize;
    let text = text.trim();
    let (whole, fraction) = match text.split_once(['.', ',']) {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || whole.len() > 9 {
        return None;
    }
    if fraction.len() > digits || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10i64.pow(digits as u32);
    let minor = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().ok()? * 10i64.pow((digits - fraction.len()) as u32)
    };
    Some(whole.parse::<i64>().ok()? * scale + minor)
}

/// `Sat 12 Dec 2026, 19:30 UTC`.
pub fn when(at: &DateTime<Utc>) -> String {
    at.format("%a %-d %b %Y, %H:%M UTC").to_string()
}

/// A wait in words: "about 3 minutes"; unknown while there is nothing to go by.
pub fn wait(seconds: Option<u64>) -> String {
    match seconds {
        None => "not known yet".to_owned(),
        Some(0) => "any moment now".to_owned(),
        Some(s) if s < 60 => "under a minute".to_owned(),
        Some(s) if s < 3_600 => format!("about {} minutes", s.div_ceil(60)),
        Some(s) => format!("about {} hours", s.div_ceil(3_600)),
    }
}

/// The value an `<input type="datetime-local">` shows (minutes, UTC).
pub fn datetime_local(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M").to_string()
}

/// Reads an `<input type="datetime-local">` value as UTC.
pub fn parse_datetime_local(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|naive| naive.and_utc())
}

/// The API's messages are lower-case clauses; a page shows them as sentences.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Row labels for a plan of `count` rows: A … Z, AA, AB …
pub fn row_label(index: usize) -> String {
    let mut n = index;
    let mut label = Vec::new();
    loop {
        label.push(b'A' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    label.reverse();
    String::from_utf8(label).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_like_a_price_tag() {
        assert_eq!(money(4500, "EUR"), "€45.00");
        assert_eq!(money(1205, "USD"), "$12.05");
        assert_eq!(money(800, "CHF"), "8.00 CHF");
        assert_eq!(money(1500, "JPY"), "¥1500");
        assert_eq!(money(-250, "GBP"), "-£2.50");
    }

    #[test]
    fn prices_parse_from_what_people_type() {
        assert_eq!(parse_price("45", "EUR"), Some(4500));
        assert_eq!(parse_price("45.5", "EUR"), Some(4550));
        assert_eq!(parse_price(" 45,50 ", "EUR"), Some(4550));
        assert_eq!(parse_price("0.05", "EUR"), Some(5));
        assert_eq!(parse_price("45.505", "EUR"), None);
        assert_eq!(parse_price("-4", "EUR"), None);
        assert_eq!(parse_price("abc", "EUR"), None);
        assert_eq!(parse_price("", "EUR"), None);
        assert_eq!(parse_price("1500", "JPY"), Some(1500));
        assert_eq!(parse_price("15.5", "JPY"), None);
    }

    #[test]
    fn row_labels_run_past_z() {
        assert_eq!(row_label(0), "A");
        assert_eq!(row_label(25), "Z");
        assert_eq!(row_label(26), "AA");
        assert_eq!(row_label(27), "AB");
        assert_eq!(row_label(701), "ZZ");
        assert_eq!(row_label(702), "AAA");
    }

    #[test]
    fn messages_become_sentences() {
        assert_eq!(sentence("the seat is taken"), "The seat is taken.");
        assert_eq!(sentence("Done!"), "Done!");
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn datetime_local_round_trips_in_utc() {
        let at = parse_datetime_local("2026-12-12T19:30").unwrap();
        assert_eq!(datetime_local(&at), "2026-12-12T19:30");
        assert_eq!(when(&at), "Sat 12 Dec 2026, 19:30 UTC");
        assert!(parse_datetime_local("tomorrow").is_none());
    }
}
