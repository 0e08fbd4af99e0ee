//! Payments, provider events, the job outbox, idempotency keys and sent emails: the
//! part of the storage contract that makes paying safe to retry.

use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PaymentId};
use uuid::Uuid;

use usher_core::Money;
pub use usher_core::lifecycle::{PaymentStatus, Provider};

use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub booking_id: BookingId,
    pub provider: Provider,
    /// The provider's id of the checkout (a Stripe Checkout Session id).
    pub provider_ref: Option<String>,
    /// The provider's id of the captured payment (a Stripe PaymentIntent id), for refunds.
    pub provider_payment_ref: Option<String>,
    pub status: PaymentStatus,
    pub amount: Money,
    pub checkout_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A provider's notification, recorded by id so that a replay changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub provider: Provider,
    pub event_id: String,
    pub kind: String,
}

/// The jobs the outbox knows. The payload names the booking or payment concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKind {
    ConfirmationEmail,
    /// Tells a buyer their event or performance was cancelled and the money returns.
    CancellationEmail,
    Refund,
    /// Works through the bookings of a cancelled event or performance.
    CancelSale,
    /// Tells someone on the waiting list that units are held for them.
    OfferEmail,
    /// A kind this version does not know (written by a newer one during a rolling
    /// deploy): it is read, and fails as having no handler, rather than stopping every
    /// worker that claims it.
    Other(String),
}

impl JobKind {
    const KNOWN: [JobKind; 5] = [
        JobKind::ConfirmationEmail,
        JobKind::CancellationEmail,
        JobKind::Refund,
        JobKind::CancelSale,
        JobKind::OfferEmail,
    ];

    /// As stored and as the admin API shows it.
    pub fn as_str(&self) -> &str {
        match self {
            JobKind::ConfirmationEmail => "confirmation_email",
            JobKind::CancellationEmail => "cancellation_email",
            JobKind::Refund => "refund",
            JobKind::CancelSale => "cancel_sale",
            JobKind::OfferEmail => "offer_email",
            JobKind::Other(raw) => raw,
        }
    }

    pub fn parse(raw: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .unwrap_or_else(|| JobKind::Other(raw.to_owned()))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The emails a booking's buyer gets, each at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailKind {
    Confirmation,
    /// The event or performance was cancelled; the money is on its way back.
    Cancellation,
    /// The waiting list holds units for the buyer: pay before the hold runs out.
    Offer,
}

impl EmailKind {
    /// As stored (`emails_sent.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Confirmation => "confirmation",
            EmailKind::Cancellation => "cancellation",
            EmailKind::Offer => "offer",
        }
    }
}

/// How many times a job is tried before it is parked as dead.
pub const JOB_MAX_ATTEMPTS: i64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Dead,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        Ok(match raw {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            other => return Err(StoreError::Backend(format!("unknown job state {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Attempts started so far, this one included when claimed.
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The claim this copy of the job belongs to: finishing or failing it counts only
    /// while the claim is still the job's (another worker may have taken it over after
    /// the lease ran out).
    pub lease: Option<Uuid>,
}

/// A `jobs` row as both engines read it.
#[derive(Debug)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub lease: Option<Uuid>,
}

impl JobRow {
    pub fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            id: self.id,
            kind: JobKind::parse(&self.kind),
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| StoreError::Backend(format!("corrupt job payload: {e}")))?,
            state: JobState::parse(&self.state)?,
            attempts: self.attempts as u32,
            max_attempts: self.max_attempts as u32,
            run_at: self.run_at,
            last_error: self.last_error,
            created_at: self.created_at,
            lease: self.lease,
        })
    }
}

/// A `payments` row as both engines read it.
#[derive(Debug)]
pub struct PaymentRow {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub provider: String,
    pub provider_ref: Option<String>,
    pub provider_payment_ref: Option<String>,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub checkout_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRow {
    pub fn into_payment(self) -> Result<Payment, StoreError> {
        Ok(Payment {
            id: self.id.into(),
            booking_id: self.booking_id.into(),
            provider: Provider::parse(&self.provider),
            provider_ref: self.provider_ref,
            provider_payment_ref: self.provider_payment_ref,
            status: PaymentStatus::parse(&self.status)
                .map_err(|e| StoreError::Backend(format!("corrupt payments.status: {e}")))?,
            amount: Money::new(
                self.amount,
                crate::inventory::stored_currency(&self.currency)?,
            ),
            checkout_url: self.checkout_url,
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What starting an idempotent request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First time: the key is now in flight; run the request and complete or abandon it.
    Started,
    /// The same key is still running (claimed at `since`).
    InFlight { since: DateTime<Utc> },
    /// The same key came with another request.
    Mismatch,
    /// Done before: the stored answer.
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn job_kinds_read_back_as_written_and_an_unknown_one_is_kept_as_stored() {
        for kind in JobKind::KNOWN {
            assert_eq!(JobKind::parse(kind.as_str()), kind);
        }
        let newer = JobKind::parse("invoice_email");
        assert_eq!(newer, JobKind::Other("invoice_email".into()));
        assert_eq!(newer.as_str(), "invoice_email");
    }
}
