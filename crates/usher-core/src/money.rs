//! Money: integer minor units plus an ISO 4217 currency. Never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// A currency in use today, from ISO 4217's list (the `iso_currency` crate): `EUR`,
/// `USD`, `JPY`. Codes that name no money a buyer can pay with are refused: `XXX` (no
/// currency), `XTS` (testing), gold and other metals, bond-market units, drawing rights
/// and funds codes (`CHE`, `USN`), as are codes ISO has withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let refused = || {
            ParseError::new(format!(
                "{raw:?} is not a currency in use; give an ISO 4217 code such as \"EUR\""
            ))
        };
        let iso = iso_currency::Currency::from_code(raw).ok_or_else(refused)?;
        let payable = !iso.is_special()
            && !iso.is_fund()
            && iso.is_superseded().is_none()
            && iso.exponent().is_some();
        match raw.as_bytes() {
            [a, b, c] if payable => Ok(Self([*a, *b, *c])),
            _ => Err(refused()),
        }
    }

    /// A currency read back from the store or from JSON this service wrote: any three
    /// capitals, since earlier releases took those before the list above was the rule
    /// (a stored `ZZZ` price still reads; no new one can be made).
    pub fn from_stored(raw: &str) -> Result<Self, ParseError> {
        match raw.as_bytes() {
            [a, b, c] if raw.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(ParseError::new(format!("{raw:?} is not a currency code"))),
        }
    }

    /// Digits after the decimal point: 2 for `EUR`, 0 for `JPY`, 3 for `KWD`. Amounts
    /// are always integers of these minor units.
    pub fn minor_units(&self) -> u32 {
        iso_currency::Currency::from_code(self.as_str())
            .and_then(iso_currency::Currency::exponent)
            .map_or(2, u32::from)
    }

    /// An amount of this currency's minor units written in major units: `4500` EUR is
    /// `45.00`, `4500` JPY is `4500`, `4500` KWD is `4.500`.
    pub fn format_amount(&self, minor: i64) -> String {
        let digits = self.minor_units();
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if digits == 0 {
            return format!("{sign}{abs}");
        }
        let scale = 10u64.pow(digits);
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = digits as usize
        )
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in, see `parse`.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only what this service wrote is read this way; requests parse theirs.
        let raw = String::deserialize(deserializer)?;
        Currency::from_stored(&raw).map_err(serde::de::Error::custom)
    }
}

/// An amount of money. `amount` is in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    /// The largest price of a single ticket we accept (one million major units).
    pub const MAX_PRICE: i64 = 100_000_000;

    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// A ticket price: not negative, not absurd.
    pub fn price(amount: i64, currency: &str) -> Result<Self, ParseError> {
        let currency = Currency::parse(currency)?;
        if amount < 0 {
            return Err(ParseError::new("a price cannot be negative"));
        }
        if amount > Self::MAX_PRICE {
            return Err(ParseError::new(format!(
                "a price is at most {} minor units",
                Self::MAX_PRICE
            )));
        }
        Ok(Self { amount, currency })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_an_iso_4217_code_in_use() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for good in ["USD", "GBP", "JPY", "CHF", "KWD", "XOF"] {
            assert!(Currency::parse(good).is_ok(), "{good}");
        }
        // Not codes, codes of nothing payable, and codes ISO withdrew.
        for bad in [
            "eur", "EU", "EURO", "E1R", "", "ZZZ", "XXX", "XTS", "XAU", "XDR", "CHE", "USN", "DEM",
        ] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minor_units_come_from_the_currency() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            (eur.minor_units(), jpy.minor_units(), kwd.minor_units()),
            (2, 0, 3)
        );
        assert_eq!(eur.format_amount(4500), "45.00");
        assert_eq!(eur.format_amount(-5), "-0.05");
        assert_eq!(jpy.format_amount(4500), "4500");
        assert_eq!(kwd.format_amount(4500), "4.500");
    }

    #[test]
    fn prices_are_bounded() {
        assert!(Money::price(-1, "EUR").is_err());
        assert!(Money::price(0, "EUR").is_ok());
        assert!(Money::price(Money::MAX_PRICE + 1, "EUR").is_err());
        assert!(Money::price(4500, "eur").is_err());
    }
}
