//! The outbox workers: every instance claims due jobs (confirmation and cancellation
//! emails, refunds, the work-through of a cancelled sale), runs them, and retries
//! failures with exponential backoff and jitter until a job has failed `max_attempts`
//! times; then it is parked as dead for an admin to look at.
//!
//! A claim is a lease: if the worker dies between claiming and finishing, the job is
//! claimed again once the lease runs out. Each claim has its own lease id, and finishing
//! or failing counts only under it, so a worker that overran its lease cannot overwrite
//! the outcome of the worker that took the job over. Jobs are therefore written to be
//! safe to run twice: an email is skipped once its sending was recorded; a refund is
//! idempotent at the provider; a cancelled sale's bookings move one transition at a
//! time, each of which changes nothing the second time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use usher_core::BookingStatus;
use usher_core::lifecycle::{Outcome, Trigger};
use usher_mail::Email;
use usher_payments::RefundRequest;
use usher_store::payments::{EmailKind, JobKind};
use usher_store::{BookingRef, Job, SaleScope, TransitionRequest};

use crate::state::AppState;
use crate::tickets;

/// Jobs claimed per round.
const BATCH: u32 = 10;
/// Bookings of a cancelled sale read per round.
const SALE_BATCH: u32 = 100;
/// The longest wait between two attempts.
const MAX_BACKOFF_SECONDS: f64 = 3600.0;

/// Runs every due job once. Returns how many ran.
pub async fn run_due(state: &AppState) -> usize {
    let mut ran = 0;
    loop {
        let now = state.clock().now();
        let lease = Uuid::now_v7();
        let jobs = match state
            .store()
            .claim_jobs(now, now + state.config().job_lease, BATCH, lease)
            .await
        {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "claiming jobs failed");
                return ran;
            }
        };
        if jobs.is_empty() {
            return ran;
        }
        for job in jobs {
            ran += 1;
            run_one(state, job).await;
        }
    }
}

/// Runs [`run_due`] every `interval` until `stop` turns true.
pub async fn run(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                run_due(&state).await;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn run_one(state: &AppState, job: Job) {
    let span =
        tracing::info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempts);
    // `instrument`, not `enter`: an entered guard held across `.await` leaks the span
    // into whatever else runs on this thread.
    run_attempt(state, job).instrument(span).await
}

async fn run_attempt(state: &AppState, job: Job) {
    let work = async {
        match &job.kind {
            JobKind::ConfirmationEmail => {
                send_booking_email(state, &job, EmailKind::Confirmation).await
            }
            JobKind::OfferEmail => send_booking_email(state, &job, EmailKind::Offer).await,
            JobKind::CancellationEmail => {
                send_booking_email(state, &job, EmailKind::Cancellation).await
            }
            JobKind::Refund => refund(state, &job).await,
            JobKind::CancelSale => cancel_sale(state, &job).await,
            JobKind::Other(kind) => Err(format!("no handler for job kind {kind:?}")),
        }
    };
    // Whatever hangs inside (each outside call has its own timeout too), the attempt
    // ends well within its lease, so the worker moves on and no other worker takes the
    // job over while this one still runs it.
    let deadline = job_deadline(state.config().job_lease);
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("the attempt took longer than {deadline:?}")),
    };
    let Some(lease) = job.lease else {
        tracing::error!("claimed job without a lease; leaving it to run out");
        return;
    };
    let now = state.clock().now();
    let kind = job.kind.to_string();
    let outcome = match &result {
        Ok(()) => "done",
        Err(_) if job.attempts >= job.max_attempts => "dead",
        Err(_) => "retry",
    };
    metrics::counter!("usher_jobs_total", "kind" => kind, "outcome" => outcome).increment(1);
    let recorded = match result {
        Ok(()) => {
            tracing::info!("job done");
            state.store().finish_job(job.id, lease, now).await
        }
        Err(error) if job.attempts >= job.max_attempts => {
            tracing::error!(%error, "job failed for the last time; parked as dead");
            state
                .store()
                .fail_job(job.id, lease, &error, None, now)
                .await
        }
        Err(error) => {
            let next = now + backoff(job.attempts);
            tracing::warn!(%error, retry_at = %next, "job failed; will retry");
            state
                .store()
                .fail_job(job.id, lease, &error, Some(next), now)
                .await
        }
    };
    match recorded {
        Ok(true) => {}
        // Our lease ran out and another worker claimed the job: its outcome stands.
        Ok(false) => tracing::warn!("lease lost before the job's result was recorded"),
        // The lease runs out and the job is claimed again: at-least-once.
        Err(error) => tracing::error!(%error, "recording the job's result failed"),
    }
}

/// Half the lease: an attempt's result is recorded before anyone may take the job over.
fn job_deadline(lease: chrono::Duration) -> Duration {
    (lease / 2)
        .to_std()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1))
}

/// 2^attempts seconds (capped at an hour), times a random factor in [0.5, 1.5) so that
/// jobs failing together do not retry together.
fn backoff(attempts: u32) -> chrono::Duration {
    let base = 2f64.powi(attempts.min(20) as i32).min(MAX_BACKOFF_SECONDS);
    let mut byte = [0u8; 1];
    let jitter = match getrandom::fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 256.0,
        Err(_) => 1.0,
    };
    chrono::Duration::milliseconds((base * jitter * 1000.0) as i64)
}

fn payload_id(job: &Job, field: &str) -> Result<Uuid, String> {
    job.payload[field]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or_else(|| format!("job payload lacks {field}"))
}

/// The booking must still be in this state for the email to make sense.
fn expected_status(letter: EmailKind) -> BookingStatus {
    match letter {
        EmailKind::Confirmation => BookingStatus::Confirmed,
        EmailKind::Cancellation => BookingStatus::Refunded,
        EmailKind::Offer => BookingStatus::Held,
    }
}

async fn send_booking_email(state: &AppState, job: &Job, letter: EmailKind) -> Result<(), String> {
    let booking_id = payload_id(job, "booking_id")?;
    let store = state.store();
    // Sent before (and recorded): a retry after a crash must not send a second copy.
    if store
        .email_sent(booking_id.into(), letter)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    let booking = store
        .booking(booking_id.into())
        .await
        .map_err(|e| e.to_string())?
        .ok_or("booking vanished")?;
    if booking.status_at(state.clock().now()) != expected_status(letter) {
        tracing::info!(status = %booking.status, ?letter, "booking moved on; no email");
        return Ok(());
    }
    let user = store
        .user(booking.user_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("buyer vanished")?;
    let performance = store
        .performance(booking.performance_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("performance vanished")?;
    let event = store
        .event(performance.event_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("event vanished")?;
    // Stable per booking and kind: a retried send carries the same Message-ID.
    let message_id = match letter {
        EmailKind::Confirmation => format!("booking-{}@usher", booking.id),
        EmailKind::Cancellation | EmailKind::Offer => {
            format!("booking-{}-{}@usher", booking.id, letter.as_str())
        }
    };
    let (subject, text, attachments) = compose(
        state,
        letter,
        &booking,
        &event,
        performance.starts_at,
        &user,
    );
    let email = Email {
        to: user.email.as_str().to_owned(),
        to_name: user.name.as_str().to_owned(),
        subject,
        text,
        message_id: message_id.clone(),
        attachments,
    };
    state
        .mailer()
        .send(&email)
        .await
        .map_err(|e| e.to_string())?;
    metrics::counter!("usher_emails_sent_total", "kind" => letter.as_str()).increment(1);
    store
        .record_email_sent(booking.id, letter, &message_id, state.clock().now())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The letter's subject, text and attachments (a confirmation's QR codes).
fn compose(
    state: &AppState,
    letter: EmailKind,
    booking: &usher_core::Booking,
    event: &usher_core::Event,
    starts_at: chrono::DateTime<chrono::Utc>,
    user: &usher_core::User,
) -> (String, String, Vec<usher_mail::Attachment>) {
    let mut attachments = Vec::new();
    let (subject, text) = match letter {
        EmailKind::Confirmation => {
            let codes = ticket_codes(state, booking);
            for (n, code) in codes.iter().enumerate() {
                if let Some(code) = code {
                    attachments.push(usher_mail::Attachment {
                        filename: format!("ticket-{}-{code}.svg", n + 1),
                        content_type: "image/svg+xml".into(),
                        body: tickets::qr_svg(code).into_bytes(),
                    });
                }
            }
            (
                format!("Your tickets for {}", event.title.as_str()),
                confirmation_text(booking, &codes, event, starts_at, user.name.as_str()),
            )
        }
        EmailKind::Cancellation => (
            format!("Cancelled: {}", event.title.as_str()),
            cancellation_text(booking, event, starts_at, user.name.as_str()),
        ),
        EmailKind::Offer => (
            format!("Tickets are held for you: {}", event.title.as_str()),
            offer_text(state, booking, event, starts_at, user.name.as_str()),
        ),
    };
    (subject, text, attachments)
}

/// Each unit's ticket code, in the booking's order (`None` for a unit not numbered).
fn ticket_codes(state: &AppState, booking: &usher_core::Booking) -> Vec<Option<String>> {
    booking
        .units
        .iter()
        .map(|unit| {
            unit.ticket.map(|serial| {
                tickets::code(
                    state.ticket_secret(),
                    serial,
                    booking.id.uuid(),
                    unit.unit_id.uuid(),
                )
            })
        })
        .collect()
}

fn confirmation_text(
    booking: &usher_core::Booking,
    codes: &[Option<String>],
    event: &usher_core::Event,
    starts_at: DateTime<Utc>,
    name: &str,
) -> String {
    let mut text = format!(
        "Hello {name},\n\nyour booking is confirmed.\n\n{}\n{}\n{} (UTC)\n\n",
        event.title.as_str(),
        event.venue.as_str(),
        starts_at.format("%A %-d %B %Y, %H:%M"),
    );
    for (unit, code) in booking.units.iter().zip(codes) {
        let place = crate::tickets::place(unit);
        text.push_str(&format!(
            "  {place:<40} {} {}   ticket {}\n",
            unit.price.currency.format_amount(unit.price.amount),
            unit.price.currency,
            code.as_deref().unwrap_or("(on its way)"),
        ));
    }
    text.push_str(&format!(
        "\nTotal: {} {}\nBooking: {}\n\nShow the ticket codes (or their QR codes, attached) at the door. See you there!\n",
        booking.total.currency.format_amount(booking.total.amount),
        booking.total.currency,
        booking.id
    ));
    text
}

fn offer_text(
    state: &AppState,
    booking: &usher_core::Booking,
    event: &usher_core::Event,
    starts_at: DateTime<Utc>,
    name: &str,
) -> String {
    let mut text = format!(
        "Hello {name},\n\ngood news from the waiting list: places came back for {title} on \
         {when} (UTC) at {venue}, and they are held for you.\n\n",
        title = event.title.as_str(),
        when = starts_at.format("%A %-d %B %Y, %H:%M"),
        venue = event.venue.as_str(),
    );
    for unit in &booking.units {
        let place = crate::tickets::place(unit);
        text.push_str(&format!("  {place}\n"));
    }
    text.push_str(&format!(
        "\nTotal: {} {}\n\nPay before {} (UTC), or they go to the next person waiting:\n\
         {}/checkout/{}\n\nIf you no longer want them, leave the waiting list and they go on at once.\n",
        booking.total.currency.format_amount(booking.total.amount),
        booking.total.currency,
        booking.held_until.format("%A %-d %B, %H:%M"),
        state.public_url().trim_end_matches('/'),
        booking.id,
    ));
    text
}

fn cancellation_text(
    booking: &usher_core::Booking,
    event: &usher_core::Event,
    starts_at: DateTime<Utc>,
    name: &str,
) -> String {
    format!(
        "Hello {name},\n\nwe are sorry: {title} on {when} (UTC) at {venue} has been cancelled.\n\n\
         Your booking {id} is refunded in full: {amount} {currency} goes back to the \
         way you paid. Depending on your bank it can take a few days to show.\n\n\
         Your ticket codes are no longer valid.\n",
        title = event.title.as_str(),
        when = starts_at.format("%A %-d %B %Y, %H:%M"),
        venue = event.venue.as_str(),
        id = booking.id,
        amount = booking.total.currency.format_amount(booking.total.amount),
        currency = booking.total.currency,
    )
}

/// Works through a cancelled event's or performance's bookings: every hold released,
/// every confirmed booking refunded with its buyer emailed. Each booking is its own
/// transition, so a crash halfway loses nothing: the job is claimed again and carries
/// on with the bookings that are still live.
async fn cancel_sale(state: &AppState, job: &Job) -> Result<(), String> {
    let scope = match (
        job.payload.get("event_id"),
        job.payload.get("performance_id"),
    ) {
        (Some(_), _) => SaleScope::Event(payload_id(job, "event_id")?),
        (_, Some(_)) => SaleScope::Performance(payload_id(job, "performance_id")?),
        _ => return Err("job payload names neither an event nor a performance".into()),
    };
    let mut previous: Vec<Uuid> = Vec::new();
    loop {
        let live = state
            .store()
            .live_bookings(scope, SALE_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if live.is_empty() {
            tracing::info!(?scope, "cancelled sale worked through");
            return Ok(());
        }
        if live == previous {
            return Err(format!(
                "{} bookings stay live after cancelling",
                live.len()
            ));
        }
        for booking_id in &live {
            let done = state
                .transition(
                    TransitionRequest::new(
                        BookingRef::Booking((*booking_id).into()),
                        Trigger::SaleCancelled,
                        state.clock().now(),
                    )
                    .audited(usher_store::Audit::system().note("cause", "sale cancelled")),
                )
                .await
                .map_err(|e| e.to_string())?;
            if done.outcome == Outcome::Refunded {
                metrics::counter!("usher_sale_cancellation_refunds_total").increment(1);
            }
        }
        previous = live;
    }
}

async fn refund(state: &AppState, job: &Job) -> Result<(), String> {
    let payment_id = payload_id(job, "payment_id")?;
    let payment = state
        .store()
        .payment(payment_id.into())
        .await
        .map_err(|e| e.to_string())?
        .ok_or("payment vanished")?;
    if payment.status == usher_store::PaymentStatus::Refunded {
        return Ok(());
    }
    let provider = state.payments();
    if provider.provider() != payment.provider {
        return Err(format!(
            "the payment was made with {} but this instance runs {}",
            payment.provider,
            provider.provider()
        ));
    }
    provider
        .refund(RefundRequest {
            payment_id,
            amount: payment.amount,
            provider_payment_ref: payment.provider_payment_ref.clone(),
            provider_ref: payment.provider_ref.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
    state
        .transition(TransitionRequest::new(
            BookingRef::Payment(payment_id.into()),
            Trigger::PaymentRefunded {
                payment_id: payment_id.into(),
            },
            state.clock().now(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(payment_id = %payment_id, "refunded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        for attempts in 1..30 {
            let wait = backoff(attempts).num_milliseconds() as f64 / 1000.0;
            let base = 2f64.powi(attempts.min(20) as i32).min(MAX_BACKOFF_SECONDS);
            assert!(
                wait >= base * 0.5 && wait < base * 1.5,
                "{attempts}: {wait}"
            );
        }
    }
}
