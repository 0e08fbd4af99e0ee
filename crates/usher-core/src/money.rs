//! Money: integer minor units plus an ISO 4217 currency. Never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// A currency code: three upper-case ASCII letters (`EUR`, `USD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bytes = raw.as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_uppercase) => Ok(Self([*a, *b, *c])),
            _ => Err(ParseError::new(
                "a currency is a three-letter ISO 4217 code such as \"EUR\"",
            )),
        }
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
        let raw = String::deserialize(deserializer)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
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
    fn currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prices_are_bounded() {
        assert!(Money::price(-1, "EUR").is_err());
        assert!(Money::price(0, "EUR").is_ok());
        assert!(Money::price(Money::MAX_PRICE + 1, "EUR").is_err());
        assert!(Money::price(4500, "eur").is_err());
    }
}
