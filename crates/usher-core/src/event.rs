//! Events: what an organizer puts on sale (a concert, a film, a tour), with its status.
//! Performances and seats hang under events; they live in their own modules.

use std::fmt;

use crate::{EventId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ParseError;
use crate::text::{self, Lines};

/// Where an event is in its life. Only published events are visible to the public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Draft,
    Published,
    Cancelled,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::Published => "published",
            EventStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "draft" => Ok(EventStatus::Draft),
            "published" => Ok(EventStatus::Published),
            "cancelled" => Ok(EventStatus::Cancelled),
            _ => Err(ParseError::new(
                "a status is one of \"draft\", \"published\", \"cancelled\"",
            )),
        }
    }

    /// Draft and published go back and forth; cancelling is final, because buyers have
    /// been told and refunds may be under way.
    pub fn can_become(self, next: EventStatus) -> bool {
        self == next || self != EventStatus::Cancelled
    }

    /// Whether the public (anyone but the owner and admins) may see an event.
    pub fn is_public(self) -> bool {
        matches!(self, EventStatus::Published | EventStatus::Cancelled)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event title: 1 to 200 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EventTitle(String);

impl EventTitle {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        text::required(raw, Self::MAX_CHARS, Lines::One, "a title").map(Self)
    }

    /// A title read back from the store, which only ever held parsed ones.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of an event (description, venue): trimmed, bounded, may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct EventText(String);

impl EventText {
    pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
    pub const VENUE_MAX_CHARS: usize = 200;

    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ParseError> {
        text::clean(raw, max_chars, Lines::Many).map(Self)
    }

    /// A text read back from the store, which only ever held parsed ones.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-form event details (genre, age limit, line-up …): a JSON object of bounded size.
/// The seeds keep these in MongoDB; a JSON column does the job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct EventAttributes(serde_json::Value);

impl EventAttributes {
    pub const MAX_BYTES: usize = 16 * 1024;

    pub fn parse(value: serde_json::Value) -> Result<Self, ParseError> {
        if !value.is_object() {
            return Err(ParseError::new("attributes must be a JSON object"));
        }
        if value.to_string().len() > Self::MAX_BYTES {
            return Err(ParseError::new(format!(
                "attributes take at most {} bytes of JSON",
                Self::MAX_BYTES
            )));
        }
        if has_nul(&value) {
            // PostgreSQL's jsonb cannot hold U+0000 (found by fuzzing: it was a 500).
            return Err(ParseError::new(
                "attributes may not contain the NUL character (\\u0000)",
            ));
        }
        Ok(Self(value))
    }

    pub fn empty() -> Self {
        Self(serde_json::Value::Object(Default::default()))
    }

    /// For values read back from the store, which only ever holds parsed attributes.
    pub fn from_stored(value: serde_json::Value) -> Self {
        Self(value)
    }

    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }
}

/// Whether any key or string inside `value` contains U+0000.
fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub organizer_id: UserId,
    pub title: EventTitle,
    pub description: EventText,
    pub venue: EventText,
    pub attributes: EventAttributes,
    pub status: EventStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who is looking at events, which decides what they may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    Customer(UserId),
    Organizer(UserId),
    Admin(UserId),
}

impl Viewer {
    pub fn new(user_id: UserId, role: crate::Role) -> Self {
        match role {
            crate::Role::Admin => Viewer::Admin(user_id),
            crate::Role::Organizer => Viewer::Organizer(user_id),
            crate::Role::Customer => Viewer::Customer(user_id),
        }
    }

    /// Whether this viewer may change the event (and see it whatever its status).
    pub fn manages(self, event: &Event) -> bool {
        match self {
            Viewer::Admin(_) => true,
            Viewer::Organizer(id) => event.organizer_id == id,
            Viewer::Customer(_) | Viewer::Anonymous => false,
        }
    }

    /// Whether this viewer may see the event at all. Anything else answers 404.
    pub fn sees(self, event: &Event) -> bool {
        event.status.is_public() || self.manages(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(owner: UserId, status: EventStatus) -> Event {
        Event {
            id: EventId::generate(),
            organizer_id: owner,
            title: EventTitle::parse("Night").unwrap(),
            description: EventText::default(),
            venue: EventText::default(),
            attributes: EventAttributes::empty(),
            status,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn cancelled_is_final() {
        assert!(EventStatus::Draft.can_become(EventStatus::Published));
        assert!(EventStatus::Published.can_become(EventStatus::Draft));
        assert!(EventStatus::Published.can_become(EventStatus::Cancelled));
        assert!(!EventStatus::Cancelled.can_become(EventStatus::Published));
        assert!(!EventStatus::Cancelled.can_become(EventStatus::Draft));
        assert!(EventStatus::Cancelled.can_become(EventStatus::Cancelled));
    }

    #[test]
    fn drafts_are_seen_only_by_their_owner_and_admins() {
        let owner = UserId::generate();
        let draft = event(owner, EventStatus::Draft);
        assert!(Viewer::Organizer(owner).sees(&draft));
        assert!(Viewer::Admin(UserId::generate()).sees(&draft));
        assert!(!Viewer::Organizer(UserId::generate()).sees(&draft));
        assert!(!Viewer::Customer(UserId::generate()).sees(&draft));
        assert!(!Viewer::Anonymous.sees(&draft));
        assert!(Viewer::Anonymous.sees(&event(owner, EventStatus::Published)));
    }

    #[test]
    fn only_owner_and_admin_manage() {
        let owner = UserId::generate();
        let published = event(owner, EventStatus::Published);
        assert!(Viewer::Organizer(owner).manages(&published));
        assert!(!Viewer::Organizer(UserId::generate()).manages(&published));
        assert!(!Viewer::Customer(owner).manages(&published));
    }

    #[test]
    fn title_is_required_and_bounded() {
        assert!(EventTitle::parse("  ").is_err());
        assert!(EventTitle::parse(&"t".repeat(201)).is_err());
        assert!(EventTitle::parse("Line\nbreak").is_err());
        assert_eq!(EventTitle::parse(" Jazz ").unwrap().as_str(), "Jazz");
    }

    #[test]
    fn text_allows_newlines_but_not_other_controls() {
        assert!(EventText::parse("a\nb\tc", 100).is_ok());
        assert!(EventText::parse("a\u{7}", 100).is_err());
        assert!(EventText::parse(&"x".repeat(101), 100).is_err());
    }

    #[test]
    fn attributes_must_be_a_small_object() {
        assert!(EventAttributes::parse(serde_json::json!([1, 2])).is_err());
        assert!(EventAttributes::parse(serde_json::json!({"genre": "jazz"})).is_ok());
        let big = "x".repeat(EventAttributes::MAX_BYTES);
        assert!(EventAttributes::parse(serde_json::json!({ "big": big })).is_err());
    }

    #[test]
    fn attributes_may_not_hold_nul_anywhere() {
        for value in [
            serde_json::json!({"a\u{0}": 1}),
            serde_json::json!({"a": "b\u{0}"}),
            serde_json::json!({"a": [{"b": ["\u{0}"]}]}),
        ] {
            assert!(EventAttributes::parse(value).is_err());
        }
        assert!(EventAttributes::parse(serde_json::json!({"a": ["b", {"c": null}]})).is_ok());
    }
}
