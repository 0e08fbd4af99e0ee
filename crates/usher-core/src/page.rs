//! Keyset pagination: a page size the caller may choose within bounds, and an opaque
//! cursor naming the last item seen. Ids are UUIDv7, so they sort by creation time.

use uuid::Uuid;

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    pub fn parse(raw: Option<u32>) -> Result<Self, ParseError> {
        match raw {
            None => Ok(Self(Self::DEFAULT)),
            Some(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            Some(_) => Err(ParseError::new(format!(
                "limit is between 1 and {}",
                Self::MAX
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

/// Where the next page starts: after the item with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    pub fn after(id: Uuid) -> Self {
        Self(id)
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| ParseError::new("this cursor was not issued by this server"))
    }

    pub fn id(self) -> Uuid {
        self.0
    }

    /// The cursor as clients see it (opaque; only ever handed back to us).
    pub fn encode(self) -> String {
        self.0.simple().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_is_bounded() {
        assert_eq!(PageLimit::parse(None).unwrap().get(), 20);
        assert!(PageLimit::parse(Some(0)).is_err());
        assert!(PageLimit::parse(Some(101)).is_err());
        assert_eq!(PageLimit::parse(Some(100)).unwrap().get(), 100);
    }

    #[test]
    fn cursor_round_trips() {
        let id = Uuid::now_v7();
        assert_eq!(Cursor::parse(&Cursor::after(id).encode()).unwrap().id(), id);
        assert!(Cursor::parse("garbage").is_err());
    }
}
