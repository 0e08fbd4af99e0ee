//! The buyer's pages of the waiting list and the waiting room: joining either from a
//! performance's page, the queue page with its place and wait (kept current over the
//! queue's WebSocket), and the list of one's waiting-list entries with their offers.
//! Every read and write is the API's own, as the visitor.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use uuid::Uuid;

use crate::routes::bookings::ListParams;
use crate::routes::waiting::{self, QueueTicketView, WaitlistEntryView, WaitlistRequest};
use crate::web::api::{Refusal, Visit};
use crate::web::buyer::Context;
use crate::web::{Chrome, Form, PageError, PageResult, WebState, format, id, page};

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/performances/{id}/waitlist", post(join_waitlist))
        .route("/performances/{id}/queue", post(join_queue))
        .route("/queue/{id}", get(queue))
        .route("/waitlist", get(waitlist))
        .route("/waitlist/{id}/leave", post(leave))
}

/// Puts the visitor on the waiting list of a sold-out performance.
async fn join_waitlist(visit: Visit, Path(raw): Path<String>, form: Form) -> PageResult {
    let id = id(&visit, &raw)?;
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in_then(
            &visit,
            &format!("/performances/{id}"),
        ));
    };
    let ticket_type = form.text("ticket_type_id");
    let body = WaitlistRequest {
        quantity: form.text("quantity").parse::<i64>().unwrap_or(0),
        ticket_type_id: (!ticket_type.is_empty()).then_some(ticket_type),
    };
    match waiting::join_list(&visit.app, caller, id, Ok(body)).await {
        Ok(_) => Ok(Redirect::to("/waitlist?joined=1").into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            // Not sold out after all (or bad input): back to the performance, told why.
            let path = format!(
                "/performances/{id}?notice={}",
                format::query_value(&refusal.message())
            );
            Ok(Redirect::to(&path).into_response())
        }
    }
}

/// Joins the performance's waiting room and shows the queue.
async fn join_queue(visit: Visit, Path(raw): Path<String>, _form: Form) -> PageResult {
    let id = id(&visit, &raw)?;
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in_then(
            &visit,
            &format!("/performances/{id}"),
        ));
    };
    match waiting::join_room(&visit.app, caller, id).await {
        Ok((_, ticket)) => {
            Ok(Redirect::to(&format!("/queue/{}", ticket.ticket_id)).into_response())
        }
        Err(refusal) => Err(PageError::refused(&visit, refusal)),
    }
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    chrome: Chrome,
    ticket: QueueTicketView,
    event_title: String,
    when: String,
    eta: String,
}

async fn queue(State(web): State<WebState>, visit: Visit, Path(raw): Path<String>) -> PageResult {
    let id = id(&visit, &raw)?;
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in_then(&visit, &format!("/queue/{id}")));
    };
    let ticket = waiting::place(&visit.app, caller, id)
        .await
        .map_err(|r| PageError::refused(&visit, r))?;
    let (event_title, when, _) = Context::default()
        .describe(&visit, ticket.performance_id)
        .await;
    let view = QueuePage {
        chrome: Chrome::of(&visit),
        eta: format::wait(ticket.eta_seconds),
        ticket,
        event_title,
        when,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

struct EntryLine {
    entry: WaitlistEntryView,
    event_title: String,
    when: String,
}

#[derive(Template)]
#[template(path = "waitlist.html")]
struct WaitlistView {
    chrome: Chrome,
    entries: Vec<EntryLine>,
    notice: Option<String>,
}

#[derive(serde::Deserialize)]
struct WaitlistQuery {
    joined: Option<u8>,
    left: Option<u8>,
}

async fn waitlist(
    State(web): State<WebState>,
    visit: Visit,
    axum::extract::Query(query): axum::extract::Query<WaitlistQuery>,
) -> PageResult {
    let Some(caller) = visit.caller else {
        return Err(PageError::sign_in(&visit));
    };
    let list = waiting::entries(&visit.app, caller, ListParams::after(50, None))
        .await
        .map_err(|r| PageError::refused(&visit, r))?;
    let mut context = Context::default();
    let mut entries = Vec::with_capacity(list.items.len());
    for entry in list.items {
        let (event_title, when, _) = context.describe(&visit, entry.performance_id).await;
        entries.push(EntryLine {
            entry,
            event_title,
            when,
        });
    }
    let notice = match (query.joined, query.left) {
        (Some(_), _) => Some(
            "You are on the waiting list. When places come back they are held for you and \
             we email you; pay before the hold runs out."
                .to_owned(),
        ),
        (_, Some(_)) => Some("You left the waiting list.".to_owned()),
        _ => None,
    };
    let view = WaitlistView {
        chrome: Chrome::of(&visit),
        entries,
        notice,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

async fn leave(visit: Visit, Path(raw): Path<String>, _form: Form) -> PageResult {
    let id: Uuid = id(&visit, &raw)?;
    let caller = visit.user().map_err(|r| PageError::refused(&visit, r))?;
    waiting::leave_list(&visit.app, caller, id)
        .await
        .map_err(|r| PageError::refused(&visit, r))?;
    Ok(Redirect::to("/waitlist?left=1").into_response())
}
