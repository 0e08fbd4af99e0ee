//! Usher's domain core: the values and rules of accounts and events.
//!
//! Nothing here knows about HTTP or SQL. Values that come from outside are parsed into
//! the newtypes below once, at the boundary; after that their type says they are valid.

pub mod account;
pub mod event;
pub mod page;

pub use account::{Email, Password, Role, User, UserName};
pub use event::{Event, EventAttributes, EventStatus, EventText, EventTitle, Viewer};
pub use page::{Cursor, PageLimit};

/// Why an outside value was refused. The message is written for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
