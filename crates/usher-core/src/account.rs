//! Accounts: who a person is (email, name), how they prove it (password) and what they
//! may do (role). Tokens and hashing live in the server; this module only holds the rules.

use std::fmt;

use crate::UserId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use unicode_normalization::UnicodeNormalization;

use crate::ParseError;
use crate::text::{self, Lines};

/// A normalised email address: trimmed and lower-cased, so `Ann@Example.com` and
/// `ann@example.com ` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    /// The form every account lookup (and every per-account limit) uses: trimmed and
    /// lower-cased. One function, so that a limiter keyed on it and the sign-in that
    /// looks the account up can never disagree about which account `" Ann@x.org"` is.
    /// Unicode's composed form (NFC) too, so `zoë` typed with a combining diaeresis is
    /// the same account as `zoë` typed with one key.
    pub fn normalise(raw: &str) -> String {
        raw.trim().nfc().collect::<String>().to_lowercase()
    }

    /// What two addresses that look the same on screen have in common: the confusable
    /// skeleton of Unicode's UTS #39 (a Cyrillic `а` and a Latin `a` share one). The store
    /// keeps it unique, so a look-alike of an existing account cannot be signed up to
    /// shadow it in lists or mails. It is a key, never shown.
    pub fn look_alike_key(&self) -> String {
        unicode_security::skeleton(&self.0).collect()
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let normalised = Self::normalise(raw);
        if normalised.is_empty() {
            return Err(ParseError::new("an email address is required"));
        }
        if normalised.len() > Self::MAX_LEN {
            return Err(ParseError::new(format!(
                "an email address has at most {} characters",
                Self::MAX_LEN
            )));
        }
        // `email_address` follows RFC 5321/5322; on top of it we insist on a dot in the
        // domain, because a mail to `ann@localhost` will never reach a real buyer.
        let parsed = email_address::EmailAddress::parse_with_options(
            &normalised,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .map_err(|_| ParseError::new("this is not a valid email address"))?;
        if !parsed.domain().contains('.') || parsed.domain().ends_with('.') {
            return Err(ParseError::new("this is not a valid email address"));
        }
        Ok(Self(normalised))
    }

    /// An address read back from the store, which only ever held parsed ones (some
    /// parsed by earlier, more lenient rules: they are still shown as they were).
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed at signup. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    /// Argon2 accepts far more, but hashing megabytes is a denial-of-service lever.
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(ParseError::new(format!(
                "a password has at least {} characters",
                Self::MIN_CHARS
            )));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(ParseError::new(format!(
                "a password has at most {} bytes",
                Self::MAX_BYTES
            )));
        }
        if raw.trim().is_empty() {
            return Err(ParseError::new("a password cannot be only spaces"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A person's display name: 1 to 100 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        text::required(raw, Self::MAX_CHARS, Lines::One, "a name").map(Self)
    }

    /// A name read back from the store, which only ever held parsed ones.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an account may do. Organizers own events; admins may do anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Organizer,
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Organizer => "organizer",
            Role::Customer => "customer",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "admin" => Ok(Role::Admin),
            "organizer" => Ok(Role::Organizer),
            "customer" => Ok(Role::Customer),
            _ => Err(ParseError::new(
                "a role is one of \"admin\", \"organizer\", \"customer\"",
            )),
        }
    }

    /// Organizers and admins may create events.
    pub fn can_organize(self) -> bool {
        matches!(self, Role::Admin | Role::Organizer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored account. The password hash stays in the store record, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: UserName,
    pub role: Role,
    /// Disabled by an admin: refused at sign-in and on every request.
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// An account and one of its sessions as they are now in the database: what every
/// request is authorized against (never the claims inside an access token, which cannot
/// be taken back for as long as they live).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub disabled: bool,
    /// The session (refresh-token family) the access token was issued for is neither
    /// logged out nor revoked.
    pub session_live: bool,
}

/// Why an access token whose signature and expiry are fine is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRefusal {
    /// The account is gone (erased).
    NoAccount,
    Disabled,
    /// The session was logged out or revoked.
    SessionEnded,
}

impl AccessRefusal {
    pub fn message(self) -> &'static str {
        match self {
            AccessRefusal::NoAccount => "the account no longer exists",
            AccessRefusal::Disabled => "this account is disabled",
            AccessRefusal::SessionEnded => "this session has ended; log in again",
        }
    }
}

impl Standing {
    /// The role a request acts with, if the account and session admit one at all.
    pub fn admit(standing: Option<Standing>) -> Result<Role, AccessRefusal> {
        match standing {
            None => Err(AccessRefusal::NoAccount),
            Some(s) if s.disabled => Err(AccessRefusal::Disabled),
            Some(s) if !s.session_live => Err(AccessRefusal::SessionEnded),
            Some(s) => Ok(s.role),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_acts_with_the_role_the_account_has_now_or_not_at_all() {
        let now = |role, disabled, session_live| {
            Some(Standing {
                role,
                disabled,
                session_live,
            })
        };
        assert_eq!(
            Standing::admit(now(Role::Organizer, false, true)),
            Ok(Role::Organizer)
        );
        assert_eq!(Standing::admit(None), Err(AccessRefusal::NoAccount));
        assert_eq!(
            Standing::admit(now(Role::Admin, true, true)),
            Err(AccessRefusal::Disabled)
        );
        assert_eq!(
            Standing::admit(now(Role::Admin, false, false)),
            Err(AccessRefusal::SessionEnded)
        );
        // Disabled says more than an ended session (disabling ends them all).
        assert_eq!(
            Standing::admit(now(Role::Customer, true, false)),
            Err(AccessRefusal::Disabled)
        );
    }

    #[test]
    fn look_alike_addresses_share_a_key_and_different_ones_do_not() {
        let latin = Email::parse("anna@example.com").unwrap();
        // Cyrillic а (U+0430) twice.
        let cyrillic = Email::parse("\u{0430}nn\u{0430}@example.com").unwrap();
        assert_ne!(latin, cyrillic);
        assert_eq!(latin.look_alike_key(), cyrillic.look_alike_key());
        // Composed and decomposed forms are one address outright.
        let composed = Email::parse("zo\u{00EB}@example.com").unwrap();
        let decomposed = Email::parse("ZO\u{0065}\u{0308}@example.com ").unwrap();
        assert_eq!(composed, decomposed);
        assert_ne!(
            latin.look_alike_key(),
            Email::parse("anne@example.com").unwrap().look_alike_key()
        );
        assert_eq!(Email::normalise("  Ann@Example.COM "), "ann@example.com");
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let email = Email::parse("  Ann.Lee@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ann.lee@example.com");
    }

    #[test]
    fn email_without_dotted_domain_is_refused() {
        assert!(Email::parse("ann@localhost").is_err());
        assert!(Email::parse("ann@").is_err());
        assert!(Email::parse("not-an-email").is_err());
        assert!(Email::parse("").is_err());
        assert!(Email::parse("Ann <ann@example.com>").is_err());
    }

    #[test]
    fn email_longer_than_254_is_refused() {
        let local = "a".repeat(64);
        let domain = format!("{}.com", "b".repeat(200));
        assert!(Email::parse(&format!("{local}@{domain}")).is_err());
    }

    #[test]
    fn password_needs_ten_characters_counted_as_chars() {
        assert!(Password::parse("123456789").is_err());
        assert!(Password::parse("1234567890").is_ok());
        // Ten characters, more than ten bytes.
        assert!(Password::parse("ééééééééé").is_err());
        assert!(Password::parse("éééééééééé").is_ok());
    }

    #[test]
    fn password_of_spaces_or_huge_is_refused() {
        assert!(Password::parse(&" ".repeat(12)).is_err());
        assert!(Password::parse(&"x".repeat(Password::MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password::parse("correct horse battery").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ann  ").unwrap().as_str(), "Ann");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"n".repeat(101)).is_err());
        assert!(UserName::parse("Ann\u{0}").is_err());
    }

    #[test]
    fn role_round_trips_through_its_name() {
        for role in [Role::Admin, Role::Organizer, Role::Customer] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
    }
}
