//! The door: a check-in page for one performance, for the event's organizer (and admins).
//! No camera needed: the code field keeps the focus, so a USB or Bluetooth scanner (which
//! types the code and presses Enter) or a person at a keyboard checks tickets in one
//! after another. Each scan is a check-in (as `POST /v1/checkins`) with the door's
//! performance, so a ticket for another night is refused and stays unused.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::extract::Caller;
use crate::routes::box_office::{self, CheckInRequest};
use crate::routes::{events, performances};
use crate::web::api::{Refusal, Visit};
use crate::web::{Chrome, Form, PageError, PageResult, WebState, format, id, page};

pub fn router() -> Router<WebState> {
    Router::new().route("/organizer/performances/{id}/door", get(door).post(scan))
}

/// What the last scan said, as the door shows it.
struct Verdict {
    /// `admitted`, `repeat`, `void`, `wrong` or `unknown`: the page's colour.
    class: &'static str,
    headline: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "manage/door.html")]
struct DoorPage {
    chrome: Chrome,
    performance_id: Uuid,
    event_id: Uuid,
    event_title: String,
    when: String,
    checked_in: u64,
    tickets: u64,
    verdict: Option<Verdict>,
}

async fn door(State(web): State<WebState>, visit: Visit, Path(raw): Path<String>) -> PageResult {
    let id = id(&visit, &raw)?;
    let view = door_page(&visit, id, None).await?;
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn door_page(
    visit: &Visit,
    id: Uuid,
    verdict: Option<Verdict>,
) -> Result<DoorPage, PageError> {
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in(visit));
    };
    let refused = |r| PageError::refused(visit, r);
    let app = &visit.app;
    let performance = performances::one(app, Some(caller), id)
        .await
        .map_err(refused)?;
    let event = events::visible(app, Some(caller), performance.event_id)
        .await
        .map_err(refused)?;
    // Only the event's organizer (and admins) may read its sales: this is also the check
    // that the visitor keeps this door.
    let organizer = caller.require_organizer().map_err(refused)?;
    let sales = performances::sales(app, organizer, event.id)
        .await
        .map_err(refused)?;
    let counts = sales.performances.iter().find(|p| p.performance_id == id);
    Ok(DoorPage {
        chrome: Chrome::of(visit),
        performance_id: id,
        event_id: event.id,
        event_title: event.title,
        when: format::when(&performance.starts_at),
        checked_in: counts.map_or(0, |c| c.checked_in),
        tickets: counts.map_or(0, |c| c.tickets),
        verdict,
    })
}

/// One scan: the verdict in large letters, the field ready for the next.
async fn scan(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let id = id(&visit, &raw)?;
    let code = form.text("code");
    let (status, verdict) = if code.is_empty() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Verdict {
                class: "unknown",
                headline: "No code".into(),
                detail: "Scan a ticket, or type its code and press Enter.".into(),
            },
        )
    } else {
        let organizer = visit
            .user()
            .and_then(Caller::require_organizer)
            .map_err(|r| PageError::refused(&visit, r))?;
        let scan = CheckInRequest {
            code,
            performance_id: Some(id),
        };
        match box_office::check_in_ticket(&visit.app, organizer, &visit.request, scan).await {
            Ok(admitted) => (
                StatusCode::OK,
                Verdict {
                    class: "admitted",
                    headline: "Admit".into(),
                    detail: admitted.place,
                },
            ),
            Err(refused) => {
                let refusal = Refusal::from(refused);
                (refusal.status, verdict_of(&visit, refusal)?)
            }
        }
    };
    let view = door_page(&visit, id, Some(verdict)).await?;
    Ok(page(&view, status, web.form_targets))
}

/// A refused scan as the door reads it; refusals about the visitor (signed out, not
/// allowed, slowed down, broken) are the usual error pages instead.
fn verdict_of(visit: &Visit, refusal: Refusal) -> Result<Verdict, PageError> {
    let kind = refusal.problem.kind.as_str();
    Ok(match (refusal.status, kind) {
        (StatusCode::NOT_FOUND, _) => Verdict {
            class: "unknown",
            headline: "Not a ticket".into(),
            detail: "This code is not a ticket for this event. Check it was typed right.".into(),
        },
        (_, "/problems/already-checked-in") => Verdict {
            class: "repeat",
            headline: "Already in".into(),
            detail: match refusal.problem.checked_in_at {
                Some(at) => format!("This ticket was checked in at {}.", clock(&at)),
                None => "This ticket was checked in before.".into(),
            },
        },
        (_, "/problems/ticket-void") => Verdict {
            class: "void",
            headline: "Void".into(),
            detail: "This ticket's booking was refunded; it does not admit.".into(),
        },
        (_, "/problems/wrong-performance") => Verdict {
            class: "wrong",
            headline: "Another performance".into(),
            detail: format::sentence(&refusal.problem.detail),
        },
        _ => {
            let refusal = refusal.for_the_form(visit)?;
            Verdict {
                class: "unknown",
                headline: "Not checked in".into(),
                detail: refusal.message(),
            }
        }
    })
}

fn clock(at: &DateTime<Utc>) -> String {
    at.format("%H:%M:%S UTC").to_string()
}
